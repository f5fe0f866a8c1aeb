// Kinematics: clipping, grasping, carrying, dropping, walls and drawers.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "sim/scene.h"

namespace evla::sim {
namespace {

using namespace geom;

// A cabinet at x = 0 with both drawers closed, one red cube in front of it.
Scene one_cube(Vec3 at = {0.2f, -0.25f, 0}) {
  Scene s;
  s.gripper.pos = {0, -0.3f, 0.2f};
  Object o;
  o.shape = Shape::Cube;
  shape_size(o.shape, &o.half, &o.height);
  o.pos = at;
  s.objects.push_back(o);
  return s;
}

void act(Scene& s, float dx, float dy, float dz, float grip, int times = 1) {
  const float a[4] = {dx, dy, dz, grip};
  for (int i = 0; i < times; ++i) step(s, a);
}

// Drives the tip to `to` in clipped steps with a constant gripper command.
void move_to(Scene& s, Vec3 to, float grip) {
  for (int i = 0; i < 100; ++i) {
    Vec3 d = to - s.gripper.pos;
    if (std::fabs(d.x) + std::fabs(d.y) + std::fabs(d.z) < 1e-6f) return;
    act(s, d.x, d.y, d.z, grip);
  }
}

TEST(SimScene, DeltasAreClippedAndNonFiniteIsIgnored) {
  Scene s = one_cube();
  act(s, 1.0f, -1.0f, 0.01f, 0);
  EXPECT_FLOAT_EQ(s.gripper.pos.x, kMaxDelta);
  EXPECT_FLOAT_EQ(s.gripper.pos.y, -0.3f - kMaxDelta);
  EXPECT_FLOAT_EQ(s.gripper.pos.z, 0.21f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Vec3 before = s.gripper.pos;
  act(s, nan, std::numeric_limits<float>::infinity(), 0, nan);
  EXPECT_EQ(s.gripper.pos, before);
  EXPECT_EQ(s.gripper.closure, 0.0f);  // NaN gripper command counts as open
}

TEST(SimScene, ReachIsLimited) {
  Scene s = one_cube();
  act(s, 0, 0, -kMaxDelta, 0, 20);
  EXPECT_FLOAT_EQ(s.gripper.pos.z, kReachLo.z);
  act(s, -kMaxDelta, 0, 0, 0, 30);
  EXPECT_FLOAT_EQ(s.gripper.pos.x, kReachLo.x);
}

TEST(SimScene, GraspCarryAndDrop) {
  Scene s = one_cube();
  const Object& cube = s.objects[0];
  move_to(s, {0.2f, -0.25f, 0.03f}, 0);
  act(s, 0, 0, 0, 1);  // closure 1/3: not yet
  EXPECT_EQ(s.gripper.held_object, -1);
  act(s, 0, 0, 0, 1);  // crosses 0.5: grasped
  EXPECT_EQ(s.gripper.held_object, 0);
  EXPECT_FLOAT_EQ(s.gap(), 2 * cube.half);  // fingers rest on the cube
  move_to(s, {0.0f, -0.2f, 0.2f}, 1);
  EXPECT_NEAR(cube.pos.x, 0.0f, 1e-6f);
  EXPECT_NEAR(cube.pos.y, -0.2f, 1e-6f);
  EXPECT_NEAR(cube.pos.z, 0.17f, 1e-6f);
  act(s, 0, 0, 0, 0, 2);  // opening crosses 0.5: dropped onto the table
  EXPECT_EQ(s.gripper.held_object, -1);
  EXPECT_FLOAT_EQ(cube.pos.z, 0.0f);
  EXPECT_NEAR(cube.pos.x, 0.0f, 1e-6f);
}

TEST(SimScene, ClosingAwayFromObjectsGraspsNothing) {
  Scene s = one_cube();
  move_to(s, {0.2f, -0.15f, 0.03f}, 0);  // 10 cm behind the cube
  act(s, 0, 0, 0, 1, 3);
  EXPECT_EQ(s.gripper.held_object, -1);
  EXPECT_FLOAT_EQ(s.gap(), 0.0f);
  // Above the cube's top is no grasp either.
  Scene t = one_cube();
  move_to(t, {0.2f, -0.25f, 0.1f}, 0);
  act(t, 0, 0, 0, 1, 3);
  EXPECT_EQ(t.gripper.held_object, -1);
}

TEST(SimScene, DroppedObjectStacksOnAnother) {
  Scene s = one_cube();
  Object second = s.objects[0];
  second.pos = {-0.2f, -0.25f, 0};
  s.objects.push_back(second);
  move_to(s, {0.2f, -0.25f, 0.03f}, 0);
  act(s, 0, 0, 0, 1, 3);
  move_to(s, {-0.2f, -0.25f, 0.2f}, 1);
  act(s, 0, 0, 0, 0, 3);
  EXPECT_FLOAT_EQ(s.objects[0].pos.z, s.objects[1].top());
}

TEST(SimScene, CabinetIsAWall) {
  Scene s = one_cube();
  // Low, straight at the cabinet's side above the drawers: stops at the front face.
  move_to(s, {s.drawer_x(0), -0.1f, 0.115f}, 1);
  act(s, 0, kMaxDelta, 0, 1, 20);
  EXPECT_NEAR(s.gripper_box().hi.y, kCabFront, 1e-5f);
  // Coming down from above: stops on the top.
  Scene t = one_cube();
  move_to(t, {0, 0.25f, 0.3f}, 1);
  act(t, 0, 0, -kMaxDelta, 1, 20);
  EXPECT_NEAR(t.gripper.pos.z, kCabHeight, 1e-5f);
}

TEST(SimScene, HeldObjectCannotEnterCabinet) {
  Scene s = one_cube({0.0f, -0.2f, 0});
  move_to(s, {0.0f, -0.2f, 0.03f}, 0);
  act(s, 0, 0, 0, 1, 3);
  ASSERT_EQ(s.gripper.held_object, 0);
  act(s, 0, kMaxDelta, 0, 1, 20);
  // Stopped by the closed drawers' fronts, which it does not push.
  EXPECT_NEAR(s.objects[0].box().hi.y, kCabFront - kPanelT, 1e-5f);
  EXPECT_EQ(s.opening[0], 0.0f);
}

TEST(SimScene, PushClosesDrawerAndStopsAtTheFront) {
  Scene s = one_cube();
  s.opening = {0.15f, 0};
  const float x = s.drawer_x(0);
  move_to(s, {x, s.panel_box(0).lo.y - 0.05f, 0.03f}, 0);
  EXPECT_FLOAT_EQ(s.opening[0], 0.15f);
  act(s, 0, kMaxDelta, 0, 0, 10);
  EXPECT_FLOAT_EQ(s.opening[0], 0.0f);
  EXPECT_NEAR(s.gripper_box().hi.y, s.panel_box(0).lo.y, 1e-5f);
  EXPECT_FLOAT_EQ(s.opening[1], 0.0f);
}

TEST(SimScene, HandleGraspPullsDrawerOpenUpToTheLimit) {
  Scene s = one_cube();
  Vec3 h = s.handle_center(1);
  move_to(s, {h.x, h.y - 0.01f, h.z + 0.1f}, 0);
  move_to(s, {h.x, h.y - 0.01f, h.z - 0.025f}, 0);
  act(s, 0, 0, 0, 1, 3);
  ASSERT_EQ(s.gripper.held_drawer, 1);
  const Vec3 grip = s.gripper.pos;
  act(s, 0.02f, -0.03f, 0.02f, 1);  // x and z are locked to the rail
  EXPECT_FLOAT_EQ(s.opening[1], 0.03f);
  EXPECT_FLOAT_EQ(s.gripper.pos.x, grip.x);
  EXPECT_FLOAT_EQ(s.gripper.pos.z, grip.z);
  EXPECT_FLOAT_EQ(s.gripper.pos.y, grip.y - 0.03f);
  act(s, 0, -kMaxDelta, 0, 1, 10);
  EXPECT_FLOAT_EQ(s.opening[1], kMaxOpen);
  act(s, 0, 0, 0, 0, 2);
  EXPECT_EQ(s.gripper.held_drawer, -1);
}

TEST(SimScene, ObjectDroppedInDrawerSlidesWithIt) {
  Scene s = one_cube({0.0f, -0.25f, 0});
  s.opening = {kMaxOpen, 0};
  move_to(s, {0.0f, -0.25f, 0.03f}, 0);
  act(s, 0, 0, 0, 1, 3);
  Vec3 over{s.drawer_x(0), kCabFront - kMaxOpen / 2, 0.2f};
  move_to(s, over, 1);
  move_to(s, {over.x, over.y, kTrayFloor + 0.04f}, 1);
  act(s, 0, 0, 0, 0, 3);
  const Object& cube = s.objects[0];
  EXPECT_EQ(cube.drawer, 0);
  EXPECT_FLOAT_EQ(cube.pos.z, kTrayFloor);
  const float y = cube.pos.y;
  // Push it shut from the front: the cube goes in with the tray.
  move_to(s, {over.x, s.panel_box(0).lo.y - 0.05f, 0.2f}, 0);
  move_to(s, {over.x, s.panel_box(0).lo.y - 0.05f, 0.03f}, 0);
  act(s, 0, kMaxDelta, 0, 0, 10);
  EXPECT_FLOAT_EQ(s.opening[0], 0.0f);
  EXPECT_NEAR(cube.pos.y, y + kMaxOpen, 1e-5f);
}

}  // namespace
}  // namespace evla::sim
