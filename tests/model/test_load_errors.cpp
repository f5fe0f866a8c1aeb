// Bad model directories and bad observations give errors that name the
// problem; nothing aborts.
#include <gtest/gtest.h>

#include <filesystem>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "evla/evla.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace evla {
namespace {

namespace fs = std::filesystem;

using test::ModelCopy;

std::string load_error(const fs::path& dir) {
  try {
    Model::load(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& msg, const std::string& needle) {
  EXPECT_NE(msg.find(needle), std::string::npos) << "'" << msg << "' lacks '" << needle << "'";
}

TEST(LoadErrors, ConfigProblemsNameTheKey) {
  ModelCopy m("dual_gqa_cfg");
  auto good = m.config();
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string needle;
  };
  std::vector<Case> cases = {
      {[](auto& j) { j["llm"].erase("hidden_size"); }, "llm.hidden_size: missing required key"},
      {[](auto& j) { j["llm"]["num_hidden_layers"] = "3"; }, "llm.num_hidden_layers: expected an integer"},
      {[](auto& j) { j["llm"]["num_key_value_heads"] = 3; }, "llm.num_key_value_heads"},
      {[](auto& j) { j["action_head"]["cond_dim"] = 7; }, "action_head.cond_dim: must equal llm.hidden_size"},
      {[](auto& j) { j["action_head"]["sample_steps"] = 60; }, "action_head.sample_steps"},
      {[](auto& j) { j["action_head"]["n_action_steps"] = 0; }, "action_head.n_action_steps: must be between 1"},
      {[](auto& j) { j["action_head"]["n_action_steps"] = 99; }, "action_head.n_action_steps: must be between 1"},
      {[](auto& j) { j["action_head"]["noise_scale"] = -0.5; }, "action_head.noise_scale: must be between 0 and 10"},
      {[](auto& j) { j["action_head"]["noise_scale"] = "low"; }, "action_head.noise_scale"},
      {[](auto& j) { j["vision"]["encoders"][0]["feature_layer"] = 9; }, "vision.encoders[0].feature_layer"},
      {[](auto& j) { j["vision"]["encoders"][1]["patch_size"] = 16; }, "vision.encoders: both encoders must see the same image_size and patch grid"},
      {[](auto& j) { j["action_normalization"]["q01"] = {0.0}; }, "action_normalization.q01"},
      {[](auto& j) { j["evla_format"] = 9; }, "evla_format"},
      {[](auto& j) { j["prompt"]["template"] = "no slot"; }, "prompt.template"},
      // Checked at load, also when the id is a default (no prompt block).
      {[](auto& j) { j["prompt"]["cognition_token_id"] = 999999; }, "prompt.cognition_token_id: outside the vocabulary"},
      {[](auto& j) { j.erase("prompt"); }, "prompt.space_token_id: outside the vocabulary of 256: 29871 (the default, for a Llama-2 tokenizer; set it, or -1 for none)"},
      {[](auto& j) { j["llm"]["bos_token_id"] = -4; }, "llm.bos_token_id: outside the vocabulary"},
      // Wider than int: an error, not a silent wrap to a valid-looking value.
      {[](auto& j) { j["vision"]["num_images"] = 4294967297LL; }, "vision.num_images: integer out of range"},
      // Numbers that would give NaN actions, and sizes whose products overflow or exhaust memory.
      {[](auto& j) { j["llm"]["rms_norm_eps"] = -1; }, "llm.rms_norm_eps: must be a finite number in [1e-30, 1], got -1"},
      {[](auto& j) { j["llm"]["rms_norm_eps"] = 1e300; }, "llm.rms_norm_eps: must be a finite number"},
      {[](auto& j) { j["vision"]["encoders"][0]["norm_eps"] = 0; }, "vision.encoders[0].norm_eps: must be a finite number"},
      {[](auto& j) { j["action_head"]["cfg_scale"] = 1e39; }, "action_head.cfg_scale: must be a finite number"},
      {[](auto& j) { j["action_normalization"]["q99"][0] = 1e39; }, "action_normalization.q99: entries must be finite"},
      {[](auto& j) { j["vision"]["encoders"][0]["image_mean"] = {0.5, 1e39, 0.5}; }, "vision.encoders[0].image_mean: entries must be finite"},
      {[](auto& j) { j["vision"]["encoders"][0]["image_size"] = 1000000; }, "vision.encoders[0].image_size: must be at most 4096, got 1000000"},
      {[](auto& j) {
         for (auto& e : j["vision"]["encoders"]) e["image_size"] = 4096, e["patch_size"] = 1;
       }, "vision.encoders[0].image_size: (image_size / patch_size)² tokens × intermediate_size would exceed 2^31 elements"},
      {[](auto& j) { j["action_head"]["train_steps"] = 1000000000; }, "action_head.train_steps: must be at most 100000"},
      {[](auto& j) { j["llm"]["vocab_size"] = 1 << 24, j["llm"]["hidden_size"] = 65536; }, "llm.vocab_size: the embedding"},
      {[](auto& j) { j["llm"]["max_position_embeddings"] = 0; }, "llm.max_position_embeddings: must be positive"},
  };
  for (auto& c : cases) {
    auto j = good;
    c.edit(j);
    m.write_config(j);
    expect_contains(load_error(m.dir), c.needle);
  }
  std::ofstream(m.dir / "config.json") << "{ not json";
  expect_contains(load_error(m.dir), "config.json is not valid JSON");
  // A million nested arrays overflowed the stack while the config was copied.
  std::ofstream(m.dir / "config.json") << "{\"llm\": " << std::string(1000000, '[') << std::string(1000000, ']') << "}";
  expect_contains(load_error(m.dir), "config.json nests deeper than 32 levels");
}

TEST(LoadErrors, WeightProblemsNameTheTensor) {
  ModelCopy m("dual_gqa_cfg");
  auto j = m.config();
  j["llm"]["intermediate_size"] = 130;  // the checkpoint's MLPs are 128 wide
  m.write_config(j);
  const std::string msg = load_error(m.dir);
  expect_contains(msg, "mlp.gate_proj.weight");
  expect_contains(msg, "[130, 64]");

  // A missing tensor is named with the directory.
  ModelCopy n("dual_gqa_cfg");
  auto st = io::SafetensorsFile::open((n.dir / "model.safetensors").string());
  io::SafetensorsWriter w;
  for (const auto& [name, t] : st->tensors())
    if (name != "action_model.net.final_layer.linear.bias") w.add(name, t.dtype, t.shape, t.data, t.nbytes);
  st.reset();
  w.write((n.dir / "model.safetensors").string());
  expect_contains(load_error(n.dir), "action_model.net.final_layer.linear.bias");
}

TEST(LoadErrors, CorruptWeightFileAndMissingFiles) {
  ModelCopy m("dual_gqa_cfg");
  fs::resize_file(m.dir / "model.safetensors", 1000);
  expect_contains(load_error(m.dir), "model.safetensors");
  fs::remove(m.dir / "model.safetensors");
  EXPECT_FALSE(load_error(m.dir).empty());
  ModelCopy t("dual_gqa_cfg");
  fs::remove(t.dir / "tokenizer.model");
  expect_contains(load_error(t.dir), "tokenizer.model");
  EXPECT_FALSE(load_error("/nonexistent/model").empty());
}

TEST(LoadErrors, BadObservations) {
  auto model = Model::load(test::source_path("tests/fixtures/single_mha_nocfg"));
  Policy p(model, PolicyOptions{1});
  Observation obs;
  obs.instruction = "pick up the can";
  obs.images = {Image(28, 28)};
  obs.state.assign(5, 0.f);
  EXPECT_THROW(p.infer(obs), Error);  // needs 2 images
  obs.images.push_back(Image(40, 30));  // resized, fine
  EXPECT_NO_THROW(p.infer(obs));
  obs.state.pop_back();
  EXPECT_THROW(p.infer(obs), Error);  // state too short
  obs.state.push_back(0.f);
  obs.images[1].rgb.resize(5);
  EXPECT_THROW(p.infer(obs), Error);  // malformed pixel buffer
}

std::string infer_error(Policy& p, const Observation& obs) {
  try {
    p.infer(obs);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// An observation the two-camera, 5-dim-state fixture accepts.
Observation two_camera_obs() {
  Observation obs;
  obs.instruction = "pick up the can";
  obs.images = {Image(28, 28), Image(28, 28)};
  obs.state.assign(5, 0.f);
  return obs;
}

// `run --state nan,0,0,0` gave NaN actions with exit 0.
TEST(LoadErrors, NonFiniteStateIsNamed) {
  auto model = Model::load(test::source_path("tests/fixtures/single_mha_nocfg"));
  Policy p(model, PolicyOptions{1});
  Observation obs = two_camera_obs();
  EXPECT_EQ(infer_error(p, obs), "");
  obs.state[3] = std::nanf("");
  expect_contains(infer_error(p, obs), "observation state[3] is nan, not a finite number");
  obs.state[3] = -INFINITY;
  expect_contains(infer_error(p, obs), "observation state[3] is -inf");
}

// A 100 KB prompt took 47 s and gigabytes; the model's maximum bounds it.
TEST(LoadErrors, PromptsLongerThanTheModelsMaximumAreRefused) {
  ModelCopy m("single_mha_nocfg");
  auto j = m.config();
  j["llm"]["max_position_embeddings"] = 64;
  m.write_config(j);
  auto model = Model::load(m.dir.string());
  Policy p(model, PolicyOptions{1});
  Observation obs;
  obs.images = {Image(28, 28), Image(28, 28)};
  obs.state.assign(5, 0.f);
  obs.instruction = "pick up the can";
  EXPECT_EQ(infer_error(p, obs), "");
  for (int i = 0; i < 10; ++i) obs.instruction += " and then pick up the can";
  expect_contains(infer_error(p, obs), "more than the model's llm.max_position_embeddings (64)");
}

// NaN weights gave NaN actions with exit 0; they are an error, never a result.
TEST(LoadErrors, NonFiniteActionsAreAnError) {
  ModelCopy m("single_mha_nocfg");
  {
    auto st = io::SafetensorsFile::open((m.dir / "model.safetensors").string());
    io::SafetensorsWriter w;
    std::vector<std::vector<uint8_t>> keep;
    for (const auto& [name, t] : st->tensors()) {
      if (name.find("final_layer.linear.bias") != std::string::npos) {
        ASSERT_EQ(t.dtype, io::DType::F32);
        std::vector<float> nan(size_t(t.numel()), std::nanf(""));
        keep.emplace_back(reinterpret_cast<uint8_t*>(nan.data()), reinterpret_cast<uint8_t*>(nan.data() + nan.size()));
        w.add(name, t.dtype, t.shape, keep.back().data(), keep.back().size());
      } else {
        w.add(name, t.dtype, t.shape, t.data, t.nbytes);
      }
    }
    ASSERT_EQ(keep.size(), 1u);
    w.write((m.dir / "model.safetensors.new").string());
    st.reset();
    fs::rename(m.dir / "model.safetensors.new", m.dir / "model.safetensors");
  }
  auto model = Model::load(m.dir.string());
  Policy p(model, PolicyOptions{1});
  Observation obs = two_camera_obs();
  expect_contains(infer_error(p, obs), "the policy produced a non-finite action (step 0, dimension 0 is nan)");
}

}  // namespace
}  // namespace evla
