// Episode generation, instructions and success detectors.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "evla/error.h"
#include "sim/tasks.h"

namespace evla::sim {
namespace {

using namespace geom;

bool same_scene(const Scene& a, const Scene& b) {
  if (a.objects.size() != b.objects.size() || !(a.gripper.pos == b.gripper.pos) || a.cabinet_x != b.cabinet_x ||
      a.opening != b.opening)
    return false;
  for (size_t i = 0; i < a.objects.size(); ++i) {
    const Object &o = a.objects[i], &p = b.objects[i];
    if (!(o.pos == p.pos) || o.color != p.color || o.shape != p.shape || !(o.rgb == p.rgb)) return false;
  }
  return true;
}

TEST(SimTasks, NamesRoundTripAndUnknownNamesThrow) {
  for (Task t : all_tasks()) EXPECT_EQ(parse_task(task_name(t)), t);
  EXPECT_EQ(parse_split("matching"), Split::Matching);
  EXPECT_EQ(parse_split("variants"), Split::Variants);
  EXPECT_EQ(parse_split("randomized"), Split::Randomized);
  EXPECT_THROW(parse_task("pick_coke_can"), Error);
  EXPECT_THROW(parse_split("train"), Error);
}

TEST(SimTasks, EpisodeIsDeterminedBySplitTaskAndSeed) {
  for (Task t : all_tasks())
    for (Split sp : {Split::Matching, Split::Variants, Split::Randomized}) {
      Episode a = make_episode({sp, t, 123}), b = make_episode({sp, t, 123}), c = make_episode({sp, t, 124});
      EXPECT_TRUE(same_scene(a.scene, b.scene));
      EXPECT_EQ(a.instruction, b.instruction);
      EXPECT_TRUE(a.look == b.look);
      EXPECT_FALSE(same_scene(a.scene, c.scene)) << task_name(t);
    }
}

TEST(SimTasks, InstructionsNameTargetAmongLookAlikes) {
  for (Task t : all_tasks())
    for (Split sp : {Split::Matching, Split::Variants})
      for (uint64_t seed = 0; seed < 50; ++seed) {
        Episode ep = make_episode({sp, t, seed});
        const Goal& g = ep.goal;
        const auto& objs = ep.scene.objects;
        SCOPED_TRACE(ep.instruction);
        if (g.object >= 0) {
          EXPECT_NE(ep.instruction.find(object_name(objs[g.object])), std::string::npos);
          // Another object shares the target's colour or shape, so neither alone suffices.
          bool look_alike = false;
          const Object& target = objs[g.object];
          for (size_t i = 0; i < objs.size(); ++i)
            if (int(i) != g.object && (objs[i].color == target.color) != (objs[i].shape == target.shape))
              look_alike = true;
          EXPECT_TRUE(look_alike);
        }
        if (g.anchor >= 0) {
          EXPECT_NE(ep.instruction.find(object_name(objs[g.anchor])), std::string::npos);
        }
        if (g.drawer >= 0) {
          EXPECT_NE(ep.instruction.find(g.drawer == 0 ? "left" : "right"), std::string::npos);
        }
        EXPECT_EQ(ep.instruction.find('{'), std::string::npos);
        // Names are unambiguous.
        std::set<std::string> names;
        for (const Object& o : objs) names.insert(object_name(o));
        EXPECT_EQ(names.size(), objs.size());
      }
}

TEST(SimTasks, LayoutsAreValidAndStartUnsolved) {
  for (Task t : all_tasks())
    for (Split sp : {Split::Matching, Split::Variants})
      for (uint64_t seed = 0; seed < 100; ++seed) {
        Episode ep = make_episode({sp, t, seed});
        const Scene& s = ep.scene;
        EXPECT_FALSE(is_success(s, ep.goal)) << task_name(t) << " " << seed;
        EXPECT_GT(ep.max_steps, 0);
        const Box cab = s.cabinet_box();
        const float sweep = kCabFront - kMaxOpen - kPanelT - kHandleD;  // fully open handles reach here
        for (size_t i = 0; i < s.objects.size(); ++i) {
          const Box b = s.objects[i].box();
          EXPECT_EQ(b.lo.z, 0.0f);
          EXPECT_GE(b.lo.x, kReachLo.x);
          EXPECT_LE(b.hi.x, kReachHi.x);
          EXPECT_GE(b.lo.y, kReachLo.y);
          bool clear_of_cabinet = b.hi.x < cab.lo.x || b.lo.x > cab.hi.x || b.hi.y < sweep;
          EXPECT_TRUE(clear_of_cabinet) << task_name(t) << " " << seed;
          for (size_t j = 0; j < i; ++j) {
            const Box c = s.objects[j].box();
            bool apart = b.hi.x + 0.04f < c.lo.x || c.hi.x + 0.04f < b.lo.x || b.hi.y + 0.04f < c.lo.y ||
                         c.hi.y + 0.04f < b.lo.y;
            EXPECT_TRUE(apart) << task_name(t) << " " << seed;
          }
        }
      }
}

TEST(SimTasks, VariantsChangeTheLookAndAddDistractors) {
  const Look base = matching_look();
  size_t matching_max = 0, variants_min = 100;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    Episode m = make_episode({Split::Matching, Task::Pick, seed});
    Episode v = make_episode({Split::Variants, Task::Pick, seed});
    EXPECT_TRUE(m.look == base);
    EXPECT_GE(std::fabs(v.look.camera.eye.x - base.camera.eye.x), 0.03f);
    EXPECT_FALSE(v.look.table_a == base.table_a);
    EXPECT_FALSE(v.look.wall_top == base.wall_top);
    for (const Object& o : m.scene.objects) EXPECT_TRUE(o.rgb == base_color(o.color));
    for (const Object& o : v.scene.objects) EXPECT_FALSE(o.rgb == base_color(o.color));
    matching_max = std::max(matching_max, m.scene.objects.size());
    variants_min = std::min(variants_min, v.scene.objects.size());
  }
  EXPECT_GT(variants_min, matching_max);
}

TEST(SimTasks, VariantsFactorsApplyOneChangeAtATime) {
  const Look base = matching_look();
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const Episode full = make_episode({Split::Variants, Task::Pick, seed});
    EXPECT_TRUE(full.look == make_episode({Split::Variants, Task::Pick, seed, kAllVariantFactors}).look);

    const Episode camera = make_episode({Split::Variants, Task::Pick, seed, kVaryCamera});
    Look expect = base;
    expect.camera = full.look.camera;  // the same draw as the full variant, nothing else changed
    EXPECT_TRUE(camera.look == expect);
    EXPECT_EQ(camera.scene.objects.size() + 2, full.scene.objects.size());  // no extra distractors
    for (const Object& o : camera.scene.objects) EXPECT_TRUE(o.rgb == base_color(o.color));

    const Episode light = make_episode({Split::Variants, Task::Pick, seed, kVaryLight});
    EXPECT_TRUE(light.look.camera == base.camera);
    EXPECT_TRUE(light.look.table_a == base.table_a);
    EXPECT_FALSE(light.look.light_dir == base.light_dir);

    const Episode surfaces = make_episode({Split::Variants, Task::Pick, seed, kVarySurfaces});
    EXPECT_TRUE(surfaces.look.table_a == full.look.table_a);
    EXPECT_TRUE(surfaces.look.light_dir == base.light_dir);

    const Episode shades = make_episode({Split::Variants, Task::Pick, seed, kVaryShades});
    EXPECT_TRUE(shades.look == base);
    for (const Object& o : shades.scene.objects) EXPECT_FALSE(o.rgb == base_color(o.color));

    const Episode crowd = make_episode({Split::Variants, Task::Pick, seed, kVaryDistractors});
    EXPECT_TRUE(crowd.look == base);
    EXPECT_EQ(crowd.scene.objects.size(), full.scene.objects.size());
  }
}

// Training looks change only the table and wall, and never to a surface
// `variants` uses; the variant surfaces themselves are at distance 0 from
// the set, so the distance really measures closeness to what `variants` draws.
TEST(SimTasks, RandomizedLooksChangeSurfacesOnlyAndAvoidEveryVariantSurface) {
  const Look base = matching_look();
  std::set<int> patterns;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const Episode r = make_episode({Split::Randomized, Task(seed % kNumTasks), seed});
    EXPECT_FALSE(r.look.table_a == base.table_a);
    EXPECT_FALSE(r.look.wall_top == base.wall_top);
    EXPECT_GE(distance_to_variant_table(r.look.table_a), kUnseenDistance);
    EXPECT_GE(distance_to_variant_wall(r.look.wall_top), kUnseenDistance);
    patterns.insert(int(r.look.pattern));
    Look rest = r.look;  // everything but the surfaces is matching's
    rest.table_a = base.table_a, rest.table_b = base.table_b, rest.pattern = base.pattern;
    rest.pattern_scale = base.pattern_scale, rest.wall_top = base.wall_top, rest.wall_bottom = base.wall_bottom;
    EXPECT_TRUE(rest == base);
    for (const Object& o : r.scene.objects) EXPECT_TRUE(o.rgb == base_color(o.color));
    EXPECT_LE(r.scene.objects.size(), 4u);  // matching's count, no extra distractors

    const Episode v = make_episode({Split::Variants, Task::Pick, seed});
    EXPECT_EQ(distance_to_variant_table(v.look.table_a), 0.0f);
    EXPECT_EQ(distance_to_variant_wall(v.look.wall_top), 0.0f);
  }
  EXPECT_EQ(patterns.size(), 3u);
}

// A jittered training camera moves a little, never as far sideways as every
// `variants` camera does, and leaves the surfaces of the same seed alone.
TEST(SimTasks, RandomizedCameraJitterStaysBelowEveryVariantsShift) {
  const Camera base = matching_look().camera;
  float widest = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const Task task = Task(seed % kNumTasks);
    const Episode plain = make_episode({Split::Randomized, task, seed});
    const Episode moved = make_episode({Split::Randomized, task, seed, kAllVariantFactors, kMaxCameraJitter});
    EXPECT_TRUE(plain.look.camera == base);
    Look rest = moved.look;
    rest.camera = base;
    EXPECT_TRUE(rest == plain.look);
    EXPECT_TRUE(same_scene(plain.scene, moved.scene));
    const Vec3 d = moved.look.camera.eye - base.eye;
    EXPECT_LE(std::max({std::fabs(d.x), std::fabs(d.y), std::fabs(d.z)}), kMaxCameraJitter);
    EXPECT_LT(std::fabs(d.x), kVariantMinSideShift);
    EXPECT_LE(std::fabs(moved.look.camera.fov_y_deg - base.fov_y_deg), 40 * kMaxCameraJitter + 1e-4f);
    widest = std::max(widest, std::fabs(d.x));
    const Episode v = make_episode({Split::Variants, task, seed});
    EXPECT_GE(std::fabs(v.look.camera.eye.x - base.eye.x), kVariantMinSideShift);
  }
  EXPECT_GT(widest, 0.8f * kMaxCameraJitter);  // the jitter really spans its range
}

TEST(SimTasks, CameraJitterOutsideItsRangeOrSplitIsRefused) {
  for (float bad : {-0.01f, 0.03f, std::nanf("")})
    EXPECT_THROW(make_episode({Split::Randomized, Task::Pick, 1, kAllVariantFactors, bad}), Error) << bad;
  EXPECT_THROW(make_episode({Split::Matching, Task::Pick, 1, kAllVariantFactors, 0.01f}), Error);
  EXPECT_THROW(make_episode({Split::Variants, Task::Pick, 1, kAllVariantFactors, 0.01f}), Error);
}

TEST(SimTasks, VariantsFactorNamesRoundTripAndUnknownNamesThrow) {
  EXPECT_EQ(parse_variant_factors("all"), kAllVariantFactors);
  EXPECT_EQ(parse_variant_factors(""), kAllVariantFactors);
  EXPECT_EQ(parse_variant_factors("camera,light"), kVaryCamera | kVaryLight);
  EXPECT_EQ(variant_factors_name(kVaryCamera | kVaryLight), "camera,light");
  EXPECT_EQ(parse_variant_factors(variant_factors_name(kVaryShades | kVaryDistractors)), kVaryShades | kVaryDistractors);
  EXPECT_THROW(parse_variant_factors("camera,fog"), Error);
  EXPECT_THROW(parse_variant_factors("camera,"), Error);
}

// Success detectors, on hand-made states derived from a generated episode.
class SimSuccess : public ::testing::Test {
 protected:
  Episode ep(Task t) { return make_episode({Split::Matching, t, 5}); }
};

TEST_F(SimSuccess, Pick) {
  Episode e = ep(Task::Pick);
  Scene s = e.scene;
  const int target = e.goal.object;
  s.objects[target].pos.z = 0.1f;
  EXPECT_FALSE(is_success(s, e.goal));  // floating, not held
  s.gripper.held_object = target;
  EXPECT_TRUE(is_success(s, e.goal));
  s.objects[target].pos.z = 0.03f;
  EXPECT_FALSE(is_success(s, e.goal));  // held but not lifted enough
  Scene wrong = e.scene;
  const int other = target == 0 ? 1 : 0;
  wrong.gripper.held_object = other;
  wrong.objects[other].pos.z = 0.1f;
  EXPECT_FALSE(is_success(wrong, e.goal));
}

TEST_F(SimSuccess, MoveNear) {
  Episode e = ep(Task::MoveNear);
  const int target = e.goal.object, anchor = e.goal.anchor;
  Scene s = e.scene;
  const Vec3 a = s.objects[anchor].pos;
  s.objects[target].pos = {a.x + 0.12f, a.y, 0};
  EXPECT_TRUE(is_success(s, e.goal));
  s.gripper.held_object = target;
  EXPECT_FALSE(is_success(s, e.goal));  // not let go yet
  s.gripper.held_object = -1;
  s.objects[target].pos = {a.x + 0.2f, a.y, 0};
  EXPECT_FALSE(is_success(s, e.goal));  // too far
  s.objects[target].pos = {a.x, a.y, s.objects[anchor].top()};
  EXPECT_FALSE(is_success(s, e.goal));  // on top of it, not beside it
  // The anchor brought to the target does not count.
  Scene t = e.scene;
  const Vec3 o = t.objects[target].pos;
  t.objects[anchor].pos = {o.x + 0.12f, o.y, 0};
  EXPECT_FALSE(is_success(t, e.goal));
  // Nor another object put near the anchor.
  Scene u = e.scene;
  const int other = 1;  // the look-alike distractor: neither target (0) nor anchor (2)
  ASSERT_NE(other, target);
  ASSERT_NE(other, anchor);
  u.objects[other].pos = {a.x + 0.12f, a.y, 0};
  EXPECT_FALSE(is_success(u, e.goal));
}

TEST_F(SimSuccess, OpenAndCloseDrawer) {
  Episode o = ep(Task::OpenDrawer);
  const int k = o.goal.drawer;
  Scene s = o.scene;
  s.opening[k] = kOpened + 0.005f;
  EXPECT_TRUE(is_success(s, o.goal));
  s.opening[k] = kOpened - 0.02f;
  EXPECT_FALSE(is_success(s, o.goal));
  s.opening[k] = 0;
  s.opening[1 - k] = kMaxOpen;
  EXPECT_FALSE(is_success(s, o.goal));  // the other drawer

  Episode c = ep(Task::CloseDrawer);
  const int j = c.goal.drawer;
  Scene t = c.scene;
  EXPECT_GT(t.opening[j], kClosed);
  t.opening[j] = 0.01f;
  EXPECT_TRUE(is_success(t, c.goal));
  t.opening[j] = 0.05f;
  EXPECT_FALSE(is_success(t, c.goal));
  t.opening[1 - j] = 0;
  EXPECT_FALSE(is_success(t, c.goal));  // the other drawer
}

TEST_F(SimSuccess, PutInDrawer) {
  Episode e = ep(Task::PutInDrawer);
  const int target = e.goal.object, k = e.goal.drawer;
  Scene s = e.scene;
  s.objects[target].drawer = k;
  EXPECT_TRUE(is_success(s, e.goal));
  s.gripper.held_object = target;
  EXPECT_FALSE(is_success(s, e.goal));  // still holding it
  s.gripper.held_object = -1;
  s.objects[target].drawer = 1 - k;
  EXPECT_FALSE(is_success(s, e.goal));  // wrong drawer
  Scene t = e.scene;
  t.objects[target == 0 ? 1 : 0].drawer = k;
  EXPECT_FALSE(is_success(t, e.goal));  // a distractor in the drawer
}

}  // namespace
}  // namespace evla::sim
