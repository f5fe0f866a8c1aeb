// A fixed pool of worker threads with a static, deterministic partition of
// work: the same thread count always splits a range the same way, so results
// are bit-identical run to run. Between jobs a worker, and the caller waiting
// for one, poll for a short while before sleeping: a policy's products come
// thousands per inference, many of them tens of microseconds long, where
// waking a sleeping thread costs as much as the work.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace evla {

class ThreadPool {
 public:
  // n_threads counts the calling thread: n_threads = 1 runs everything inline.
  explicit ThreadPool(int n_threads);
  // More threads than this is an error (docs/format.md, Limits): 20,000
  // threads took minutes to start and 100,000 hung.
  static constexpr int kMaxThreads = 256;
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(task) for task in [0, n_tasks), spread over the threads; returns
  // when all are done. Task t always runs on thread t % size().
  void run(int n_tasks, const std::function<void(int task)>& fn);

  // Splits [0, n) into size() contiguous chunks (aligned to `grain`) and calls
  // fn(begin, end) for each non-empty chunk.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Row-wise work (norms, activations, residual adds) over rows [r0, r1):
  // split over the threads once the pass touches >= 32k floats (a VLA-sized
  // sequence), else run on the caller, where the hand-off would cost more
  // than it saves. Callers keep rows independent, so no split changes results.
  void for_rows(int rows, int64_t floats_per_row, const std::function<void(int r0, int r1)>& fn);

  // Default thread count: the EVLA_THREADS environment variable, else the
  // number of cores.
  static int default_threads();

 private:
  void worker(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<int> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace evla
