// Bump allocator for memory that lives as long as its owner (derived model
// weights): large chunks mapped at once and advised as transparent huge
// pages, so filling them costs a few hundred page faults instead of one per
// 4 KB, and the weights then sit in few TLB entries. Memory is not zeroed.
// Not thread-safe; move-only.
#pragma once
#include <cstddef>
#include <vector>

namespace evla {

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;
  ~Arena();

  // `bytes` bytes aligned to 64; throws std::bad_alloc when the system has none.
  void* allocate(size_t bytes);
  size_t mapped_bytes() const;

 private:
  struct Chunk {
    char* base;
    size_t size;
  };
  void release();
  std::vector<Chunk> chunks_;
  size_t used_ = 0;  // in the last chunk
};

}  // namespace evla
