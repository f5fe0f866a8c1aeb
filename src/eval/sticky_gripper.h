// Sticky gripper, the action filter SIMPLER's evaluation applies to policies
// on the Google robot: once the commanded gripper state flips (open ↔
// closed), the new command is held for `repeat` steps whatever the policy
// predicts next. One stray "open" inside a chunk then cannot undo a grasp
// the step after it was made, which is the chatter a diffusion policy's
// per-step noise produces near the 0.5 threshold.
#pragma once

namespace evla::eval {

class StickyGripper {
 public:
  // repeat ≤ 1: no filtering. `index` is the gripper's place in the action.
  StickyGripper(int repeat, int index) : repeat_(repeat), index_(index) {}
  // Rewrites the gripper value of `action` (thresholded at 0.5, as the
  // simulator does) while a flip is being held.
  void apply(float* action);

 private:
  int repeat_, index_;
  int hold_left_ = 0;
  bool closed_ = false;  // the command in force; episodes start open
};

}  // namespace evla::eval
