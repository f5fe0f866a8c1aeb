#include "sim/tasks.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/comma_list.h"
#include "evla/error.h"

namespace evla::sim {

using namespace geom;

namespace {

constexpr const char* kSplitNames[] = {"matching", "variants", "randomized"};
constexpr const char* kTaskNames[] = {"pick", "move_near", "open_drawer", "close_drawer", "put_in_drawer"};
constexpr const char* kShapeNames[] = {"cube", "can", "ball"};
constexpr const char* kSideNames[] = {"left", "right"};
constexpr std::pair<const char*, uint32_t> kFactorNames[] = {
    {"camera", kVaryCamera}, {"surfaces", kVarySurfaces}, {"light", kVaryLight},
    {"shades", kVaryShades}, {"distractors", kVaryDistractors}};

// Instruction templates: {obj} the target, {anchor} move_near's reference
// object, {side} the drawer. All name the target, so that with distractors
// of the same colour or shape the policy must read the instruction.
const std::vector<std::vector<std::string>> kTemplates = {
    {"pick up the {obj}", "pick the {obj}", "grasp the {obj} and lift it", "lift the {obj}"},
    {"move the {obj} near the {anchor}", "put the {obj} next to the {anchor}", "place the {obj} close to the {anchor}"},
    {"open the {side} drawer", "pull the {side} drawer open", "open the {side} drawer of the cabinet"},
    {"close the {side} drawer", "push the {side} drawer shut", "close the {side} drawer of the cabinet"},
    {"put the {obj} into the {side} drawer", "place the {obj} in the {side} drawer",
     "put the {obj} away in the {side} drawer"},
};

float uniform(Rng& rng, float lo, float hi) { return lo + (hi - lo) * float(rng.uniform()); }
int below(Rng& rng, int n) { return int(rng.uniform() * n); }

uint64_t mix(uint64_t a, uint64_t b) { return Rng(a ^ (b * 0x9E3779B97F4A7C15ull)).next_u64(); }

void replace(std::string& s, const std::string& key, const std::string& value) {
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size()))
    s.replace(at, key.size(), value);
}

// Objects stand within |x| <= kAreaX, kAreaFront <= y <= kAreaBack: narrower
// than the gripper's reach and fully in view, so they look large at 64 px.
constexpr float kAreaX = 0.31f, kAreaFront = -0.38f, kAreaBack = 0.36f;

// Where objects may stand: in the area, clear of the cabinet and of the
// sweep of its fully opened drawers and handles.
bool in_free_area(const Scene& s, float x, float y, float half) {
  if (x < -kAreaX + half || x > kAreaX - half || y < kAreaFront + half || y > kAreaBack - half) return false;
  Box cab = s.cabinet_box();
  float sweep_front = kCabFront - kMaxOpen - kPanelT - kHandleD - 0.02f;
  bool beside = x < cab.lo.x - 0.05f - half || x > cab.hi.x + 0.05f + half;
  return beside || y < sweep_front - half;
}

// Footprints (squares of side 2*half) closer than `margin` apart?
bool crowded(const Object& o, float x, float y, float half, float margin) {
  float reach = o.half + half + margin;
  return std::fabs(o.pos.x - x) < reach && std::fabs(o.pos.y - y) < reach;
}

// Distinct (colour, shape) identities: the target first, then one distractor
// sharing its colour or its shape (so neither alone identifies the target),
// then random others.
std::vector<std::pair<int, Shape>> pick_identities(Rng& rng, int count) {
  std::vector<std::pair<int, Shape>> ids;
  auto taken = [&](int c, Shape sh) {
    for (auto& [c2, s2] : ids)
      if (c2 == c && s2 == sh) return true;
    return false;
  };
  ids.push_back({below(rng, kNumColors), Shape(below(rng, kNumShapes))});
  if (count > 1) {
    auto [c, sh] = ids[0];
    if (rng.uniform() < 0.5) sh = Shape((int(sh) + 1 + below(rng, kNumShapes - 1)) % kNumShapes);
    else c = (c + 1 + below(rng, kNumColors - 1)) % kNumColors;
    ids.push_back({c, sh});
  }
  while (int(ids.size()) < count) {
    int c = below(rng, kNumColors);
    Shape sh = Shape(below(rng, kNumShapes));
    if (!taken(c, sh)) ids.push_back({c, sh});
  }
  return ids;
}

// Places objects at random free spots; false if the table got too crowded.
bool place_objects(Scene& s, Rng& rng) {
  for (size_t i = 0; i < s.objects.size(); ++i) {
    Object& o = s.objects[i];
    bool placed = false;
    for (int attempt = 0; attempt < 100 && !placed; ++attempt) {
      float x = uniform(rng, -kAreaX, kAreaX), y = uniform(rng, kAreaFront, kAreaBack);
      if (!in_free_area(s, x, y, o.half)) continue;
      placed = true;
      for (size_t j = 0; j < i; ++j) placed = placed && !crowded(s.objects[j], x, y, o.half, 0.045f);
      if (placed) o.pos = {x, y, 0};
    }
    if (!placed) return false;
  }
  return true;
}

float drawer_opening(Rng& rng, float p_open) {
  return rng.uniform() < p_open ? uniform(rng, 0.08f, kMaxOpen) : uniform(rng, 0.0f, 0.015f);
}

}  // namespace

const char* split_name(Split s) { return kSplitNames[int(s)]; }
const char* task_name(Task t) { return kTaskNames[int(t)]; }

Split parse_split(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kSplitNames[i]) return Split(i);
  throw Error("unknown split '" + name + "' (expected matching, variants or randomized)");
}

Task parse_task(const std::string& name) {
  for (int i = 0; i < kNumTasks; ++i)
    if (name == kTaskNames[i]) return Task(i);
  throw Error("unknown task '" + name + "' (expected pick, move_near, open_drawer, close_drawer or put_in_drawer)");
}

std::vector<Task> parse_task_list(const std::string& csv) {
  if (csv.empty() || csv == "all") return all_tasks();
  std::vector<Task> tasks;
  for (const std::string& name : comma_items(csv)) tasks.push_back(parse_task(name));
  return tasks;
}

uint32_t parse_variant_factors(const std::string& csv) {
  if (csv.empty() || csv == "all") return kAllVariantFactors;
  uint32_t bits = 0;
  for (const std::string& name : comma_items(csv)) {
    uint32_t bit = 0;
    for (auto [n, b] : kFactorNames)
      if (name == n) bit = b;
    if (!bit) {
      std::string valid;
      for (auto [n, b] : kFactorNames) valid += std::string(valid.empty() ? "" : ", ") + n;
      throw Error("unknown variants factor '" + name + "' (valid: " + valid + ", or all)");
    }
    bits |= bit;
  }
  return bits;
}

std::string variant_factors_name(uint32_t factors) {
  if ((factors & kAllVariantFactors) == kAllVariantFactors) return "all";
  std::string out;
  for (auto [n, b] : kFactorNames)
    if (factors & b) out += std::string(out.empty() ? "" : ",") + n;
  return out.empty() ? "none" : out;
}

std::vector<Task> all_tasks() {
  std::vector<Task> t;
  for (int i = 0; i < kNumTasks; ++i) t.push_back(Task(i));
  return t;
}

std::string object_name(const Object& o) {
  return std::string(color_name(o.color)) + " " + kShapeNames[int(o.shape)];
}

int max_steps(Task t) {
  // About twice what the noisy expert needs (see tests/sim/test_expert.cpp).
  switch (t) {
    case Task::Pick: return 60;
    case Task::MoveNear: return 100;
    case Task::OpenDrawer: return 60;
    case Task::CloseDrawer: return 50;
    case Task::PutInDrawer: return 100;
  }
  return 0;
}

bool is_success(const Scene& s, const Goal& g) {
  const int held = s.gripper.held_object;
  switch (g.task) {
    case Task::Pick:
      return held == g.object && s.objects[g.object].pos.z >= kLiftHeight;
    case Task::MoveNear: {
      const Object& o = s.objects[g.object];
      const Object& a = s.objects[g.anchor];
      float dx = o.pos.x - a.pos.x, dy = o.pos.y - a.pos.y;
      float ax = a.pos.x - g.anchor_start.x, ay = a.pos.y - g.anchor_start.y;
      return held != g.object && held != g.anchor && o.pos.z < 0.005f && dx * dx + dy * dy <= kNearDist * kNearDist &&
             ax * ax + ay * ay <= kAnchorDrift * kAnchorDrift;
    }
    case Task::OpenDrawer: return s.opening[g.drawer] >= kOpened;
    case Task::CloseDrawer: return s.opening[g.drawer] <= kClosed;
    case Task::PutInDrawer: return held != g.object && s.objects[g.object].drawer == g.drawer;
  }
  return false;
}

bool place_near(const Scene& s, int object, int anchor, Vec3* spot) {
  // 8 directions around the anchor, tried in order of closeness to where
  // the object is now (short carry).
  constexpr float h = 0.70710678f;
  const float dirs[8][2] = {{1, 0}, {h, h}, {0, 1}, {-h, h}, {-1, 0}, {-h, -h}, {0, -1}, {h, -h}};
  const Object& o = s.objects[object];
  const Object& a = s.objects[anchor];
  const float dist = 0.115f;  // leaves a gap between the two, well within kNearDist
  int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  float score[8];
  for (int i = 0; i < 8; ++i) score[i] = dirs[i][0] * (o.pos.x - a.pos.x) + dirs[i][1] * (o.pos.y - a.pos.y);
  std::stable_sort(order, order + 8, [&](int l, int r) { return score[l] > score[r]; });
  for (int i : order) {
    float x = a.pos.x + dirs[i][0] * dist, y = a.pos.y + dirs[i][1] * dist;
    if (!in_free_area(s, x, y, o.half)) continue;
    bool clear = true;
    for (int j = 0; j < int(s.objects.size()); ++j)
      if (j != object && j != anchor && crowded(s.objects[j], x, y, o.half, 0.01f)) clear = false;
    if (clear) {
      *spot = {x, y, 0};
      return true;
    }
  }
  return false;
}

Episode make_episode(const EpisodeSpec& spec) {
  const uint64_t base = mix(mix(spec.seed, uint64_t(spec.split) + 1), uint64_t(spec.task) + 101);
  Rng layout(mix(base, 1)), looks(mix(base, 2)), words(mix(base, 3));
  const bool variant = spec.split == Split::Variants;
  const Task task = spec.task;
  const bool drawer_task = task == Task::OpenDrawer || task == Task::CloseDrawer || task == Task::PutInDrawer;

  Episode ep;
  ep.spec = spec;
  const uint32_t factors = variant ? spec.variant_factors : 0;
  if (spec.camera_jitter != 0 && spec.split != Split::Randomized)
    throw Error("episode: camera jitter is for the randomized split only, not " + std::string(split_name(spec.split)));
  ep.look = variant                              ? variant_look(looks, factors)
            : spec.split == Split::Randomized ? randomized_look(looks, spec.camera_jitter)
                                              : matching_look();
  ep.max_steps = max_steps(task);
  Goal& goal = ep.goal;
  goal.task = task;
  goal.drawer = drawer_task ? below(layout, kDrawers) : -1;

  // Variants add two distractors on top of matching's count.
  int count = (task == Task::OpenDrawer || task == Task::CloseDrawer) ? 2 + below(layout, 2) : 3 + below(layout, 2);
  if (factors & kVaryDistractors) count += 2;
  const auto ids = pick_identities(layout, count);
  constexpr int kAnchor = 2;

  for (int attempt = 0;; ++attempt) {
    if (attempt == 1000) throw Error("sim: cannot lay out an episode for " + std::string(task_name(task)));
    Scene s;
    s.cabinet_x = uniform(layout, -0.10f, 0.10f);
    s.gripper.pos = {uniform(layout, -0.15f, 0.15f), uniform(layout, -0.34f, -0.26f), uniform(layout, 0.16f, 0.22f)};
    for (int k = 0; k < kDrawers; ++k) {
      bool target = k == goal.drawer;
      float p_open = task == Task::CloseDrawer ? (target ? 1.0f : 0.5f) : target ? 0.0f : 0.3f;
      s.opening[k] = drawer_opening(layout, p_open);
      if (target && task == Task::PutInDrawer) s.opening[k] = uniform(layout, 0.145f, kMaxOpen);
    }
    for (auto [c, sh] : ids) {
      Object o;
      o.color = c, o.shape = sh, o.rgb = object_shade(c, variant, looks);  // drawn in every variant, for the same stream
      if (!(factors & kVaryShades)) o.rgb = base_color(c);
      shape_size(sh, &o.half, &o.height);
      s.objects.push_back(o);
    }
    if (!place_objects(s, layout)) continue;
    if (task == Task::MoveNear) {
      const Object &o = s.objects[0], &a = s.objects[kAnchor];
      float dx = o.pos.x - a.pos.x, dy = o.pos.y - a.pos.y;
      Vec3 spot;
      if (dx * dx + dy * dy < 0.25f * 0.25f || !place_near(s, 0, kAnchor, &spot)) continue;
    }
    ep.scene = s;
    break;
  }
  // The target is object 0 and move_near's anchor object 2 (object 1 is the
  // look-alike distractor); the order carries no meaning for the policy,
  // which only sees the image.
  if (task == Task::Pick || task == Task::MoveNear || task == Task::PutInDrawer) goal.object = 0;
  if (task == Task::MoveNear) {
    goal.anchor = kAnchor;
    goal.anchor_start = ep.scene.objects[kAnchor].pos;
  }

  const auto& options = kTemplates[int(task)];
  ep.instruction = options[below(words, int(options.size()))];
  if (goal.object >= 0) replace(ep.instruction, "{obj}", object_name(ep.scene.objects[goal.object]));
  if (goal.anchor >= 0) replace(ep.instruction, "{anchor}", object_name(ep.scene.objects[goal.anchor]));
  if (goal.drawer >= 0) replace(ep.instruction, "{side}", kSideNames[goal.drawer]);
  return ep;
}

}  // namespace evla::sim
