// The scripted expert: success rate on both splits, determinism, diversity
// and recovery.
#include <gtest/gtest.h>

#include <cstdio>

#include "sim/env.h"
#include "sim/expert.h"
#include "sim/expert_eval.h"

namespace evla::sim {
namespace {

struct Rollout {
  bool success;
  int steps;
  std::vector<float> actions;
};

Rollout run_expert(const EpisodeSpec& spec, const ExpertNoise& noise, uint64_t seed) {
  Env env;
  env.reset(spec);
  Expert expert(env.episode(), noise, seed);
  Rollout r;
  float a[kActionDim];
  while (!env.done()) {
    expert.act(env.scene(), a);
    r.actions.insert(r.actions.end(), a, a + kActionDim);
    env.step(a);
  }
  r.success = env.success();
  r.steps = env.steps();
  return r;
}

// The acceptance bar: >= 98% of episodes of every task in both splits, with
// the demonstration noise (level 1) and without noise; the training-only
// `randomized` split too, since demonstrations are recorded in it.
TEST(SimExpert, SolvesAtLeast98PercentOfEveryTaskAndSplit) {
  for (float level : {0.0f, 1.0f})
    for (Split sp : {Split::Matching, Split::Variants, Split::Randomized}) {
      ExpertEvalOptions o;
      o.split = sp;
      o.episodes = 100;
      o.noise = ExpertNoise::level(level);
      o.render_size = 0;
      ExpertEvalReport r = evaluate_expert(o);
      ASSERT_EQ(r.tasks.size(), size_t(kNumTasks));
      for (const ExpertTaskResult& t : r.tasks) {
        std::printf("noise %.0f %-9s %-14s %3d/%d  mean steps %.1f (max %d)\n", level, split_name(sp),
                    task_name(t.task), t.successes, t.episodes, t.mean_steps, max_steps(t.task));
        EXPECT_EQ(t.episodes, 100);
        EXPECT_GE(t.successes, 98) << "noise " << level << " " << split_name(sp) << " " << task_name(t.task);
        EXPECT_LT(t.mean_steps, 0.5 * max_steps(t.task));  // the step limits leave a policy room
      }
    }
}

TEST(SimExpert, NoiseIsReproducibleAndDiverse) {
  const EpisodeSpec spec{Split::Matching, Task::MoveNear, 3};
  const ExpertNoise noise = ExpertNoise::level(1);
  EXPECT_EQ(run_expert(spec, noise, 1).actions, run_expert(spec, noise, 1).actions);
  EXPECT_NE(run_expert(spec, noise, 1).actions, run_expert(spec, noise, 2).actions);
  EXPECT_EQ(run_expert(spec, {}, 1).actions, run_expert(spec, {}, 2).actions);  // no noise: seed unused
}

TEST(SimExpert, RecoversWhenTheObjectIsDropped) {
  for (Task t : {Task::Pick, Task::MoveNear, Task::PutInDrawer}) {
    Env env;
    env.reset({Split::Matching, t, 21});
    Expert expert(env.episode());
    float a[kActionDim];
    // Pick: drop it right after the grasp; the others: while carrying it high.
    const float drop_height = t == Task::Pick ? 0.0f : 0.1f;
    int dropped = 0;  // steps of forced opening done (3 open the fingers fully)
    while (!env.done()) {
      expert.act(env.scene(), a);
      const Gripper& g = env.scene().gripper;
      bool carrying = g.held_object >= 0 && env.scene().objects[g.held_object].pos.z >= drop_height;
      if ((dropped == 0 && carrying) || (dropped > 0 && dropped < 3)) {
        a[3] = 0;
        ++dropped;
      }
      env.step(a);
    }
    EXPECT_EQ(dropped, 3) << task_name(t);
    EXPECT_TRUE(env.success()) << task_name(t);
  }
}

// Labels for on-policy data come from an expert taking over mid-episode, so a
// fresh expert must continue whatever phase the scene is in: one taking over
// at every single step still solves every task (it would loop if, say, it
// lifted again while lowering, or backed off while pushing a drawer shut).
TEST(SimExpert, TakingOverAtEveryStepStillSolves) {
  for (Split sp : {Split::Matching, Split::Variants})
    for (Task t : all_tasks())
      for (uint64_t seed = 0; seed < 30; ++seed) {
        Env env;
        env.reset({sp, t, seed});
        float a[kActionDim];
        while (!env.done()) {
          Expert::take_over(env.episode(), env.scene()).act(env.scene(), a);
          env.step(a);
        }
        EXPECT_TRUE(env.success()) << split_name(sp) << " " << task_name(t) << " seed " << seed;
      }
}

// Taking over after a policy went wrong: holding the wrong object, it lets go;
// from the right object's hover point, it descends at once.
TEST(SimExpert, TakeOverStartsFromTheScene) {
  Env env;
  env.reset({Split::Matching, Task::Pick, 4});
  Scene s = env.scene();
  const Object& o = s.objects[size_t(env.episode().goal.object)];
  s.gripper.pos = {o.pos.x, o.pos.y, o.top() + 0.02f};
  float a[kActionDim];
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_LT(a[2], 0) << "should descend";
  EXPECT_EQ(a[3], 0);
  ASSERT_NE(env.episode().goal.object, 1);
  s.gripper.closure = 1;
  s.gripper.held_object = 1;  // a distractor
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_EQ(a[3], 0) << "should open to drop the wrong object";
}

// A policy near the object but not on the hover point's 1 cm: the take-over
// goes down (correcting x and y on the way) as long as a grasp can still be
// reached, and finishes a closing grasp that will take the goal object, rather
// than climbing back; farther off it climbs, and it reopens on a miss.
TEST(SimExpert, TakeOverDescendsAndGraspsFromAFewCentimetresOff) {
  Env env;
  env.reset({Split::Matching, Task::Pick, 4});
  Scene s = env.scene();
  const Object& o = s.objects[size_t(env.episode().goal.object)];
  float a[kActionDim];
  s.gripper.pos = {o.pos.x + 0.02f, o.pos.y - 0.02f, o.top() + 0.02f};
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_LT(a[2], 0) << "2 cm off: should descend";
  EXPECT_LT(a[0], 0) << "and aim at the object";
  s.gripper.pos = {o.pos.x + 0.05f, o.pos.y, o.top() + 0.02f};
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_GT(a[2], 0) << "5 cm off: should climb to the hover point";
  s.gripper.pos = {o.pos.x + 0.02f, o.pos.y, o.pos.z + 0.02f};
  s.gripper.closure = 0.3f;
  ASSERT_EQ(s.object_between_fingers(), env.episode().goal.object);
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_EQ(a[3], 1) << "the goal object is between the fingers: finish the grasp";
  s.gripper.closure = 0.7f;  // crossed half-closed without taking it: a miss
  Expert::take_over(env.episode(), s).act(s, a);
  EXPECT_EQ(a[3], 0) << "should reopen after a miss";
}

// The states a policy leads to that the expert never visits: the wrong object
// grasped and lifted. An expert taken over at every step lets go (its fingers
// part-way open look like a grasp under way) and still solves the task,
// rather than closing on the dropped object again and again. A dropped object
// can leave a scene the expert cannot finish (e.g. knock a drawer part-way
// shut under the carried object), so the bar is 90%, not all.
TEST(SimExpert, TakingOverAtEveryStepRecoversFromAWrongGrasp) {
  int solved = 0, episodes = 0;
  for (Task t : {Task::Pick, Task::MoveNear, Task::PutInDrawer})
    for (uint64_t seed = 0; seed < 20; ++seed) {
      Env env;
      env.reset({Split::Matching, t, seed});
      const int wrong = env.episode().goal.object == 1 ? 2 : 1;
      float a[kActionDim];
      bool grasped = false;  // first a clean expert grasps the distractor and lifts it a little
      Episode other = env.episode();
      other.goal.object = wrong;
      other.goal.task = Task::Pick;
      Expert thief(other);
      while (!env.done() && !(grasped && env.scene().objects[size_t(wrong)].pos.z > 0.03f)) {
        thief.act(env.scene(), a);
        env.step(a);
        grasped = env.scene().gripper.held_object == wrong;
      }
      ASSERT_TRUE(grasped) << task_name(t) << " seed " << seed;
      while (!env.done()) {
        Expert::take_over(env.episode(), env.scene()).act(env.scene(), a);
        env.step(a);
      }
      ++episodes;
      solved += env.success();
      if (!env.success()) std::printf("not solved: %s seed %d\n", task_name(t), int(seed));
    }
  EXPECT_GE(solved, episodes * 9 / 10) << solved << " of " << episodes;
}

}  // namespace
}  // namespace evla::sim
