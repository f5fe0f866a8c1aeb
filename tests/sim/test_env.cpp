// The gym-like Env: reset/step/done semantics and reproducibility.
#include <gtest/gtest.h>

#include "core/rng.h"
#include "evla/error.h"
#include "sim/env.h"
#include "sim/expert.h"

namespace evla::sim {
namespace {

TEST(SimEnv, StepNeedsResetAndStopsWhenDone) {
  Env env;
  const float still[kActionDim] = {0, 0, 0, 0};
  EXPECT_THROW(env.step(still), Error);
  env.reset({Split::Matching, Task::CloseDrawer, 4});
  EXPECT_EQ(env.max_steps(), max_steps(Task::CloseDrawer));
  while (!env.done()) env.step(still);
  EXPECT_FALSE(env.success());
  EXPECT_EQ(env.steps(), env.max_steps());
  EXPECT_THROW(env.step(still), Error);
  env.reset({Split::Matching, Task::CloseDrawer, 4});  // reset starts over
  EXPECT_EQ(env.steps(), 0);
  EXPECT_FALSE(env.done());
}

TEST(SimEnv, StateIsGripperPositionAndOpening) {
  Env env;
  env.reset({Split::Variants, Task::Pick, 9});
  std::vector<float> s = env.state();
  ASSERT_EQ(s.size(), size_t(kStateDim));
  const Vec3 p = env.scene().gripper.pos;
  EXPECT_EQ(s[0], p.x);
  EXPECT_EQ(s[1], p.y);
  EXPECT_EQ(s[2], p.z);
  EXPECT_EQ(s[3], 1.0f);  // open
  const float close[kActionDim] = {0.01f, 0, 0, 1};
  for (int i = 0; i < 3; ++i) env.step(close);
  s = env.state();
  EXPECT_FLOAT_EQ(s[0], p.x + 0.03f);
  EXPECT_FLOAT_EQ(s[3], 0.0f);  // closed on nothing
}

TEST(SimEnv, SuccessEndsTheEpisode) {
  Env env;
  env.reset({Split::Matching, Task::OpenDrawer, 11});
  Expert expert(env.episode());
  float a[kActionDim];
  while (!env.done()) {
    expert.act(env.scene(), a);
    env.step(a);
  }
  EXPECT_TRUE(env.success());
  EXPECT_LT(env.steps(), env.max_steps());
}

TEST(SimEnv, SameSpecAndActionsGiveIdenticalTrajectoriesAndFrames) {
  for (Task t : all_tasks()) {
    Env a, b;
    EpisodeSpec spec{Split::Variants, t, 77};
    a.reset(spec);
    b.reset(spec);
    EXPECT_EQ(a.instruction(), b.instruction());
    Rng rng(5);
    for (int i = 0; i < 25 && !a.done(); ++i) {
      // Random actions, biased to close the gripper now and then.
      float act[kActionDim];
      for (int k = 0; k < 3; ++k) act[k] = float(rng.uniform() * 0.1 - 0.05);
      act[3] = float(rng.uniform());
      a.step(act);
      b.step(act);
      ASSERT_EQ(a.state(), b.state()) << task_name(t) << " step " << i;
      ASSERT_EQ(a.render(64, 64).rgb, b.render(64, 64).rgb) << task_name(t) << " step " << i;
    }
  }
}

}  // namespace
}  // namespace evla::sim
