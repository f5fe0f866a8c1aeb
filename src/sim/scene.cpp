#include "sim/scene.h"

#include <cmath>

namespace evla::sim {

using namespace geom;

void shape_size(Shape s, float* half, float* height) {
  switch (s) {
    case Shape::Cube: *half = 0.0475f; *height = 0.095f; return;
    case Shape::Can: *half = 0.045f; *height = 0.12f; return;
    case Shape::Ball: *half = 0.05f; *height = 0.10f; return;
  }
}

float Scene::gap() const {
  float g = kMaxGap * (1.0f - gripper.closure);
  if (gripper.held_object >= 0) g = std::max(g, 2 * objects[gripper.held_object].half);
  if (gripper.held_drawer >= 0) g = std::max(g, kHandleW);
  return g;
}

Box Scene::gripper_box() const {
  const Vec3 p = gripper.pos;
  float hx = gap() / 2 + kFingerW;
  return {{p.x - hx, p.y - kFingerD / 2, p.z}, {p.x + hx, p.y + kFingerD / 2, p.z + kGripperH}};
}

Box Scene::cabinet_box() const {
  return {{cabinet_x - kCabWidth / 2, kCabFront, 0}, {cabinet_x + kCabWidth / 2, kCabFront + kCabDepth, kCabHeight}};
}

float Scene::drawer_x(int k) const {
  return cabinet_x - kCabWidth / 2 + kCabWall + kTrayWidth / 2 + k * (kTrayWidth + kCabWall);
}

Box Scene::panel_box(int k) const {
  float x = drawer_x(k), y = kCabFront - opening[k];
  return {{x - kTrayWidth / 2, y - kPanelT, kPanelZ0}, {x + kTrayWidth / 2, y, kPanelZ1}};
}

Box Scene::tray_box(int k) const {
  float x = drawer_x(k), y = kCabFront - opening[k];
  return {{x - kTrayWidth / 2, y, kTrayFloor - kTrayWall}, {x + kTrayWidth / 2, y + kTrayDepth, kTrayTop}};
}

Box Scene::tray_inside(int k) const {
  Box b = tray_box(k);
  return {{b.lo.x + kTrayWall, b.lo.y, kTrayFloor}, {b.hi.x - kTrayWall, b.hi.y - kTrayWall, kTrayTop}};
}

Vec3 Scene::handle_center(int k) const {
  return {drawer_x(k), kCabFront - opening[k] - kPanelT - kHandleD / 2, kHandleZ};
}

int Scene::object_between_fingers() const {
  const Vec3 p = gripper.pos;
  int best = -1;
  float best_d = 1e9f;
  for (int i = 0; i < int(objects.size()); ++i) {
    const Object& o = objects[i];
    float dx = std::fabs(o.pos.x - p.x), dy = std::fabs(o.pos.y - p.y);
    if (dx > 0.03f || dy > 0.03f || p.z < o.pos.z - 0.01f || p.z > o.top() - 0.02f) continue;
    float dist = dx * dx + dy * dy;
    if (dist < best_d) best_d = dist, best = i;
  }
  return best;
}

Box Scene::handle_box(int k) const {
  Vec3 c = handle_center(k);
  Vec3 h{kHandleW / 2, kHandleD / 2, kHandleH / 2};
  return {c - h, c + h};
}

float Scene::support(float x, float y, float half, float below_z, int ignore, int* drawer) const {
  float z = 0;
  *drawer = -1;
  for (int k = 0; k < kDrawers; ++k) {
    if (tray_inside(k).contains_xy(x, y)) {
      z = kTrayFloor;
      *drawer = k;
    }
  }
  if (*drawer < 0 && cabinet_box().contains_xy(x, y)) z = kCabHeight;
  // Stack on objects whose footprint overlaps and whose top is below us.
  for (int j = 0; j < int(objects.size()); ++j) {
    const Object& o = objects[j];
    if (j == ignore || j == gripper.held_object) continue;
    float reach = half + o.half - 0.01f;
    if (std::fabs(o.pos.x - x) < reach && std::fabs(o.pos.y - y) < reach && o.top() <= below_z + 0.02f &&
        o.top() > z) {
      z = o.top();
      *drawer = o.drawer;
    }
  }
  return z;
}

namespace {

float clip_delta(float v) {
  if (!std::isfinite(v)) return 0;
  return std::clamp(v, -kMaxDelta, kMaxDelta);
}

// How far `box` may move by `d` along `axis` before touching `obstacle`.
// Boxes that already interpenetrate are left alone so nothing gets stuck.
float limit(const Box& box, const Box& obstacle, int axis, float d) {
  for (int b = 0; b < 3; ++b)
    if (b != axis && !box.overlaps_on(obstacle, b)) return d;
  const float eps = 1e-6f;
  if (d > 0 && box.hi[axis] <= obstacle.lo[axis] + eps) return std::min(d, obstacle.lo[axis] - box.hi[axis]);
  if (d < 0 && box.lo[axis] >= obstacle.hi[axis] - eps) return std::max(d, obstacle.hi[axis] - box.lo[axis]);
  return d;
}

// Changes drawer k's opening by `d` (clamped); objects resting in it follow.
float slide_drawer(Scene& s, int k, float d) {
  float next = std::clamp(s.opening[k] + d, 0.0f, kMaxOpen);
  float moved = next - s.opening[k];
  s.opening[k] = next;
  for (Object& o : s.objects)
    if (o.drawer == k) o.pos.y -= moved;
  return moved;
}

// Gripper moving +y by d against drawer panels: pushes them shut, and stops
// at a panel that is already closed. Returns the allowed motion.
float push_drawers(Scene& s, const Box& gb, float d) {
  float allowed = d;
  for (int k = 0; k < kDrawers; ++k) {
    Box pb = s.panel_box(k);
    if (!gb.overlaps_on(pb, 0) || !gb.overlaps_on(pb, 2)) continue;
    if (gb.hi.y > pb.lo.y + 1e-6f || gb.hi.y + d <= pb.lo.y) continue;
    float push = gb.hi.y + d - pb.lo.y;
    float moved = -slide_drawer(s, k, -push);
    allowed = std::min(allowed, pb.lo.y + moved - gb.hi.y);
  }
  return allowed;
}

void move_gripper(Scene& s, Vec3 d) {
  Gripper& g = s.gripper;
  if (g.held_drawer >= 0) {  // the handle constrains the gripper to the drawer's rail
    g.pos.y -= slide_drawer(s, g.held_drawer, -d.y);
    return;
  }
  Object* held = g.held_object >= 0 ? &s.objects[g.held_object] : nullptr;
  const Box cab = s.cabinet_box();
  for (int a = 0; a < 3; ++a) {
    if (d[a] == 0) continue;
    float v = std::clamp(g.pos[a] + d[a], kReachLo[a], kReachHi[a]) - g.pos[a];
    Box gb = s.gripper_box();
    v = limit(gb, cab, a, v);
    if (held) {  // a held object is stopped by the cabinet and the drawer fronts
      Box hb = held->box();
      v = limit(hb, cab, a, v);
      for (int k = 0; k < kDrawers; ++k) v = limit(hb, s.panel_box(k), a, v);
      if (a == 2 && hb.lo.z >= 0) v = std::max(v, -hb.lo.z);  // held object stops on the table
    }
    if (a == 1 && v > 0) v = push_drawers(s, gb, v);
    g.pos[a] += v;
    if (held) held->pos[a] += v;
  }
}

// Closing fingers grasp a handle between them if one is there, else an
// object between the fingertips.
void grasp(Scene& s) {
  Gripper& g = s.gripper;
  const Vec3 p = g.pos;
  for (int k = 0; k < kDrawers; ++k) {
    Vec3 h = s.handle_center(k);
    float dz = h.z - p.z;
    if (std::fabs(h.x - p.x) <= 0.03f && std::fabs(h.y - p.y) <= 0.02f && dz >= 0 && dz <= 0.05f) {
      g.held_drawer = k;
      return;
    }
  }
  const int best = s.object_between_fingers();
  if (best < 0) return;
  g.held_object = best;
  g.grip_offset = s.objects[best].pos - p;
  s.objects[best].drawer = -1;
}

void release(Scene& s) {
  Gripper& g = s.gripper;
  if (g.held_object >= 0) {
    int i = g.held_object;
    g.held_object = -1;
    Object& o = s.objects[i];
    int drawer = -1;
    o.pos.z = s.support(o.pos.x, o.pos.y, o.half, o.pos.z, i, &drawer);
    o.drawer = drawer;
  }
  g.held_drawer = -1;
}

}  // namespace

void step(Scene& s, const float* action) {
  move_gripper(s, {clip_delta(action[0]), clip_delta(action[1]), clip_delta(action[2])});
  Gripper& g = s.gripper;
  const float before = g.closure;
  const bool close = action[3] >= 0.5f;  // false for NaN
  g.closure = close ? std::min(1.0f, before + kGripperRate) : std::max(0.0f, before - kGripperRate);
  if (before < 0.5f && g.closure >= 0.5f) grasp(s);
  if (before >= 0.5f && g.closure < 0.5f) release(s);
}

}  // namespace evla::sim
