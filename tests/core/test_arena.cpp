// The arena behind derived model weights.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "core/arena.h"

namespace evla {
namespace {

TEST(Arena, AlignedDistinctWritableAndGrows) {
  Arena a;
  EXPECT_EQ(a.mapped_bytes(), 0u);
  char* p = static_cast<char*>(a.allocate(3));
  char* q = static_cast<char*>(a.allocate(100));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % 64, 0u);
  EXPECT_GE(q - p, 64);  // 3 bytes still take a 64-byte slot
  std::memset(q, 7, 100);
  const size_t first = a.mapped_bytes();
  EXPECT_GT(first, 0u);
  const size_t big = first + 12345;  // larger than a chunk: a chunk of its own
  char* r = static_cast<char*>(a.allocate(big));
  r[0] = r[big - 1] = 1;
  EXPECT_GE(a.mapped_bytes(), first + big);
  EXPECT_EQ(q[99], 7);  // earlier memory untouched

  Arena b(std::move(a));
  EXPECT_EQ(a.mapped_bytes(), 0u);
  EXPECT_EQ(q[0], 7);  // still mapped, now owned by b
  b = Arena();
  EXPECT_EQ(b.mapped_bytes(), 0u);
}

}  // namespace
}  // namespace evla
