// Demonstration recording, action chunks and the safetensors shard format.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "evla/error.h"
#include "io/safetensors.h"
#include "sim/dataset.h"
#include "sim/env.h"

namespace evla::sim {
namespace {

namespace fs = std::filesystem;

class SimDataset : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("evla_sim_dataset_" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SimDataset, RecordDemoHasOneFramePerAction) {
  DemoOptions opt;
  opt.image_size = 32;
  Demo d = record_demo({Split::Variants, Task::PutInDrawer, 4}, opt);
  EXPECT_TRUE(d.success);
  ASSERT_GT(d.steps, 10);
  EXPECT_EQ(d.images.size(), size_t(d.steps) * 32 * 32 * 3);
  EXPECT_EQ(d.states.size(), size_t(d.steps) * kStateDim);
  EXPECT_EQ(d.actions.size(), size_t(d.steps) * kActionDim);
  EXPECT_EQ(d.targets.size(), size_t(d.steps) * kTargetDim);
  // Frame 0 is the reset state.
  Env env;
  env.reset(d.spec);
  EXPECT_EQ(std::vector<float>(d.states.begin(), d.states.begin() + kStateDim), env.state());
  // Targets: the object to put away, then the tray floor of the goal drawer.
  const Goal& g = env.episode().goal;
  const Object& o = env.scene().objects[size_t(g.object)];
  EXPECT_EQ(d.targets[0], o.pos.x);
  EXPECT_EQ(d.targets[2], o.pos.z);
  EXPECT_EQ(d.targets[3], env.scene().drawer_x(g.drawer));
  EXPECT_EQ(d.targets[5], geom::kTrayFloor);
  // Objects: every object of the scene in scene order (variants has the most), then zero rows.
  ASSERT_EQ(d.objects.size(), size_t(d.steps) * kMaxObjects * 4);
  const auto& objs = env.scene().objects;
  ASSERT_GE(objs.size(), 4u);
  for (size_t i = 0; i < size_t(kMaxObjects); ++i) {
    const float* row = &d.objects[i * 4];
    if (i < objs.size()) {
      EXPECT_EQ(row[0], objs[i].pos.x) << i;
      EXPECT_EQ(row[1], objs[i].pos.y) << i;
      EXPECT_EQ(row[2], objs[i].pos.z) << i;
      EXPECT_EQ(row[3], 1.0f) << i;
    } else {
      EXPECT_EQ(std::vector<float>(row, row + 4), std::vector<float>(4, 0.0f)) << i;
    }
  }
  EXPECT_EQ(d.instruction, env.instruction());
  // Replaying the recorded actions reproduces the recorded frames.
  for (int t = 0; t < d.steps; ++t) {
    Image frame = env.render(32, 32);
    ASSERT_TRUE(std::equal(frame.rgb.begin(), frame.rgb.end(), d.images.begin() + size_t(t) * frame.rgb.size())) << t;
    env.step(&d.actions[size_t(t) * kActionDim]);
  }
  EXPECT_TRUE(env.success());
}

TEST_F(SimDataset, ChunksSliceAheadAndPadWithStillActions) {
  Demo d;
  d.steps = 3;
  d.actions = {0.01f, 0, 0, 0, 0.02f, 0, 0, 1, 0.03f, 0.01f, -0.01f, 1};
  std::vector<float> c = action_chunks(d, 4);
  ASSERT_EQ(c.size(), size_t(3 * 4 * kActionDim));
  auto at = [&](int t, int k) {
    return std::vector<float>(c.begin() + (t * 4 + k) * 4, c.begin() + (t * 4 + k + 1) * 4);
  };
  EXPECT_EQ(at(0, 0), (std::vector<float>{0.01f, 0, 0, 0}));
  EXPECT_EQ(at(0, 2), (std::vector<float>{0.03f, 0.01f, -0.01f, 1}));
  EXPECT_EQ(at(1, 0), (std::vector<float>{0.02f, 0, 0, 1}));
  EXPECT_EQ(at(0, 3), (std::vector<float>{0, 0, 0, 1}));  // past the end: still, gripper as last commanded
  EXPECT_EQ(at(2, 3), (std::vector<float>{0, 0, 0, 1}));
  EXPECT_THROW(action_chunks(d, 0), Error);
}

TEST_F(SimDataset, ShardsHoldFramesChunksAndEpisodeMetadata) {
  DatasetOptions opt;
  opt.split = Split::Matching;
  opt.tasks = {Task::Pick, Task::OpenDrawer};
  opt.episodes = 5;
  opt.seed = 100;
  opt.episodes_per_shard = 3;
  opt.demo.image_size = 32;
  opt.demo.chunk = 8;
  std::vector<int> progress;
  DatasetReport r = write_dataset(dir_.string(), opt, [&](int done, int total) {
    EXPECT_EQ(total, 5);
    progress.push_back(done);
  });
  EXPECT_EQ(r.episodes, 5);
  EXPECT_EQ(r.failed, 0);
  ASSERT_EQ(r.shards.size(), 2u);
  EXPECT_EQ(progress.back(), 5);

  int64_t frames = 0, next_index = 0;
  for (const std::string& path : r.shards) {
    auto f = io::SafetensorsFile::open(path);
    const io::TensorInfo* image = f->find("image");
    const io::TensorInfo* state = f->find("state");
    const io::TensorInfo* action = f->find("action");
    const io::TensorInfo* episode = f->find("episode");
    const io::TensorInfo* target = f->find("target");
    const io::TensorInfo* objects = f->find("objects");
    const io::TensorInfo* target_image = f->find("target_image");
    const io::TensorInfo* objects_image = f->find("objects_image");
    ASSERT_TRUE(image && state && action && episode && target && objects && target_image && objects_image);
    const int64_t n = episode->shape[0];
    EXPECT_EQ(image->dtype, io::DType::U8);
    EXPECT_EQ(image->shape, (std::vector<int64_t>{n, 32, 32, 3}));
    EXPECT_EQ(state->shape, (std::vector<int64_t>{n, kStateDim}));
    EXPECT_EQ(target->shape, (std::vector<int64_t>{n, kTargetDim}));
    EXPECT_EQ(objects->shape, (std::vector<int64_t>{n, kMaxObjects, 4}));
    EXPECT_EQ(target_image->shape, (std::vector<int64_t>{n, 4}));
    EXPECT_EQ(objects_image->shape, (std::vector<int64_t>{n, kMaxObjects, 2}));
    EXPECT_EQ(action->shape, (std::vector<int64_t>{n, 8, kActionDim}));
    EXPECT_EQ(episode->dtype, io::DType::I32);
    frames += n;

    auto info = nlohmann::json::parse(f->metadata().at("info"));
    EXPECT_EQ(info["chunk"], 8);
    EXPECT_EQ(info["action_dim"], kActionDim);
    auto eps = nlohmann::json::parse(f->metadata().at("episodes"));
    const auto* idx = reinterpret_cast<const int32_t*>(episode->data);
    for (const auto& e : eps) {
      EXPECT_EQ(e["index"], next_index);
      const int64_t first = e["first_frame"], len = e["frames"];
      EXPECT_EQ(idx[first], next_index);
      EXPECT_EQ(idx[first + len - 1], next_index);
      // The episode's seed and task follow the documented order.
      EXPECT_EQ(e["seed"], 100 + next_index);
      EXPECT_EQ(e["task"], next_index % 2 == 0 ? "pick" : "open_drawer");
      EXPECT_EQ(e["split"], "matching");
      EXPECT_TRUE(e["success"]);
      // The shard's first frame of each episode is the reset image.
      Env env;
      env.reset({Split::Matching, parse_task(e["task"]), uint64_t(e["seed"])});
      EXPECT_EQ(e["instruction"], env.instruction());
      Image img = env.render(32, 32);
      EXPECT_TRUE(std::equal(img.rgb.begin(), img.rgb.end(), image->data + size_t(first) * img.rgb.size()));
      ++next_index;
    }
  }
  EXPECT_EQ(frames, r.frames);
  EXPECT_EQ(next_index, 5);
}

// Where the task's object appears in each frame, through the episode's own
// camera: the object's colour is drawn at that pixel, for a moved camera too.
TEST_F(SimDataset, ImagePointsShowTheTaskObjectThroughTheEpisodeCamera) {
  for (float jitter : {0.0f, kMaxCameraJitter}) {
    Env env;
    env.reset({Split::Randomized, Task::Pick, 7, kAllVariantFactors, jitter});
    Demo d;
    const Image img = env.render(64, 64);
    record_frame(d, env, img);
    ASSERT_EQ(d.target_image.size(), 4u);
    ASSERT_EQ(d.objects_image.size(), size_t(kMaxObjects) * 2);
    const Object& o = env.scene().objects[size_t(env.episode().goal.object)];
    // The base centre is hidden under the object; its top is in view just above it.
    const Projection view(64, 64, env.episode().look.camera);
    float bx = 0, by = 0, x = 0, y = 0;
    ASSERT_TRUE(view.project(o.pos, &bx, &by));
    EXPECT_NEAR(d.target_image[0], bx, 1e-4f);
    EXPECT_NEAR(d.target_image[1], by, 1e-4f);
    EXPECT_EQ(d.objects_image[0], d.target_image[0]);  // the task's object is listed first
    EXPECT_EQ(d.objects_image[1], d.target_image[1]);
    if (jitter > 0) {  // the fixed camera would place it elsewhere
      float mx = 0, my = 0;
      ASSERT_TRUE(Projection(64, 64, matching_look().camera).project(o.pos, &mx, &my));
      EXPECT_GT(std::hypot(mx - bx, my - by), 0.2f);
    }
    ASSERT_TRUE(view.project(o.pos + Vec3{0, 0, o.height}, &x, &y));
    const uint8_t* px = img.pixel(int(x), int(y));
    const Rgb c = o.rgb;
    const float seen[3] = {px[0] / 255.0f, px[1] / 255.0f, px[2] / 255.0f};
    // Lit and shaded, the pixel keeps the object's dominant channel.
    const float want[3] = {c.r, c.g, c.b};
    const int dominant = int(std::max_element(want, want + 3) - want);
    EXPECT_EQ(int(std::max_element(seen, seen + 3) - seen), dominant) << "jitter " << jitter;
    for (int i = int(env.scene().objects.size()); i < kMaxObjects; ++i) {
      EXPECT_EQ(d.objects_image[size_t(i) * 2], 0.0f);
      EXPECT_EQ(d.objects_image[size_t(i) * 2 + 1], 0.0f);
    }
  }
}

TEST_F(SimDataset, ThreadsDoNotChangeTheData) {
  DatasetOptions opt;
  opt.episodes = 4;
  opt.demo.image_size = 16;
  opt.demo.chunk = 4;
  write_dataset((dir_ / "one").string(), opt);
  opt.threads = 2;
  write_dataset((dir_ / "two").string(), opt);
  auto a = io::SafetensorsFile::open((dir_ / "one" / "shard-00000.safetensors").string());
  auto b = io::SafetensorsFile::open((dir_ / "two" / "shard-00000.safetensors").string());
  for (const char* name : {"image", "state", "action", "target", "objects", "episode"}) {
    const io::TensorInfo *x = a->find(name), *y = b->find(name);
    ASSERT_TRUE(x && y);
    ASSERT_EQ(x->nbytes, y->nbytes);
    EXPECT_EQ(0, std::memcmp(x->data, y->data, x->nbytes)) << name;
  }
}

TEST_F(SimDataset, ExpertChunkSimulatesTheTakeOverAndPadsAfterSuccess) {
  Env env;
  env.reset({Split::Matching, Task::CloseDrawer, 5});
  const std::vector<float> c = expert_chunk(env.episode(), env.scene(), 60);
  ASSERT_EQ(c.size(), 60u * kActionDim);
  // The same actions drive a copy of the episode to success; afterwards the chunk stands still.
  int t = 0;
  while (!env.done()) env.step(&c[size_t(t++) * kActionDim]);
  ASSERT_TRUE(env.success());
  ASSERT_LT(t, 60);
  for (int k = t; k < 60; ++k)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(c[size_t(k) * kActionDim + j], 0.0f);
  EXPECT_EQ(expert_chunk(env.episode(), env.scene(), 3), std::vector<float>(3 * kActionDim, 0.0f));
  EXPECT_THROW(expert_chunk(env.episode(), env.scene(), 0), Error);
}

}  // namespace
}  // namespace evla::sim
