// Runs the scripted expert over many episodes: its success per task (the
// benchmark's ceiling) and the simulator's speed in steps per second.
#pragma once
#include <cstdint>
#include <vector>

#include "sim/expert.h"
#include "sim/tasks.h"

namespace evla::sim {

struct ExpertEvalOptions {
  Split split = Split::Matching;
  std::vector<Task> tasks = all_tasks();
  int episodes = 100;  // per task, seeds seed .. seed + episodes - 1
  uint64_t seed = 0;
  ExpertNoise noise = ExpertNoise::level(1);
  int render_size = 64;  // render every step at this size, as a policy would; 0 = never
};

struct ExpertTaskResult {
  Task task = Task::Pick;
  int episodes = 0, successes = 0;
  double mean_steps = 0;
};

struct ExpertEvalReport {
  std::vector<ExpertTaskResult> tasks;
  int64_t steps = 0;
  double seconds = 0;  // wall time of all episodes, rendering included
  double steps_per_second() const { return seconds > 0 ? double(steps) / seconds : 0; }
};

ExpertEvalReport evaluate_expert(const ExpertEvalOptions& options);

}  // namespace evla::sim
