// Closed-loop evaluation of a policy on the built-in tabletop benchmark:
// episodes run in parallel (one Policy per worker), each deterministic in
// (split, task, seed), with receding-horizon execution or CogACT's adaptive
// ensembling.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "evla/evla.h"
#include "sim/tasks.h"

namespace evla::eval {

struct EvalOptions {
  sim::Split split = sim::Split::Matching;
  uint32_t variant_factors = sim::kAllVariantFactors;  // variants only: which changes apply
  std::vector<sim::Task> tasks = sim::all_tasks();
  int episodes = 50;           // in total; episode i runs tasks[i % n] with seed + i / n
  uint64_t seed = 0;
  std::string unnorm_key;      // which dataset's action statistics (models with several)
  int execute = 0;             // actions executed per inference (receding horizon); 0: the model's n_action_steps
  bool ensemble = false;       // adaptive ensembling, one action per inference
  float ensemble_alpha = 0.1f;
  int sticky_gripper = 0;      // hold each gripper flip this many steps (SIMPLER's Google robot: 15); ≤ 1 off
  int workers = 0;             // parallel episodes (0: number of cores)
  int threads_per_policy = 1;
  std::string record_dir;      // write PNG strips of episodes here
  int record_limit = 10;       // at most this many per task
  bool progress = true;
};

struct TaskResult {
  std::string task;
  int episodes = 0, successes = 0;
  double rate = 0, lo = 0, hi = 0;  // success and its 95% Wilson interval
  double mean_steps = 0;
};

struct EpisodeResult {
  sim::EpisodeSpec spec;
  bool success = false;
  int steps = 0, inferences = 0;
};

struct EvalReport {
  std::string model, plan, split;
  std::vector<TaskResult> tasks;
  TaskResult overall;
  std::vector<EpisodeResult> episodes;
  int64_t inferences = 0;
  double latency_p50_ms = 0, latency_p90_ms = 0;
  Timing mean_split;          // mean per-module milliseconds per inference
  double control_hz = 0;      // executed actions per second of inference time
  double wall_s = 0;
  nlohmann::json to_json() const;
  std::string to_markdown() const;
};

// evla::Error unless the model fits the benchmark (action and state sizes, one camera).
void check_compatible(const Model& model);

// Noise seed of one inference: distinct per episode and step, fixed by them.
uint64_t inference_seed(const sim::EpisodeSpec& spec, int step);

EvalReport evaluate(std::shared_ptr<const Model> model, const Plan& plan, const EvalOptions& opts);

}  // namespace evla::eval
