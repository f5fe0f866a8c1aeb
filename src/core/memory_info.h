// How much memory this process may still take: the kernel's MemAvailable,
// bounded by the cgroup's limit where one is set (containers) and by
// EVLA_MEMORY_LIMIT_MB where that is set.
#pragma once
#include <cstdint>

namespace evla {

// Bytes; 0 when unknown (no /proc).
uint64_t available_memory_bytes();
// This process's peak resident set (VmHWM), bytes; 0 when unknown.
uint64_t peak_rss_bytes();

}  // namespace evla
