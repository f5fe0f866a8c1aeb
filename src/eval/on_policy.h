// On-policy demonstrations (DAgger's data step): the policy drives the
// episode, and every frame it visits is labelled with what the scripted expert
// would do from there (sim::expert_chunk). Behaviour cloning on expert
// episodes alone never shows the states the policy's own mistakes lead to;
// these frames do, with the way back.
#pragma once
#include <cstdint>

#include "evla/evla.h"
#include "sim/dataset.h"

namespace evla::eval {

struct OnPolicyOptions {
  int chunk = 16;            // label actions per frame
  int execute = 0;           // policy actions executed per inference (as `evla eval`; 0: the model's n_action_steps)
  float expert_share = 0;    // chance per inference that the expert's chunk is executed instead
  int sticky_gripper = 0;    // as `evla eval --sticky-gripper`: the policy's gripper flips held this many steps
};

// evla::Error unless the model fits the benchmark and the options are valid.
void check_on_policy(const Model& model, const OnPolicyOptions& options);

// One episode driven by `policy` (deterministic in spec, options and the
// policy's thread count); frames at the policy's image size.
sim::Demo record_on_policy(Policy& policy, const sim::EpisodeSpec& spec, const OnPolicyOptions& options);

}  // namespace evla::eval
