// A one-line progress bar on stderr for long work (evaluation, analysis,
// data generation). Redraws in place on a terminal; elsewhere prints a line
// every 10% so logs stay short. Thread-safe.
#pragma once
#include <chrono>
#include <mutex>
#include <string>

namespace evla {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  // Adds `n` finished units; `note` (e.g. "success 93%") is shown after the bar.
  void advance(int64_t n = 1, const std::string& note = "");
  void finish();

 private:
  void draw(bool final);
  std::string label_, note_;
  int64_t total_, done_ = 0;
  int last_decile_ = -1;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
};

}  // namespace evla
