#include "sim/expert_eval.h"

#include <chrono>

#include "evla/error.h"
#include "sim/env.h"

namespace evla::sim {

ExpertEvalReport evaluate_expert(const ExpertEvalOptions& o) {
  if (o.episodes < 1) throw Error("sim::evaluate_expert: episodes must be >= 1");
  if (o.render_size < 0) throw Error("sim::evaluate_expert: render_size must be >= 0");
  ExpertEvalReport report;
  const auto start = std::chrono::steady_clock::now();
  for (Task task : o.tasks) {
    ExpertTaskResult r;
    r.task = task;
    int64_t steps = 0;
    for (int i = 0; i < o.episodes; ++i) {
      Env env;
      env.reset({o.split, task, o.seed + uint64_t(i)});
      Expert expert(env.episode(), o.noise, o.seed + uint64_t(i));
      float action[kActionDim];
      while (!env.done()) {
        if (o.render_size > 0) (void)env.render(o.render_size, o.render_size);
        expert.act(env.scene(), action);
        env.step(action);
      }
      ++r.episodes;
      r.successes += env.success();
      steps += env.steps();
    }
    r.mean_steps = double(steps) / r.episodes;
    report.steps += steps;
    report.tasks.push_back(r);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace evla::sim
