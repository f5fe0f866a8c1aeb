#include "core/arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>
#include <utility>

namespace evla {

namespace {
constexpr size_t kHuge = size_t(2) << 20;       // x86-64 transparent huge page
constexpr size_t kMinChunk = size_t(8) << 20;   // a small model's derived weights fit one chunk
}  // namespace

Arena::Arena(Arena&& other) noexcept : chunks_(std::move(other.chunks_)), used_(other.used_) {
  other.chunks_.clear();
}

Arena& Arena::operator=(Arena&& other) noexcept {
  if (this != &other) {
    release();
    chunks_ = std::move(other.chunks_);
    used_ = other.used_;
    other.chunks_.clear();
  }
  return *this;
}

Arena::~Arena() { release(); }

void Arena::release() {
  for (const Chunk& c : chunks_) ::munmap(c.base, c.size);
  chunks_.clear();
}

void* Arena::allocate(size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  if (chunks_.empty() || used_ + bytes > chunks_.back().size) {
    const size_t size = (std::max(bytes, kMinChunk) + kHuge - 1) / kHuge * kHuge;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ::madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP it is plain pages
    chunks_.push_back({static_cast<char*>(p), size});
    used_ = 0;
  }
  void* out = chunks_.back().base + used_;
  used_ += bytes;
  return out;
}

size_t Arena::mapped_bytes() const {
  size_t n = 0;
  for (const Chunk& c : chunks_) n += c.size;
  return n;
}

}  // namespace evla
