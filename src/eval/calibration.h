// Calibration sets for redundancy analysis: observations the policy would
// see on the benchmark, taken from scripted-expert episodes (the sim) or from
// a directory of recorded demonstrations (docs/dataset.md).
#pragma once
#include <string>
#include <vector>

#include "evla/evla.h"
#include "sim/tasks.h"

namespace evla::eval {

struct CalibrationOptions {
  sim::Split split = sim::Split::Matching;
  std::vector<sim::Task> tasks = sim::all_tasks();
  int episodes = 20;
  int every = 4;            // keep every k-th frame
  uint64_t seed = 900000;   // away from evaluation (0…) and training seeds
  int image_size = 64;
  bool with_state = false;
};

std::vector<Observation> calibration_from_sim(const CalibrationOptions& o);

// Reads shard-*.safetensors of `dir`; at most max_samples, every k-th frame.
std::vector<Observation> calibration_from_demos(const std::string& dir, int max_samples, int every,
                                                bool with_state);

}  // namespace evla::eval
