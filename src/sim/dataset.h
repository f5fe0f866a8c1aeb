// Demonstrations: expert episodes recorded frame by frame and written as
// safetensors shards for training (format: docs/dataset.md).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "evla/image.h"
#include "sim/env.h"
#include "sim/expert.h"
#include "sim/tasks.h"

namespace evla::sim {

struct DemoOptions {
  int image_size = 64;  // square frames
  int chunk = 16;       // actions per training target
  ExpertNoise noise = ExpertNoise::level(1);
};

// One expert episode; frame t is what the policy saw before action t.
struct Demo {
  EpisodeSpec spec;
  std::string instruction;
  bool success = false;
  int steps = 0;                // frames = actions
  std::vector<uint8_t> images;  // [steps, size, size, 3]
  std::vector<float> states;    // [steps, kStateDim]
  std::vector<float> actions;   // [steps, kActionDim]
  std::vector<float> targets;   // [steps, kTargetDim]: see task_targets
  std::vector<float> objects;   // [steps, kMaxObjects, 4]: see scene_objects
  std::vector<float> target_image;   // [steps, 4]: task_targets' object and destination, in pixels
  std::vector<float> objects_image;  // [steps, kMaxObjects, 2]: `objects` in pixels (padding rows 0)
  // [steps, chunk, kActionDim] when every frame is labelled by an expert taking
  // over from that frame (expert_chunk; on-policy data); empty for expert
  // episodes, whose targets are sliced from `actions` (action_chunks).
  std::vector<float> chunks;
};

// Privileged per-frame positions (table units) for auxiliary training losses:
// {object x, y, z, destination x, y, z}. The object is the one to handle (pick,
// move_near, put_in_drawer) or the drawer's handle centre (open/close); the
// destination is the anchor object (move_near), the drawer's tray floor
// (put_in_drawer), or the object itself otherwise. Not an input of the policy.
inline constexpr int kTargetDim = 6;
void task_targets(const Scene& scene, const Goal& goal, float* out);

// Privileged positions of every object in the scene, in scene order (the
// task's object first), for auxiliary losses that need more than the task's
// targets: rows {x, y, z, 1} (the base centre, table units), then rows of
// zeros up to kMaxObjects. Throws if the scene holds more.
inline constexpr int kMaxObjects = 8;
void scene_objects(const Scene& scene, float* out);

// Where world points appear in a frame: image x, y (pixels, pixel centres at
// +0.5) through the episode's camera, for `rows` points {x, y, z, ...} spaced
// `stride` floats apart. Rows whose 4th value is 0 (scene_objects' padding)
// map to 0, 0 when `padded`.
void image_points(const Projection& view, const float* xyz, int rows, int stride, bool padded, float* out);

// Appends the frame `img` of env's current state to d: the image, the state,
// and the privileged targets and object positions, in the table and in the
// image (not the action).
void record_frame(Demo& d, const Env& env, const Image& img);

// Runs the expert on one episode (its noise seeded from the spec) and records it.
Demo record_demo(const EpisodeSpec& spec, const DemoOptions& options);

// [steps, chunk, kActionDim]: the expert's actions t .. t+chunk-1 for every
// frame t. The expert is stateful, so chunks are sliced from the recorded
// episode; past its end they repeat a zero-motion action that keeps the last
// gripper command.
std::vector<float> action_chunks(const Demo& demo, int chunk);

// [chunk, kActionDim]: what a clean expert taking over `scene` (Expert::take_over)
// does in the next `chunk` steps, simulated on a copy; after the task succeeds,
// zero-motion actions that keep the last gripper command, as action_chunks pads.
std::vector<float> expert_chunk(const Episode& ep, const Scene& scene, int chunk);

// Writes demos as one shard; their episode indices are first_index, first_index+1, ...
void write_shard(const std::string& path, const std::vector<Demo>& demos, int64_t first_index,
                 const DemoOptions& options);

struct DatasetOptions {
  Split split = Split::Matching;
  std::vector<Task> tasks = all_tasks();
  int episodes = 100;            // attempted; episode i runs tasks[i % tasks.size()] with seed + i
  uint64_t seed = 0;
  int episodes_per_shard = 200;  // 64 px: about 12 KB per frame, ~35 frames per episode
  bool keep_failed = false;      // failed expert episodes are dropped unless set
  float camera_jitter = 0;       // randomized split only: EpisodeSpec::camera_jitter
  int threads = 1;
  DemoOptions demo;
};

// Records one episode for write_dataset; `worker` (0 .. threads-1) lets a
// recorder keep per-thread state such as a policy.
using DemoRecorder = std::function<Demo(const EpisodeSpec& spec, int worker)>;

struct DatasetReport {
  int episodes = 0;  // written
  int failed = 0;    // unsolved episodes (the expert's are dropped unless keep_failed)
  int64_t frames = 0;
  std::vector<std::string> shards;
};

// Writes dir/shard-00000.safetensors, ... (dir is created). `progress`, if
// given, is called with (episodes attempted so far, total). `record` replaces
// the expert (record_demo) as the source of episodes, e.g. a policy driving
// with expert labels; its episodes are kept whether or not they succeed.
DatasetReport write_dataset(const std::string& dir, const DatasetOptions& options,
                            const std::function<void(int, int)>& progress = {},
                            const DemoRecorder& record = {});

}  // namespace evla::sim
