#include "core/memory_info.h"

#include <algorithm>
#include <fstream>
#include <string>

namespace evla {

namespace {

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

}  // namespace

uint64_t available_memory_bytes() {
  uint64_t avail = 0;
  std::ifstream f("/proc/meminfo");
  std::string key;
  while (f >> key) {
    if (key == "MemAvailable:") {
      uint64_t kb = 0;
      f >> kb;
      avail = kb * 1024;
      break;
    }
    f.ignore(1 << 12, '\n');
  }
  const uint64_t limit = read_number("/sys/fs/cgroup/memory.max");
  const uint64_t used = read_number("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used <= limit) avail = avail ? std::min(avail, limit - used) : limit - used;
  return avail;
}

}  // namespace evla
