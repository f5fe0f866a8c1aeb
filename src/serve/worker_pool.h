// A fixed pool of policy sessions (one evla::Policy each, all sharing one
// loaded Model) fed by a bounded FIFO queue. Connections submit an
// observation and get the result through a callback on a worker thread, so a
// slow client only ever holds its own connection, never a worker.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "evla/evla.h"

namespace evla::serve {

struct InferResult {
  ActionChunk chunk;
  std::string error;     // non-empty when the policy threw
  double queue_ms = 0;   // submitted .. picked up by a worker
  double infer_ms = 0;   // Policy::infer
  int64_t scratch_bytes = 0;  // the worker's buffers after the request (after any release)
};

class WorkerPool {
 public:
  using Done = std::function<void(InferResult)>;

  // Builds every Policy up front so that a plan that does not fit fails here
  // (evla::Error), not on the first request. threads_per_worker 0: share the
  // cores evenly (one worker: EVLA_THREADS or every core).
  WorkerPool(std::shared_ptr<const Model> model, const Plan& plan, int workers, int threads_per_worker,
             size_t max_queue);
  ~WorkerPool();  // stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False (and `done` never called) when the queue is full or the pool
  // stopped; otherwise `done` runs exactly once, on a worker thread or in stop().
  bool submit(Observation obs, Done done);
  // Finishes the requests being run, answers the queued ones with the error
  // "server shutting down" and joins. Idempotent.
  void stop();

  int workers() const { return int(policies_.size()); }
  size_t queued() const;

 private:
  struct Job {
    Observation obs;
    Done done;
    std::chrono::steady_clock::time_point submitted;
  };
  void run(int index);
  void stop_now();

  std::vector<Policy> policies_;
  size_t max_queue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::once_flag stop_once_;
  std::vector<std::thread> threads_;
};

}  // namespace evla::serve
