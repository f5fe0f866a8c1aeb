#include "eval/sticky_gripper.h"

namespace evla::eval {

void StickyGripper::apply(float* action) {
  if (repeat_ <= 1) return;
  float& g = action[index_];
  if (hold_left_ > 0) {
    --hold_left_;
    g = closed_ ? 1.0f : 0.0f;
    return;
  }
  const bool close = g >= 0.5f;  // false for NaN, as in sim::step
  if (close != closed_) {
    closed_ = close;
    hold_left_ = repeat_ - 1;  // this step is the first of the hold
  }
}

}  // namespace evla::eval
