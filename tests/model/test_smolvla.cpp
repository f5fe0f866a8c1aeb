// SmolVLA against the PyTorch reference (python/evla_ref/smolvla.py) on a
// small random checkpoint in LeRobot's layout (tests/fixtures/smolvla_tiny,
// written by python/evla_ref/make_smolvla_fixture.py): every stage at
// NMSE ≤ 1e-5 (float32 on both sides; the bound the issue sets).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "evla/evla.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace evla {
namespace {

struct SmolFixture {
  std::shared_ptr<const Model> model;
  std::unique_ptr<io::SafetensorsFile> expected;
  SmolFixture() {
    const std::string dir = test::source_path("tests/fixtures/smolvla_tiny");
    model = Model::load(dir);
    expected = io::SafetensorsFile::open(dir + "/expected.safetensors");
  }
  std::vector<float> f32(const std::string& n) const {
    const io::TensorInfo* t = expected->find(n);
    if (!t) throw std::runtime_error("fixture lacks " + n);
    return io::to_f32(*t);
  }
  Observation observation() const {
    Observation obs;
    obs.images = test::fixture_images(*expected, model->num_images());
    obs.instruction = expected->metadata().at("instruction");
    obs.state = f32("input.state");
    obs.noise = f32("input.noise");
    return obs;
  }
};

TEST(SmolVla, EveryStageMatchesTheReference) {
  SmolFixture fx;
  EXPECT_EQ(fx.model->num_images(), 2);
  EXPECT_EQ(fx.model->action_dim(), 6);
  EXPECT_EQ(fx.model->action_horizon(), 8);
  Policy policy(fx.model, PolicyOptions{1});
  Recorder rec({Stage::PromptIds, Stage::ImagePixels, Stage::Projected, Stage::Prefix, Stage::LlmLayerOutput,
                Stage::FlowVelocity, Stage::Actions});
  const ActionChunk chunk = policy.infer(fx.observation(), &rec);
  // The tokenizer.json gives the reference's ids for "instruction\n".
  const io::TensorInfo* ids = fx.expected->find("input.ids");
  ASSERT_EQ(int64_t(rec.prompt_ids.size()), ids->numel());
  for (size_t i = 0; i < rec.prompt_ids.size(); ++i) {
    int64_t want;
    std::memcpy(&want, ids->data + 8 * i, 8);
    EXPECT_EQ(rec.prompt_ids[i], want);
  }
  int compared = 0;
  for (const auto& [name, got] : rec.tensors) {
    const std::vector<float> want = fx.f32(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    const double e = test::nmse(got.data(), want.data(), want.size());
    std::printf("%-24s NMSE %.2e\n", name.c_str(), e);
    EXPECT_LE(e, 1e-5) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 2 + 1 + 1 + 4 + 4 + 1);  // pixels ×2, tokens, prefix, VLM layers ×4, velocities ×4, actions
  EXPECT_EQ(chunk.actions, rec.tensors.at("actions"));
}

TEST(SmolVla, SeedsAreDeterministicAndBadObservationsAreRefused) {
  SmolFixture fx;
  Policy policy(fx.model, PolicyOptions{1});
  Observation obs = fx.observation();
  obs.noise.clear();
  obs.seed = 5;
  const auto a = policy.infer(obs).actions;
  EXPECT_EQ(policy.infer(obs).actions, a);
  obs.seed = 6;
  EXPECT_NE(policy.infer(obs).actions, a);
  Observation bad = obs;
  bad.images.pop_back();
  EXPECT_THROW(policy.infer(bad), Error);
  bad = obs;
  bad.state.push_back(1.0f);
  EXPECT_THROW(policy.infer(bad), Error);
  bad = obs;
  bad.noise.assign(3, 0.0f);
  EXPECT_THROW(policy.infer(bad), Error);
  bad = obs;
  bad.token_ids = {1, 1u << 20};
  EXPECT_THROW(policy.infer(bad), Error);
  EXPECT_THROW(policy.set_plan(Plan::from_json(R"({"evla_plan": 1, "llm": {"num_layers": 4, "int8_layers": [1]}})", "p")), Error);
}

}  // namespace
}  // namespace evla

namespace evla {
namespace {

// A config or directory that cannot be run is refused with the field named.
TEST(SmolVla, BadConfigsNameWhatIsWrong) {
  auto expect_error = [](const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
    test::ModelCopy copy("smolvla_tiny");
    nlohmann::json cfg = copy.config();
    edit(cfg);
    copy.write_config(cfg);
    try {
      Model::load(copy.dir.string());
      ADD_FAILURE() << "loaded; expected an error naming " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([](auto& c) { c.erase("evla_vlm"), c["vlm_model_name"] = "someone/OtherVLM"; },
               "vlm_model_name: 'someone/OtherVLM' is not known");
  expect_error([](auto& c) { c["resize_imgs_with_padding"] = {128, 64}; }, "resize_imgs_with_padding: [128, 64] differs");
  expect_error([](auto& c) { c["attention_mode"] = "self_attn"; }, "attention_mode: 'self_attn' is not supported");
  expect_error([](auto& c) { c["num_expert_layers"] = 2; }, "num_expert_layers: 2 expert layers for 4 VLM layers");
  expect_error([](auto& c) { c["output_features"]["action"]["shape"] = {9}; }, "action shape must be [n] with n in [1, max_action_dim = 8]");
  expect_error([](auto& c) { c["input_features"].erase("observation.images.camera1"), c["input_features"].erase("observation.images.camera2"); },
               "0 VISUAL features");
  expect_error([](auto& c) { c["evla_vlm"]["text_hidden"] = 72; }, "model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight");
  expect_error([](auto& c) { c["evla_vlm"]["bogus"] = 1; }, "evla_vlm.bogus: unknown key");
  expect_error([](auto& c) { c["chunk_size"] = 0; }, "chunk_size: 0 is not in [1, 1024]");
  expect_error([](auto& c) { c["adapt_to_pi_aloha"] = true; }, "adapt_to_pi_aloha: the Aloha joint and gripper");
  expect_error([](auto& c) { c["rtc_config"] = {{"enabled", true}}; }, "rtc_config: real-time chunking");
  expect_error([](auto& c) { c["normalization_mapping"]["VISUAL"] = "MEAN_STD"; }, "VISUAL: 'MEAN_STD' is not supported");
  // 0: every expert layer cross-attends (as LeRobot reads it), which this
  // checkpoint's self-attention layers do not fit.
  expect_error([](auto& c) { c["self_attn_every_n_layers"] = 0; }, "lm_expert.layers.0.self_attn.k_proj.weight");
  // Missing tokenizer: named, with where it comes from.
  test::ModelCopy copy("smolvla_tiny");
  std::filesystem::remove(copy.dir / "tokenizer.json");
  try {
    Model::load(copy.dir.string());
    ADD_FAILURE() << "loaded without its tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: missing"), std::string::npos) << e.what();
  }
}

// normalization_mapping IDENTITY leaves the actions as sampled; without
// resize_imgs_with_padding images must come at the tower's size; newer
// LeRobot keeps the tokenizer in tokenizer/.
TEST(SmolVla, IdentityNormalisationNoResizeAndTheTokenizerFolder) {
  SmolFixture fx;
  Observation obs = fx.observation();
  const std::vector<float> scaled = Policy(fx.model, PolicyOptions{1}).infer(obs).actions;
  test::ModelCopy copy("smolvla_tiny");
  nlohmann::json cfg = copy.config();
  cfg["normalization_mapping"]["ACTION"] = "IDENTITY";
  cfg["resize_imgs_with_padding"] = nullptr;
  copy.write_config(cfg);
  std::filesystem::create_directories(copy.dir / "tokenizer");
  std::filesystem::rename(copy.dir / "tokenizer.json", copy.dir / "tokenizer" / "tokenizer.json");
  auto m = Model::load(copy.dir.string());
  Policy p(m, PolicyOptions{1});
  EXPECT_THROW(p.infer(obs), Error);  // 80 × 48 and 96 × 96 images, no resize
  for (Image& img : obs.images) img = Image(64, 64);
  const std::vector<float> raw = p.infer(obs).actions;
  const std::vector<float> scaled_same_images = Policy(fx.model, PolicyOptions{1}).infer(obs).actions;
  auto pre = io::SafetensorsFile::open(
      (copy.dir / "policy_postprocessor_step_0_unnormalizer_processor.safetensors").string());
  const std::vector<float> mean = io::to_f32(*pre->find("action.mean")), std = io::to_f32(*pre->find("action.std"));
  for (size_t i = 0; i < raw.size(); ++i)
    EXPECT_NEAR(raw[i] * std[i % 6] + mean[i % 6], scaled_same_images[i], 1e-5) << i;
  EXPECT_NE(raw, scaled);
}

// The older LeRobot layout keeps the statistics inside model.safetensors.
TEST(SmolVla, StatisticsFromTheOlderLayoutGiveTheSameActions) {
  SmolFixture fx;
  Policy a(fx.model, PolicyOptions{1});
  const std::vector<float> want = a.infer(fx.observation()).actions;
  test::ModelCopy copy("smolvla_tiny");
  auto pre = io::SafetensorsFile::open((copy.dir / "policy_preprocessor_step_5_normalizer_processor.safetensors").string());
  auto weights = io::SafetensorsFile::open((copy.dir / "model.safetensors").string());
  io::SafetensorsWriter w;
  for (const auto& [name, t] : weights->tensors()) w.add(name, t.dtype, t.shape, t.data, t.nbytes);
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"observation.state", "normalize_inputs.buffer_observation_state"},
           {"action", "unnormalize_outputs.buffer_action"}})
    for (const char* stat : {".mean", ".std"}) {
      const io::TensorInfo* t = pre->find(from + stat);
      w.add(to + stat, t->dtype, t->shape, t->data, t->nbytes);
    }
  weights.reset();
  w.write((copy.dir / "model.safetensors").string());
  for (const char* f : {"policy_preprocessor.json", "policy_postprocessor.json"}) std::filesystem::remove(copy.dir / f);
  Policy b(Model::load(copy.dir.string()), PolicyOptions{1});
  EXPECT_EQ(b.infer(fx.observation()).actions, want);
}

}  // namespace
}  // namespace evla
