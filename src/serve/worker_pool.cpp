#include "serve/worker_pool.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>

namespace evla::serve {

using Clock = std::chrono::steady_clock;
static double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

WorkerPool::WorkerPool(std::shared_ptr<const Model> model, const Plan& plan, int workers,
                       int threads_per_worker, size_t max_queue)
    : max_queue_(std::max<size_t>(max_queue, 1)) {
  workers = std::max(workers, 1);
  // N workers on C cores: C/N threads each, so they don't oversubscribe. One
  // worker keeps the library's default (EVLA_THREADS or every core).
  if (threads_per_worker <= 0 && workers > 1)
    threads_per_worker = std::max(1, int(std::thread::hardware_concurrency()) / workers);
  for (int i = 0; i < workers; ++i) {
    policies_.emplace_back(model, PolicyOptions{threads_per_worker});
    policies_.back().set_plan(plan);
  }
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { run(i); });
}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::submit(Observation obs, Done done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= max_queue_) return false;
    queue_.push_back(Job{std::move(obs), std::move(done), Clock::now()});
  }
  cv_.notify_one();
  return true;
}

void WorkerPool::stop() {
  std::call_once(stop_once_, [this] { stop_now(); });
}

void WorkerPool::stop_now() {
  std::deque<Job> dropped;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Every submitted job hears back exactly once, so no waiter is left hanging.
  for (auto& job : dropped) {
    InferResult r;
    r.error = "server shutting down";
    job.done(std::move(r));
  }
}

size_t WorkerPool::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void WorkerPool::run(int index) {
  Policy& policy = policies_[size_t(index)];
  // One inference before the first request: the first client does not pay
  // the cold start, and the scratch a usual request needs is known. A request
  // that leaves much more behind (a long prompt) has its buffers freed and
  // the heap trimmed, so one large request does not keep the worker large.
  // (A pool stopped before its warm-up needs none; a warm-up that fails
  // leaves the limit to the first request that succeeds.)
  auto limit_after = [](int64_t usual) { return 2 * usual + (int64_t(1) << 20); };
  int64_t limit = -1;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
  }
  try {
    policy.infer(example_observation(policy.model()));
    limit = limit_after(policy.scratch_bytes());
  } catch (const std::exception&) {  // a request will report the problem
  }
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    InferResult r;
    r.queue_ms = ms_since(job.submitted);
    auto start = Clock::now();
    try {
      r.chunk = policy.infer(job.obs);
    } catch (const std::exception& e) {  // evla::Error names the problem; bad_alloc is possible too
      r.error = e.what();
    }
    r.infer_ms = ms_since(start);
    r.scratch_bytes = policy.scratch_bytes();
    if (limit < 0 && r.error.empty()) limit = limit_after(r.scratch_bytes);
    if (limit >= 0 && r.scratch_bytes > limit) {
      policy.release_scratch();
      malloc_trim(0);
      r.scratch_bytes = 0;
    }
    job.done(std::move(r));
  }
}

}  // namespace evla::serve
