// Task families (mirroring SIMPLER's Google-robot tasks), their instructions,
// success detectors, and episode generation: an episode is fully determined
// by (split, task, seed) on every platform.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "sim/look.h"
#include "sim/scene.h"

namespace evla::sim {

// `randomized` is for training data only: matching's layout rules and
// camera, with the table and wall drawn at random away from every surface
// `variants` uses (randomized_look), so `variants` stays unseen.
enum class Split { Matching, Variants, Randomized };
enum class Task { Pick, MoveNear, OpenDrawer, CloseDrawer, PutInDrawer };
inline constexpr int kNumTasks = 5;

const char* split_name(Split s);  // "matching", "variants", "randomized"
const char* task_name(Task t);    // "pick", "move_near", "open_drawer", "close_drawer", "put_in_drawer"
// Both throw evla::Error listing the valid names.
Split parse_split(const std::string& name);
Task parse_task(const std::string& name);
// A comma list of task names, or "all" / empty for every task.
std::vector<Task> parse_task_list(const std::string& csv);
// "camera,light" -> VariantFactor bits; "all" or empty -> every factor;
// evla::Error names an unknown factor and lists the valid ones.
uint32_t parse_variant_factors(const std::string& csv);
std::string variant_factors_name(uint32_t factors);  // "camera,light"; "all"
std::vector<Task> all_tasks();

struct EpisodeSpec {
  Split split = Split::Matching;
  Task task = Task::Pick;
  uint64_t seed = 0;
  uint32_t variant_factors = kAllVariantFactors;  // variants only: what differs from matching
  float camera_jitter = 0;  // randomized only: camera moved up to this far (randomized_look)
};

// What success means for one episode.
struct Goal {
  Task task = Task::Pick;
  int object = -1;    // pick / move_near / put_in_drawer: the object to handle
  int anchor = -1;    // move_near: the object to put it near
  int drawer = -1;    // open / close / put_in_drawer: 0 left, 1 right
  Vec3 anchor_start;  // move_near: the anchor must stay where it was
};

struct Episode {
  EpisodeSpec spec;
  Scene scene;  // initial state
  Look look;
  Goal goal;
  std::string instruction;
  int max_steps = 0;
};

Episode make_episode(const EpisodeSpec& spec);

// Success thresholds (table units).
inline constexpr float kLiftHeight = 0.06f;   // pick: bottom this high while held
inline constexpr float kNearDist = 0.15f;     // move_near: centre distance
inline constexpr float kAnchorDrift = 0.02f;  // move_near: anchor may move this little
inline constexpr float kOpened = 0.12f;       // open_drawer: opening (of kMaxOpen = 0.16)
inline constexpr float kClosed = 0.02f;       // close_drawer

bool is_success(const Scene& scene, const Goal& goal);
int max_steps(Task t);
std::string object_name(const Object& o);  // "red cube", "blue can", "green ball"

// move_near: a free spot on the table next to `anchor` for `object`, within
// kNearDist, preferring the side the object comes from. False if none.
bool place_near(const Scene& scene, int object, int anchor, Vec3* spot);

}  // namespace evla::sim
