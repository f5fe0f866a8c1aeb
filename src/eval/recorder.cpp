#include "eval/recorder.h"
#include "core/output_file.h"

#include <fmt/format.h>

#include <fstream>

namespace evla::eval {

Recorder::Recorder(std::string dir, const sim::EpisodeSpec& spec, std::string instruction)
    : dir_(std::move(dir)), instruction_(std::move(instruction)), spec_(spec) {}

void Recorder::finish(const Image& last, bool success) {
  frames_.push_back(last);
  // Evenly spaced frames, always including the first and the last.
  std::vector<const Image*> pick;
  const int n = int(frames_.size()), k = std::min(n, kMaxFrames);
  for (int i = 0; i < k; ++i) pick.push_back(&frames_[size_t(k == 1 ? 0 : i * (n - 1) / (k - 1))]);
  const int scale = 2, gap = 2, bar = 6;
  const int fw = last.width * scale, fh = last.height * scale;
  Image strip(k * fw + (k - 1) * gap, fh + bar);
  std::fill(strip.rgb.begin(), strip.rgb.end(), uint8_t(255));
  for (int f = 0; f < k; ++f)
    for (int y = 0; y < fh; ++y)
      for (int x = 0; x < fw; ++x) {
        const uint8_t* s = pick[size_t(f)]->pixel(x / scale, y / scale);
        uint8_t* d = strip.pixel(f * (fw + gap) + x, y);
        d[0] = s[0], d[1] = s[1], d[2] = s[2];
      }
  const uint8_t colour[3] = {uint8_t(success ? 40 : 220), uint8_t(success ? 170 : 40), 40};
  for (int y = fh; y < fh + bar; ++y)
    for (int x = 0; x < strip.width; ++x) std::copy(colour, colour + 3, strip.pixel(x, y));
  const std::string base = fmt::format("{}/{}_{}_seed{}_{}", dir_, sim::task_name(spec_.task),
                                       sim::split_name(spec_.split), spec_.seed, success ? "ok" : "fail");
  save_png(base + ".png", strip);
  write_file(base + ".txt", fmt::format("{}\n{} after {} frames\n", instruction_, success ? "success" : "failure",
                                       frames_.size() - 1));
}

}  // namespace evla::eval
