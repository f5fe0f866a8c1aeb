// The derived-weight caches: a load (or a plan's compilation) that reads its
// derived weights from the cache computes exactly what one without it does,
// and a stale, damaged, foreign or unwritable cache costs only the speed-up.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "evla/evla.h"
#include "io/safetensors.h"
#include "model/model_impl.h"
#include "model/weight_cache.h"
#include "test_util.h"

namespace evla {
namespace {

namespace fs = std::filesystem;

std::string fixture() { return test::source_path("tests/fixtures/dual_gqa_cfg"); }

// The fixture with its matrices stored as BF16 (scaled by `scale`) in `dir`:
// their fp32 conversions are derived weights whichever kernels run (the
// packed copies are derived only where the CPU takes the packed kernel).
void write_bf16_model(const fs::path& dir, float scale = 1.0f) {
  fs::create_directories(dir);
  for (const char* f : {"config.json", "tokenizer.model"})
    fs::copy_file(fs::path(fixture()) / f, dir / f, fs::copy_options::overwrite_existing);
  auto src = io::SafetensorsFile::open(fixture() + "/model.safetensors");
  io::SafetensorsWriter w;
  for (const auto& [name, t] : src->tensors()) {
    if (t.shape.size() != 2) {
      w.add(name, t.dtype, t.shape, t.data, t.nbytes);
      continue;
    }
    const std::vector<float> v = io::to_f32(t);
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = uint16_t(std::bit_cast<uint32_t>(v[i] * scale) >> 16);
    w.add(name, io::DType::BF16, t.shape, b.data(), 2 * b.size());
  }
  w.write((dir / "model.safetensors").string());
}

Observation observation(const Model& m) {
  Observation obs;
  for (int k = 0; k < m.num_images(); ++k) {
    Image img(m.image_size(), m.image_size());
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i * 37 + 11 * k) % 251);
    obs.images.push_back(img);
  }
  obs.instruction = "pick up the red block";
  obs.state.assign(size_t(m.state_dim()), 0.25f);
  obs.seed = 7;
  return obs;
}

std::vector<float> actions(const std::string& dir, const std::string& cache_dir, std::string* status = nullptr) {
  LoadOptions o;
  o.weight_cache_dir = cache_dir;
  auto m = Model::load(dir, o);
  if (status) *status = m->weight_cache_status();
  Policy p(m, PolicyOptions{1});
  return p.infer(observation(*m)).actions;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

class WeightCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("evla_weight_cache_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root);
    model = (root / "model").string();
    write_bf16_model(model);
    cache = (root / "cache").string();
    reference = actions(model, "");
  }
  void TearDown() override { fs::remove_all(root); }
  // The one cache file of `cache`.
  std::string cache_file() const {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cache)) files.push_back(e.path());
    EXPECT_EQ(files.size(), 1u);
    return files.empty() ? "" : files[0].string();
  }
  fs::path root;
  std::string model, cache;
  std::vector<float> reference;
};

TEST_F(WeightCacheTest, WrittenThenReadGivesBitIdenticalActions) {
  std::string status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "wrote ")) << status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "read ")) << status;
  // A safetensors file whose arrays start on 64-byte lines, among them the conversions.
  auto f = io::SafetensorsFile::open(cache_file());
  bool converted = false;
  for (const auto& [name, t] : f->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << name;
    converted = converted || starts_with(name, "f32:");
  }
  EXPECT_TRUE(converted);
}

TEST_F(WeightCacheTest, MissingArraysAreDerivedAndTheFileCompleted) {
  actions(model, cache);
  const std::string file = cache_file();
  // The same file without its first array.
  auto f = io::SafetensorsFile::open(file);
  const size_t all = f->tensors().size();
  io::SafetensorsWriter w;
  for (auto it = std::next(f->tensors().begin()); it != f->tensors().end(); ++it)
    w.add(it->first, it->second.dtype, it->second.shape, it->second.data, it->second.nbytes);
  w.set_metadata("fingerprint", f->metadata().at("fingerprint"));
  f.reset();
  w.write(file, 64);
  std::string status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "wrote ")) << status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "read ")) << status;
  EXPECT_EQ(io::SafetensorsFile::open(cache_file())->tensors().size(), all);
}

TEST_F(WeightCacheTest, ChangedCheckpointIsNotServedFromTheOldFile) {
  std::string status;
  actions(model, cache, &status);
  const std::string first = cache_file();
  write_bf16_model(model, 0.5f);  // same size, other bytes
  const std::vector<float> changed = actions(model, "");
  EXPECT_NE(changed, reference);
  EXPECT_EQ(actions(model, cache, &status), changed);
  EXPECT_TRUE(starts_with(status, "wrote ")) << status;
  // The file of the checkpoint's earlier state is gone: one file per checkpoint.
  EXPECT_FALSE(fs::exists(first));
  EXPECT_NE(cache_file(), first);
}

TEST_F(WeightCacheTest, DamagedFileIsIgnoredAndReplaced) {
  actions(model, cache);
  const std::string file = cache_file();
  fs::resize_file(file, fs::file_size(file) / 2);
  std::string status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "wrote ")) << status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "read ")) << status;
}

TEST_F(WeightCacheTest, FileOfAnotherCheckpointIsNotUsed) {
  actions(model, cache);
  const std::string file = cache_file();
  // Same name, same arrays, but zeros and a fingerprint of other files.
  auto f = io::SafetensorsFile::open(file);
  io::SafetensorsWriter w;
  for (const auto& [name, t] : f->tensors()) {
    std::vector<float> zeros(size_t(t.numel()), 0.0f);
    w.add_f32(name, t.shape, zeros.data());
  }
  w.set_metadata("fingerprint", "other files");
  f.reset();
  w.write(file, 64);
  std::string status;
  EXPECT_EQ(actions(model, cache, &status), reference);
  EXPECT_TRUE(starts_with(status, "wrote ")) << status;
}

TEST_F(WeightCacheTest, UnwritableDirectoryOnlyCostsTheSpeedUp) {
  const fs::path blocker = root / "a_file";
  std::ofstream(blocker) << "not a directory";
  std::string status;
  EXPECT_EQ(actions(model, (blocker / "cache").string(), &status), reference);
  EXPECT_TRUE(starts_with(status, "cannot write ")) << status;
  EXPECT_EQ(actions(model, "", &status), reference);
  EXPECT_EQ(status, "off");
}

// A plan's derived arrays (int8 codes and scales, compacted 16-bit MLPs,
// BF16 copies of fp32 ones) kept for the next compilation of the same plan.
constexpr const char* kPlan = R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [1],
  "intermediate_size": 128, "mlp_channels": {"0": [0, 5, 9, 64, 127], "2": [3, 4]}},
  "precision": {"action_head": "bf16"}})";

struct PlannedRun {
  std::vector<float> actions;
  std::string status;
  bool replayed = false;
};

PlannedRun planned_run(const std::string& dir, const std::string& cache_dir, const std::string& plan_json,
                       double min_seconds = 0) {
  LoadOptions o;
  o.weight_cache_dir = cache_dir;
  o.plan_cache_min_seconds = min_seconds;
  auto m = Model::load(dir, o);  // a fresh model: nothing compiled in this process yet
  Policy p(m, PolicyOptions{1});
  p.set_plan(Plan::from_json(plan_json, "plan"));
  PlannedRun r;
  r.actions = p.infer(observation(*m)).actions;
  r.status = p.plan_cache_status();
  r.replayed = p.state().planned->derived->replayed();
  return r;
}

class PlanCacheTest : public WeightCacheTest {
 protected:
  void SetUp() override {
    WeightCacheTest::SetUp();
    planned_reference = planned_run(model, "", kPlan).actions;
    EXPECT_NE(planned_reference, reference);
  }
  std::vector<fs::path> plan_files() const {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cache))
      if (e.path().filename().string().find("-plan-") != std::string::npos) files.push_back(e.path());
    return files;
  }
  std::vector<float> planned_reference;
};

TEST_F(PlanCacheTest, WrittenThenReplayedGivesBitIdenticalActions) {
  PlannedRun r = planned_run(model, cache, kPlan);
  EXPECT_EQ(r.actions, planned_reference);
  EXPECT_TRUE(starts_with(r.status, "wrote ")) << r.status;
  EXPECT_FALSE(r.replayed);
  ASSERT_EQ(plan_files().size(), 1u);
  r = planned_run(model, cache, kPlan);
  EXPECT_EQ(r.actions, planned_reference);
  EXPECT_TRUE(starts_with(r.status, "read ")) << r.status;
  EXPECT_TRUE(r.replayed);
  // A dense plan derives nothing and writes nothing.
  EXPECT_EQ(planned_run(model, cache, R"({"evla_plan": 1})").status, "nothing derived");
  EXPECT_EQ(plan_files().size(), 1u);
}

TEST_F(PlanCacheTest, QuickDerivationsAreNotWritten) {
  const PlannedRun r = planned_run(model, cache, kPlan, /*min_seconds=*/60);
  EXPECT_EQ(r.actions, planned_reference);
  EXPECT_TRUE(starts_with(r.status, "not written: derived in")) << r.status;
  EXPECT_TRUE(plan_files().empty());
}

TEST_F(PlanCacheTest, DamagedOrForeignFilesAreReplaced) {
  planned_run(model, cache, kPlan);
  ASSERT_EQ(plan_files().size(), 1u);
  const std::string file = plan_files()[0].string();
  fs::resize_file(file, fs::file_size(file) / 2);
  PlannedRun r = planned_run(model, cache, kPlan);
  EXPECT_EQ(r.actions, planned_reference);
  EXPECT_TRUE(starts_with(r.status, "wrote ")) << r.status;

  // The right fingerprint but arrays of another layout (one missing, one
  // resized): the compilation notices, derives afresh and replaces the file.
  for (int variant = 0; variant < 2; ++variant) {
    auto f = io::SafetensorsFile::open(file);
    const std::string fingerprint = f->metadata().at("fingerprint");
    io::SafetensorsWriter w;
    for (const auto& [name, t] : f->tensors()) {
      if (variant == 0 && name == f->tensors().rbegin()->first) continue;
      std::vector<int64_t> shape = t.shape;
      if (variant == 1 && name == f->tensors().begin()->first) shape[0] += 64;
      std::vector<uint8_t> zeros(size_t(shape[0]) * io::dtype_size(t.dtype), 0);
      w.add(name, t.dtype, shape, zeros.data(), zeros.size());
    }
    w.set_metadata("fingerprint", fingerprint);
    f.reset();
    w.write(file, 64);
    r = planned_run(model, cache, kPlan);
    EXPECT_EQ(r.actions, planned_reference) << "variant " << variant;
    EXPECT_FALSE(r.replayed);
    EXPECT_TRUE(starts_with(r.status, "wrote ")) << r.status;
    r = planned_run(model, cache, kPlan);
    EXPECT_TRUE(r.replayed) << "variant " << variant << ": " << r.status;
    EXPECT_EQ(r.actions, planned_reference);
  }
}

TEST_F(PlanCacheTest, OnlyTheMostRecentlyUsedPlansAreKept) {
  std::vector<std::string> plans;
  for (int k = 0; k < 10; ++k)
    plans.push_back(R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [)" + std::to_string(k % 3) +
                    R"(], "intermediate_size": 128, "mlp_channels": {"1": [)" + std::to_string(k) + "]}}}");
  for (const std::string& p : plans) planned_run(model, cache, p);
  EXPECT_EQ(plan_files().size(), size_t(PlanCache::kMaxPlanFiles));
  // The newest is still there, the oldest gone.
  EXPECT_TRUE(planned_run(model, cache, plans.back()).replayed);
  EXPECT_FALSE(planned_run(model, cache, plans.front()).replayed);
}

TEST_F(PlanCacheTest, ANewCheckpointStateDropsTheOldPlans) {
  planned_run(model, cache, kPlan);
  ASSERT_EQ(plan_files().size(), 1u);
  write_bf16_model(model, 0.5f);  // rewritten: another state of the same location
  const PlannedRun r = planned_run(model, cache, kPlan);
  EXPECT_FALSE(r.replayed);
  EXPECT_NE(r.actions, planned_reference);
  EXPECT_EQ(plan_files().size(), 1u);  // the old state's plan file removed when the load's cache was rewritten
}

}  // namespace
}  // namespace evla
