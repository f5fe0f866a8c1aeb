// The tabletop world: state and kinematics, no drawing and no task logic.
//
// Coordinates ("table units", roughly metres): x to the right as the camera
// sees it, y away from the camera, z up; the table top is z = 0. A cabinet
// with two drawers side by side (0 = left, 1 = right) stands at the back; its
// drawers slide toward the camera (-y). Objects stand in front of it.
//
// Kinematics are deliberately simple and exact (no physics engine):
//  - the gripper tip moves by the commanded delta, axis by axis, stopped by
//    the workspace limits, the table and the cabinet body;
//  - moving +y against a drawer's front panel pushes the drawer shut;
//  - closing the fingers around an object or a drawer handle grasps it; a
//    grasped object moves rigidly with the gripper, a grasped handle makes
//    the gripper's y motion slide the drawer (x and z are then locked);
//  - a held object is stopped by the cabinet and the drawer fronts (it does
//    not push them); objects do not collide with each other while carried;
//  - opening the fingers drops the object straight down onto what is below
//    (table, drawer floor, cabinet top or another object); objects resting in
//    a drawer slide with it.
#pragma once
#include <array>
#include <vector>

#include "sim/vec.h"

namespace evla::sim {

namespace geom {
// Actions: per-step clip of each of dx, dy, dz.
inline constexpr float kMaxDelta = 0.04f;
// Finger closure changes by this per step: closing or opening takes 3 steps,
// and a grasp or release happens when the closure crosses 0.5 (2nd step).
inline constexpr float kGripperRate = 1.0f / 3.0f;
// Gripper: two fingers separated along x (so the camera sees the gap).
inline constexpr float kMaxGap = 0.14f;     // inner gap when fully open
inline constexpr float kFingerW = 0.016f;   // finger thickness along x
inline constexpr float kFingerD = 0.03f;    // finger depth along y
inline constexpr float kFingerLen = 0.075f;
inline constexpr float kPalmH = 0.025f;
inline constexpr float kGripperH = kFingerLen + kPalmH;  // collision height above the tip
// Reach of the gripper tip.
inline constexpr Vec3 kReachLo{-0.36f, -0.40f, 0.0f};
inline constexpr Vec3 kReachHi{0.36f, 0.40f, 0.32f};
// Table top extent (drawn; the reach is inside it).
inline constexpr float kTableX0 = -0.50f, kTableX1 = 0.50f, kTableY0 = -0.46f, kTableY1 = 0.50f;
// Cabinet: front face at y = kCabFront, two trays side by side.
inline constexpr float kCabFront = 0.16f;
inline constexpr float kCabDepth = 0.22f;
inline constexpr float kCabHeight = 0.14f;
inline constexpr float kCabWall = 0.02f;   // between and beside the trays
inline constexpr float kTrayWidth = 0.17f;  // outer, along x
inline constexpr float kTrayDepth = 0.19f;
inline constexpr float kTrayWall = 0.01f;
inline constexpr float kTrayFloor = 0.02f;  // top of the tray floor
inline constexpr float kTrayTop = 0.095f;    // top of the tray's side walls
inline constexpr float kPanelT = 0.015f;    // front panel thickness (outside the body)
inline constexpr float kPanelZ0 = 0.01f, kPanelZ1 = 0.105f;
inline constexpr float kMaxOpen = 0.16f;
inline constexpr float kHandleW = 0.05f, kHandleD = 0.025f, kHandleH = 0.035f;
inline constexpr float kHandleZ = 0.06f;  // handle centre height
inline constexpr float kCabWidth = 3 * kCabWall + 2 * kTrayWidth;
inline constexpr int kDrawers = 2;
}  // namespace geom

enum class Shape : unsigned char { Cube, Can, Ball };
inline constexpr int kNumShapes = 3;

struct Object {
  Shape shape = Shape::Cube;
  int color = 0;   // palette index (its name is what instructions use)
  Rgb rgb;         // the shade actually drawn
  Vec3 pos;        // centre of the bottom face
  float half = 0;  // half extent along x and y
  float height = 0;
  int drawer = -1;  // drawer whose floor it rests on, or -1

  float top() const { return pos.z + height; }
  Box box() const { return {{pos.x - half, pos.y - half, pos.z}, {pos.x + half, pos.y + half, top()}}; }
};
// Size of each shape (cube, can = cylinder, ball = sphere).
void shape_size(Shape s, float* half, float* height);

struct Gripper {
  Vec3 pos;          // between the fingertips (lowest point of the fingers)
  float closure = 0; // 0 open .. 1 closed
  int held_object = -1;
  int held_drawer = -1;
  Vec3 grip_offset;  // held object's pos minus gripper pos
};

struct Scene {
  Gripper gripper;
  std::vector<Object> objects;
  float cabinet_x = 0;  // cabinet centre
  std::array<float, geom::kDrawers> opening{};  // 0 closed .. kMaxOpen

  // Inner finger gap; a held object or handle keeps the fingers apart.
  float gap() const;
  Box gripper_box() const;
  Box cabinet_box() const;
  float drawer_x(int k) const;  // centre of drawer k along x
  Box panel_box(int k) const;   // drawer k's front panel
  Box tray_box(int k) const;    // drawer k's tray, outer (floor to wall top)
  Box tray_inside(int k) const; // space inside the tray walls, floor to wall top
  Box handle_box(int k) const;
  Vec3 handle_center(int k) const;
  // The object closing fingers at the gripper's position would grasp (the
  // nearest one whose body is between the fingertips), or -1.
  int object_between_fingers() const;
  // Height an object of half extent `half` would rest at if dropped at (x, y)
  // from `below_z`; `*drawer` receives the tray it lands in (or -1).
  float support(float x, float y, float half, float below_z, int ignore, int* drawer) const;
};

// Advances one step. action = {dx, dy, dz, gripper}: deltas are clipped to
// ±kMaxDelta, the gripper command closes when >= 0.5 and opens otherwise.
// Non-finite components count as 0 (and as "open" for the gripper).
void step(Scene& scene, const float* action);

}  // namespace evla::sim
