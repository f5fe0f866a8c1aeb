// Layer dropping and MLP compression: a plan applied at run time equals the
// PyTorch reference on a physically pruned checkpoint, and `evla prune`
// writes a checkpoint that equals the plan applied at run time.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "accel/prune.h"
#include "io/safetensors.h"
#include "model/model_impl.h"
#include "../model/test_util.h"

namespace evla {
namespace {

// The surgery python/evla_ref/make_fixtures.py performs for dual_gqa_cfg_pruned.
Plan surgery_plan(bool with_runtime_parts) {
  std::string channels;
  for (int c = 0; c < 128; c += 2) channels += (c ? "," : "") + std::to_string(c);
  std::string json = R"({"evla_plan": 1, "name": "surgery", "llm": {"num_layers": 3, "drop_blocks": [1],
      "drop_attention": [2], "intermediate_size": 128, "mlp_channels": {"0": [)" + channels + "]}}";
  if (with_runtime_parts) json += R"(, "tokens": {"keep": 6, "key": 2, "after_layer": 1}, "cache": {"interval": 3})";
  return Plan::from_json(json + "}", "surgery");
}

struct Inputs {
  std::unique_ptr<io::SafetensorsFile> expected;
  Observation obs;
  std::vector<int> ids;
  std::vector<float> noise;
};

Inputs fixture_inputs(const std::string& name) {
  Inputs in;
  in.expected = io::SafetensorsFile::open(test::source_path("tests/fixtures/" + name + "/expected.safetensors"));
  const io::TensorInfo* img = in.expected->find("input.image.0");
  Image im(static_cast<int>(img->shape[1]), static_cast<int>(img->shape[0]));
  std::memcpy(im.rgb.data(), img->data, im.rgb.size());
  in.obs.images.push_back(im);
  const io::TensorInfo* ids = in.expected->find("input.ids");
  for (int64_t i = 0; i < ids->numel(); ++i) {
    int64_t v;
    std::memcpy(&v, ids->data + 8 * i, 8);
    in.ids.push_back(int(v));
  }
  in.noise = io::to_f32(*in.expected->find("input.noise"));
  return in;
}

ActionChunk run(std::shared_ptr<const Model> m, const Plan& plan, Inputs& in, Recorder* trace = nullptr) {
  Policy p(m, PolicyOptions{1});
  p.set_plan(plan);
  in.obs.token_ids = in.ids;
  in.obs.noise = in.noise;
  return p.infer(in.obs, trace);
}

TEST(Prune, PlanAtRunTimeEqualsPyTorchOnPrunedCheckpoint) {
  auto model = Model::load(test::source_path("tests/fixtures/dual_gqa_cfg"));
  Inputs in = fixture_inputs("dual_gqa_cfg_pruned");
  Recorder trace;
  run(model, surgery_plan(false), in, &trace);
  for (const char* name : {"llm.cognition", "dit.eps.0", "actions.normalized", "actions"}) {
    const auto ref = io::to_f32(*in.expected->find(name));
    const auto& got = trace.tensors.at(name);
    EXPECT_LE(test::nmse(got.data(), ref.data(), ref.size()), 1e-6) << name;
  }
}

TEST(Prune, PrunedCheckpointEqualsPlanAtRunTime) {
  auto model = Model::load(test::source_path("tests/fixtures/dual_gqa_cfg"));
  const auto dir = std::filesystem::temp_directory_path() / "evla_prune_test";
  std::filesystem::remove_all(dir);
  for (bool runtime_parts : {false, true}) {
    const Plan plan = surgery_plan(runtime_parts);
    const auto res = accel::prune_model(*model, plan, dir.string());
    EXPECT_EQ(res.layers_after, 2);
    EXPECT_LT(res.params_after, res.params_before);
    EXPECT_EQ(res.residual_plan, runtime_parts);
    auto pruned = Model::load(dir.string());
    const Plan residual = runtime_parts ? Plan::load((dir / "plan.json").string()) : Plan{};
    if (runtime_parts) {
      EXPECT_EQ(residual.tokens.after_layer, 1);
    }
    Inputs in = fixture_inputs("dual_gqa_cfg");
    const ActionChunk a = run(model, plan, in), b = run(pruned, residual, in);
    ASSERT_EQ(a.actions.size(), b.actions.size());
    EXPECT_EQ(0, std::memcmp(a.actions.data(), b.actions.data(), a.actions.size() * sizeof(float)))
        << "runtime_parts=" << runtime_parts;
    EXPECT_LT(pruned->flops().llm, model->flops().llm);
  }
  std::filesystem::remove_all(dir);
}

// Precision cannot be baked into fp32 weights: int8 and BF16 layers go to
// the residual plan, renumbered past the dropped block, with the modules'.
TEST(Prune, PrecisionMovesToTheResidualPlan) {
  auto model = Model::load(test::source_path("tests/fixtures/dual_gqa_cfg"));
  const Plan plan = Plan::from_json(
      R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [1], "int8_layers": [2], "bf16_layers": [0]},
          "precision": {"vision": "bf16"}})", "p");
  const std::string dir = "/tmp/evla_prune_int8_" + std::to_string(::getpid());
  const auto r = accel::prune_model(*model, plan, dir);
  ASSERT_TRUE(r.residual_plan);
  const Plan residual = Plan::load(dir + "/plan.json");
  ASSERT_EQ(residual.llm.size(), 2u);
  EXPECT_EQ(residual.llm[0].weights, WeightType::BF16);
  EXPECT_EQ(residual.llm[1].weights, WeightType::Int8);
  EXPECT_EQ(residual.precision.vision, WeightType::BF16);
  auto pruned = Model::load(dir);
  EXPECT_NO_THROW(pruned->validate(residual));
  std::filesystem::remove_all(dir);
}

TEST(Prune, RejectsDroppingEverything) {
  auto model = Model::load(test::source_path("tests/fixtures/dual_gqa_cfg"));
  const Plan all = Plan::from_json(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [0, 1, 2]}})", "p");
  EXPECT_THROW(accel::prune_model(*model, all, "/tmp/evla_prune_none"), Error);
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// `evla prune -m X -o X` overwrote the source weights and config, then failed.
TEST(Prune, NeverWritesIntoItsInput) {
  test::ModelCopy m("dual_gqa_cfg");
  auto model = Model::load(m.dir.string());
  const std::string weights = file_bytes(m.dir / "model.safetensors"), config = file_bytes(m.dir / "config.json");
  const size_t files = size_t(std::distance(std::filesystem::directory_iterator(m.dir), {}));
  const Plan plan = surgery_plan(true);
  for (const std::string& out : {m.dir.string(), m.dir.string() + "/", m.dir.string() + "/sub", m.dir.string() + "/sub/../.",
                                 (m.dir / "sub" / "deeper").string()}) {
    try {
      accel::prune_model(*model, plan, out);
      ADD_FAILURE() << "accepted " << out;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("choose another"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(out), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(file_bytes(m.dir / "model.safetensors"), weights);
  EXPECT_EQ(file_bytes(m.dir / "config.json"), config);
  EXPECT_EQ(size_t(std::distance(std::filesystem::directory_iterator(m.dir), {})), files);
}

}  // namespace
}  // namespace evla
