#include "sim/expert.h"

#include <algorithm>
#include <cmath>

namespace evla::sim {

using namespace geom;

namespace {

constexpr float kCarryBottom = 0.15f;   // held object's bottom while travelling (clears every object)
constexpr float kAbove = 0.04f;         // hover this far above an object's top before descending
constexpr float kGraspDepth = 0.03f;    // fingertips this far above an object's bottom when closing
constexpr float kHandleBelow = 0.025f;  // fingertips this far below a handle's centre when closing
constexpr float kFine = 0.012f;         // largest jitter where precision matters (grasp tolerance is 0.02-0.03)
constexpr float kGraspReach = 0.025f;   // take-over descends / finishes a grasp this far off in x and y (fingers take 0.03)
constexpr int kPhaseTimeout = 30;       // steps before giving up on a phase and starting over

float uniform(Rng& rng, float lo, float hi) { return lo + (hi - lo) * float(rng.uniform()); }
float clampf(float v, float lim) { return std::clamp(v, -lim, lim); }
float max_abs(Vec3 v) { return std::max({std::fabs(v.x), std::fabs(v.y), std::fabs(v.z)}); }

}  // namespace

ExpertNoise ExpertNoise::level(float x) {
  x = std::clamp(x, 0.0f, 2.0f);
  return {0.02f * x, 0.3f * x, 0.03f * x, 0.004f * x};
}

Expert::Expert(const Episode& ep, const ExpertNoise& noise, uint64_t seed)
    : goal_(ep.goal), noise_(noise), rng_(seed ^ 0x5EED0F5EED0F5EEDull) {
  enter(Phase::Reach);
}

void Expert::enter(Phase p) {
  phase_ = p;
  phase_steps_ = 0;
  float j = noise_.jitter;
  jitter_ = {uniform(rng_, -j, j), uniform(rng_, -j, j), uniform(rng_, 0, j)};
  speed_ = 1 - uniform(rng_, 0, std::min(noise_.slow, 0.6f));
  // Open until the drawer has comfortably passed the success threshold.
  pull_to_ = kMaxOpen - uniform(rng_, 0, 0.01f);
}

Expert Expert::take_over(const Episode& ep, const Scene& s) {
  Expert e(ep);
  const Gripper& g = s.gripper;
  const Goal& goal = e.goal_;
  const Vec3 p = g.pos;
  auto waypoint_of = [&](Phase phase) {
    e.phase_ = phase;
    return e.waypoint(s);
  };
  // Within `tol` of that phase's target in x and y (default: the phase's own tolerance).
  auto lined_up = [&](Phase phase, float tol = -1) {
    const Waypoint w = waypoint_of(phase);
    if (tol < 0) tol = w.tolerance;
    return std::fabs(w.target.x - p.x) <= tol && std::fabs(w.target.y - p.y) <= tol;
  };
  if (goal.object >= 0 && g.held_object == goal.object) {
    // Lower where the carry would end, else lift (which carries on arrival).
    if (goal.task == Task::MoveNear && !place_near(s, goal.object, goal.anchor, &e.spot_))
      e.spot_ = s.objects[size_t(goal.object)].pos;
    e.enter(goal.task != Task::Pick && lined_up(Phase::Carry) ? Phase::Lower : Phase::Lift);
  } else if (goal.task == Task::OpenDrawer && g.held_drawer == goal.drawer) {
    e.enter(Phase::Pull);
  } else if (g.held_object >= 0 || g.held_drawer >= 0) {
    e.enter(Phase::Reach);  // holding the wrong thing: reaching opens the gripper
  } else if (g.closure > 0) {
    // The fingers are part-way: closing on the target (lined up at its grasp
    // point) or opening after a drop or a miss, which the scene cannot tell
    // apart. Finish the grasp only where one makes sense; elsewhere reaching
    // opens the fingers (closing there would re-grasp whatever was dropped).
    // An object is taken by fingers that cross half-closed around it, so
    // closing on the goal object from anywhere it is between the fingertips
    // works; a handle needs the tighter aim.
    const bool at_grasp = goal.object >= 0 ? g.closure < 0.5f && s.object_between_fingers() == goal.object
                                           : goal.task != Task::CloseDrawer &&
                                                 max_abs(waypoint_of(Phase::Descend).target - p) <= 0.01f;
    e.enter(at_grasp ? Phase::Close : Phase::Reach);
  } else {
    // Closing: down in front of the panel and already moving into it, keep
    // pushing. Otherwise, lined up over the target and below the hover point,
    // go straight down instead of climbing back up first. Descending aims at
    // the object as it goes, so over an object "lined up" is anywhere a grasp
    // can still be reached (kGraspReach), not the hover point's tolerance: a
    // policy a couple of centimetres off is shown the way down, not a climb.
    const Vec3 low = waypoint_of(Phase::Descend).target;
    const bool pushing = goal.task == Task::CloseDrawer && std::fabs(low.x - p.x) <= 0.01f &&
                         std::fabs(low.z - p.z) <= 0.01f && p.y > low.y;
    const bool down = lined_up(Phase::Reach, goal.object >= 0 ? kGraspReach : -1) &&
                      waypoint_of(Phase::Reach).target.z > p.z;
    e.enter(pushing ? Phase::Push : down ? Phase::Descend : Phase::Reach);
  }
  return e;
}

Expert::Waypoint Expert::waypoint(const Scene& s) const {
  const Vec3 p = s.gripper.pos;
  const Vec3 fine{clampf(jitter_.x, kFine), clampf(jitter_.y, kFine), std::min(jitter_.z, kFine)};
  const bool open_task = goal_.task == Task::OpenDrawer;
  const bool close_task = goal_.task == Task::CloseDrawer;
  const int k = goal_.drawer;

  if (open_task || close_task) {
    Vec3 h = s.handle_center(k);
    // Closing pushes the panel from in front of it (fingers either side of
    // the handle). Opening grasps the handle from above, aiming a little in
    // front of its centre (jitter mostly forward) so that the fingers never
    // touch the panel, which would nudge the drawer shut on the way down.
    float front = s.panel_box(k).lo.y - kFingerD / 2 - 0.05f;
    Vec3 base = close_task ? Vec3{h.x, front, h.z - 0.03f} : Vec3{h.x, h.y - 0.01f, h.z - kHandleBelow};
    Vec3 j = fine;
    if (open_task) j.y = std::clamp(j.y, -0.008f, 0.004f);
    switch (phase_) {
      case Phase::Reach: return {base + j + Vec3{0, 0, 0.07f}, false, 0.01f};
      case Phase::Descend: return {base + j, false, 0.006f};
      case Phase::Close: return {p, true, 0};
      case Phase::Pull: return {{p.x, p.y - (pull_to_ - s.opening[k]), p.z}, true, 0.004f};
      case Phase::Push: return {{p.x, s.panel_box(k).lo.y + 0.05f, p.z}, false, 0};
      case Phase::Release: return {p, false, 0};
      default: return {{p.x, p.y, 0.2f}, false, 0.01f};  // Retreat
    }
  }

  const Object& o = s.objects[goal_.object];
  // Where the object should go (its bottom centre), and at what height the tip carries it.
  Vec3 place = spot_;
  if (goal_.task == Task::PutInDrawer) place = {s.drawer_x(k), kCabFront - s.opening[k] / 2, kTrayFloor + 0.005f};
  const Vec3 off = s.gripper.held_object == goal_.object ? s.gripper.grip_offset : Vec3{0, 0, -kGraspDepth};
  switch (phase_) {
    case Phase::Reach: return {Vec3{o.pos.x, o.pos.y, o.top() + kAbove} + jitter_, false, 0.01f};
    case Phase::Descend:
      return {Vec3{o.pos.x, o.pos.y, o.pos.z + std::min(kGraspDepth, o.height / 3)} + fine, false, 0.006f};
    case Phase::Close: return {p, true, 0};
    case Phase::Lift: return {{p.x, p.y, kCarryBottom - off.z + jitter_.z}, true, 0.01f};
    case Phase::Carry:
      return {{place.x - off.x + jitter_.x / 2, place.y - off.y + fine.y, kCarryBottom - off.z}, true, 0.01f};
    case Phase::Lower: return {place - off + Vec3{fine.x / 2, fine.y / 2, 0}, true, 0.006f};
    case Phase::Release: return {p, false, 0};
    default: return {{p.x, p.y, 0.2f}, false, 0.01f};  // Retreat
  }
}

void Expert::advance(const Scene& s, bool arrived) {
  const Gripper& g = s.gripper;
  const bool holding = goal_.object >= 0 ? g.held_object == goal_.object : g.held_drawer == goal_.drawer;
  if (++phase_steps_ > kPhaseTimeout) return enter(Phase::Reach);
  switch (phase_) {
    case Phase::Reach:
      if (arrived && g.closure == 0) enter(Phase::Descend);
      return;
    case Phase::Descend:
      if (arrived) enter(goal_.task == Task::CloseDrawer ? Phase::Push : Phase::Close);
      return;
    case Phase::Close:
      if (g.closure < 1) return;
      if (!holding) return enter(Phase::Reach);  // missed: start over
      return enter(goal_.task == Task::OpenDrawer ? Phase::Pull : Phase::Lift);
    case Phase::Lift:
      if (!holding) return enter(Phase::Reach);
      if (arrived && goal_.task != Task::Pick) {
        if (goal_.task == Task::MoveNear && !place_near(s, goal_.object, goal_.anchor, &spot_))
          spot_ = s.objects[goal_.object].pos;  // nowhere free: put it back and retry later
        enter(Phase::Carry);
      }
      return;
    case Phase::Carry:
    case Phase::Lower:
      if (!holding) return enter(Phase::Reach);
      if (arrived) enter(phase_ == Phase::Carry ? Phase::Lower : Phase::Release);
      return;
    case Phase::Pull:
      if (!holding) return enter(Phase::Reach);
      if (s.opening[goal_.drawer] >= pull_to_ - 1e-4f) enter(Phase::Release);
      return;
    case Phase::Push:
      return;  // ends with success (or the timeout)
    case Phase::Release:
      if (g.closure == 0) enter(Phase::Retreat);
      return;
    case Phase::Retreat:
      if (arrived && !is_success(s, goal_)) enter(Phase::Reach);  // it went wrong: try again
      return;
  }
}

void Expert::act(const Scene& s, float* action) {
  // Phases that end on arrival hand over at once, so no step is wasted.
  Waypoint wp = waypoint(s);
  for (int i = 0; i < 4; ++i) {
    Phase before = phase_;
    advance(s, max_abs(wp.target - s.gripper.pos) <= wp.tolerance);
    wp = waypoint(s);
    if (phase_ == before) break;
  }

  Vec3 d = wp.target - s.gripper.pos;
  float vmax = speed_ * kMaxDelta, m = max_abs(d);
  if (m > vmax) d = d * (vmax / m);  // straight line at the phase's speed

  const bool travelling = phase_ == Phase::Reach || phase_ == Phase::Lift || phase_ == Phase::Carry ||
                          phase_ == Phase::Retreat;
  if (shove_steps_ == 0 && travelling && rng_.uniform() < noise_.perturb) {
    shove_steps_ = 1 + int(rng_.uniform() * 3);
    float a = 0.75f * kMaxDelta;
    shove_ = {uniform(rng_, -a, a), uniform(rng_, -a, a), uniform(rng_, -a / 2, a)};
  }
  if (shove_steps_ > 0) {
    --shove_steps_;
    d = shove_;
  }
  if (phase_ != Phase::Close && phase_ != Phase::Release) {
    float n = noise_.action;
    d = d + Vec3{uniform(rng_, -n, n), uniform(rng_, -n, n), uniform(rng_, -n, n)};
  }
  action[0] = clampf(d.x, kMaxDelta);
  action[1] = clampf(d.y, kMaxDelta);
  action[2] = clampf(d.z, kMaxDelta);
  action[3] = wp.closed ? 1.0f : 0.0f;
}

}  // namespace evla::sim
