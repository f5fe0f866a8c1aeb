// The thread pool's bound: -t 100000 hung while starting threads.
#include <gtest/gtest.h>

#include <string>

#include "core/thread_pool.h"
#include "evla/error.h"

namespace evla {
namespace {

TEST(ThreadPool, MoreThreadsThanTheLimitIsAnError) {
  try {
    ThreadPool pool(ThreadPool::kMaxThreads + 1);
    FAIL() << "started " << pool.size() << " threads";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "threads: 257 is more than the limit of 256");
  }
  ThreadPool two(2);
  EXPECT_EQ(two.size(), 2);
}

}  // namespace
}  // namespace evla
