#include "core/memory_info.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

namespace evla {

namespace {

// "Key:   123 kB" lines of /proc files, in bytes; 0 when absent.
uint64_t proc_kb_field(const char* path, const std::string& field) {
  std::ifstream f(path);
  std::string key;
  while (f >> key) {
    if (key == field) {
      uint64_t kb = 0;
      f >> kb;
      return kb * 1024;
    }
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

uint64_t read_number(const char* path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return 0;
  try {
    return std::stoull(s);
  } catch (...) {
    return 0;
  }
}

// EVLA_MEMORY_LIMIT_MB: at most this much counts as available (to leave room
// for other work on the machine); 0 when unset or not a positive number.
uint64_t user_limit() {
  const char* v = std::getenv("EVLA_MEMORY_LIMIT_MB");
  if (!v) return 0;
  char* end = nullptr;
  const double mb = std::strtod(v, &end);
  if (end == v || *end || !(mb > 0) || mb > 1e12) return 0;
  return uint64_t(mb * 1048576.0);
}

uint64_t system_available() {
  uint64_t avail = proc_kb_field("/proc/meminfo", "MemAvailable:");
  // A cgroup's limit bounds it too (v2, else v1). Its usage counts the page
  // cache, which the kernel reclaims under pressure: that part is free to take.
  uint64_t limit = read_number("/sys/fs/cgroup/memory.max");
  uint64_t used = read_number("/sys/fs/cgroup/memory.current");
  const char* stat = "/sys/fs/cgroup/memory.stat";
  const char* cache_key = "file";
  if (limit == 0) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    stat = "/sys/fs/cgroup/memory/memory.stat";
    cache_key = "cache";
  }
  if (limit == 0 || limit >= (uint64_t(1) << 60)) return avail;  // no limit (v1 writes a huge number)
  std::ifstream s(stat);
  std::string name;
  uint64_t value = 0;
  while (s >> name >> value)
    if (name == cache_key) used -= std::min(used, value);
  if (used > limit) return 0;
  return avail ? std::min(avail, limit - used) : limit - used;
}

}  // namespace

uint64_t available_memory_bytes() {
  const uint64_t avail = system_available(), cap = user_limit();
  return cap && (avail == 0 || cap < avail) ? cap : avail;
}

uint64_t peak_rss_bytes() { return proc_kb_field("/proc/self/status", "VmHWM:"); }

}  // namespace evla
