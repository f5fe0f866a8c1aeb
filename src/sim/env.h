// The gym-like environment a policy (or the scripted expert) drives.
//
//   evla::sim::Env env;
//   env.reset({evla::sim::Split::Matching, evla::sim::Task::Pick, 42});
//   while (!env.done()) {
//     evla::Image img = env.render(64, 64);      // what the policy sees
//     float action[evla::sim::kActionDim] = ...;  // policy(img, env.instruction())
//     env.step(action);
//   }
//   bool ok = env.success();
//
// Action (kActionDim = 4): {dx, dy, dz, gripper}. dx, dy, dz move the
// gripper tip in table units (≈ metres; x right, y away from the camera, z up),
// each clipped to ±geom::kMaxDelta = 0.04 per step; gripper is an absolute
// command, 0 = open .. 1 = closed, thresholded at 0.5. We chose 4 dimensions
// rather than CogACT's 7 because the world has no orientation: every grasp is
// top-down and the objects are symmetric, so rotation deltas would be dead
// dimensions (constant zero, degenerate q01 = q99 normalisation).
//
// State (kStateDim = 4): gripper tip x, y, z and finger opening (1 = fully
// open, 0 = closed; a grasped object keeps it at the object's width).
//
// An episode ends at the first step where the task succeeds, or after
// max_steps() steps. Not thread-safe; use one Env per thread.
#pragma once
#include <vector>

#include "evla/image.h"
#include "sim/render.h"
#include "sim/tasks.h"

namespace evla::sim {

inline constexpr int kActionDim = 4;
inline constexpr int kStateDim = 4;
inline constexpr int kGripperIndex = 3;  // action[3]: the gripper command

class Env {
 public:
  void reset(const EpisodeSpec& spec);
  // Supersampled render of the current state (see render.h).
  Image render(int width, int height) const;
  const std::string& instruction() const { return episode_.instruction; }
  std::vector<float> state() const;
  // Throws evla::Error when the episode is already done.
  void step(const float* action);
  bool success() const { return success_; }
  bool done() const { return success_ || steps_ >= episode_.max_steps; }
  int steps() const { return steps_; }
  int max_steps() const { return episode_.max_steps; }

  const Episode& episode() const { return episode_; }
  const Scene& scene() const { return scene_; }

 private:
  Episode episode_;
  Scene scene_;
  mutable Renderer renderer_;  // caches the episode's background
  int steps_ = 0;
  bool success_ = false;
};

}  // namespace evla::sim
