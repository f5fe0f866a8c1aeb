#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace evla {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total > 0 ? total : 1), tty_(isatty(2)),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n, const std::string& note) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  if (!note.empty()) note_ = note;
  draw(false);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  const double frac = std::min(1.0, double(done_) / total_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = done_ > 0 ? secs * (total_ - done_) / done_ : 0;
  if (tty_) {
    const int width = 30, filled = int(frac * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld %3.0f%% %.0fs left %s\033[K", label_.c_str(), filled,
                 "##############################", width - filled, "", (long long)done_,
                 (long long)total_, frac * 100, eta, note_.c_str());
    if (final) std::fprintf(stderr, "\n");
  } else {
    const int decile = int(frac * 10);
    if (decile != last_decile_ || (final && done_ < total_)) {
      last_decile_ = decile;
      std::fprintf(stderr, "%s %lld/%lld (%.0f%%) %.0fs %s\n", label_.c_str(), (long long)done_,
                   (long long)total_, frac * 100, secs, note_.c_str());
    }
  }
  std::fflush(stderr);
}

}  // namespace evla
