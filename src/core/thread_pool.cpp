#include "core/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#include "evla/error.h"

namespace evla {

namespace {

// Polls `done` for up to kSpin before the caller falls back to sleeping.
constexpr auto kSpin = std::chrono::microseconds(50);
template <typename F>
bool spin_until(F&& done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    _mm_pause();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  if (n_threads > kMaxThreads)
    throw Error("threads: " + std::to_string(n_threads) + " is more than the limit of " + std::to_string(kMaxThreads));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int ThreadPool::default_threads() {
  if (const char* env = std::getenv("EVLA_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return std::min(n, kMaxThreads);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

void ThreadPool::worker(int index) {
  int seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    int n_tasks;
    {
      auto ready = [&] { return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, ready);
      }
      // job_ and n_tasks_ were written before generation_ moved (under mu_).
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      seen = generation_;
      job = job_;
      n_tasks = n_tasks_;
    }
    for (int t = index; t < n_tasks; t += n_threads_) (*job)(t);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);  // the caller may be between its check and its sleep
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::run(int n_tasks, const std::function<void(int)>& fn) {
  if (n_tasks <= 0) return;
  if (n_threads_ == 1 || n_tasks == 1) {
    for (int t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    n_tasks_ = n_tasks;
    pending_ = n_threads_ - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  for (int t = 0; t < n_tasks; t += n_threads_) fn(t);
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, done);
  }
  std::lock_guard<std::mutex> lock(mu_);
  job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int chunks = int(std::min<int64_t>(n_threads_, units));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  run(chunks, [&](int c) {
    const int64_t b = units * c / chunks * grain;
    const int64_t e = std::min(n, units * (c + 1) / chunks * grain);
    if (b < e) fn(b, e);
  });
}

void ThreadPool::for_rows(int rows, int64_t floats_per_row, const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1 || int64_t(rows) * floats_per_row < (int64_t(1) << 15)) return fn(0, rows);
  parallel_for(rows, 1, [&](int64_t r0, int64_t r1) { fn(int(r0), int(r1)); });
}

}  // namespace evla
