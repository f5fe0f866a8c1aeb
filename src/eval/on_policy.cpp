#include "eval/on_policy.h"

#include <algorithm>

#include "core/rng.h"
#include "eval/evaluator.h"
#include "eval/sticky_gripper.h"
#include "sim/env.h"

namespace evla::eval {

void check_on_policy(const Model& m, const OnPolicyOptions& o) {
  check_compatible(m);
  if (o.chunk < 1 || o.execute < 0 || !(o.expert_share >= 0 && o.expert_share <= 1) || o.sticky_gripper < 0)
    throw Error(
        "on-policy recording: chunk must be >= 1, execute >= 0 (0: the model's n_action_steps), expert_share in [0, "
        "1] and sticky_gripper >= 0");
  if (o.execute > m.action_horizon())
    throw Error("--execute " + std::to_string(o.execute) + " is more than the model's action chunk (" +
                std::to_string(m.action_horizon()) + " steps)");
}

sim::Demo record_on_policy(Policy& policy, const sim::EpisodeSpec& spec, const OnPolicyOptions& o) {
  const Model& m = policy.model();
  check_on_policy(m, o);
  sim::Env env;
  env.reset(spec);
  Rng rng(inference_seed(spec, 0) ^ 0x0E4BE27ull);  // expert-share draws, apart from the noise seeds
  sim::Demo d;
  d.spec = spec;
  d.instruction = env.instruction();
  Observation obs;
  obs.instruction = env.instruction();
  obs.images.resize(1);
  std::vector<float> plan;  // actions still to execute: the policy's or the expert's
  StickyGripper sticky(o.sticky_gripper, sim::kGripperIndex);
  size_t next = 0;
  while (!env.done()) {
    Image img = env.render(m.image_size(), m.image_size());
    const std::vector<float> label = sim::expert_chunk(env.episode(), env.scene(), o.chunk);
    if (next * sim::kActionDim >= plan.size()) {
      next = 0;
      const int n = std::min(o.execute > 0 ? o.execute : m.action_steps(), m.action_horizon());
      if (rng.uniform() < o.expert_share) {
        plan.assign(label.begin(), label.begin() + std::min<ptrdiff_t>(label.size(), n * sim::kActionDim));
      } else {
        obs.images[0] = img;
        if (m.state_dim() > 0) obs.state = env.state();
        obs.seed = inference_seed(spec, env.steps());
        const ActionChunk chunk = policy.infer(obs);
        plan.assign(chunk.row(0), chunk.row(0) + size_t(n) * sim::kActionDim);
      }
    }
    float* a = &plan[next++ * sim::kActionDim];
    sticky.apply(a);  // whichever chunk runs, as a robot's gripper filter would
    sim::record_frame(d, env, img);
    d.chunks.insert(d.chunks.end(), label.begin(), label.end());
    d.actions.insert(d.actions.end(), a, a + sim::kActionDim);
    env.step(a);
  }
  d.steps = env.steps();
  d.success = env.success();
  return d;
}

}  // namespace evla::eval
