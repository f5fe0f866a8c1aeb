// Records an episode as a PNG strip a person can look at: frames left to
// right (subsampled to at most kMaxFrames), enlarged, with a green (success)
// or red (failure) bar underneath; the instruction goes in a .txt beside it.
#pragma once
#include <string>
#include <vector>

#include "evla/image.h"
#include "sim/tasks.h"

namespace evla::eval {

class Recorder {
 public:
  static constexpr int kMaxFrames = 12;
  Recorder(std::string dir, const sim::EpisodeSpec& spec, std::string instruction);
  void frame(const Image& img) { frames_.push_back(img); }
  // Adds the final frame and writes the files.
  void finish(const Image& last, bool success);

 private:
  std::string dir_, instruction_;
  sim::EpisodeSpec spec_;
  std::vector<Image> frames_;
};

}  // namespace evla::eval
