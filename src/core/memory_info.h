// How much memory this process may still take: the kernel's MemAvailable,
// bounded by the cgroup's limit where one is set (containers).
#pragma once
#include <cstdint>

namespace evla {

// Bytes; 0 when unknown (no /proc).
uint64_t available_memory_bytes();

}  // namespace evla
