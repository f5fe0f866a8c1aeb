// The C++ runtime against the PyTorch reference (python/evla_ref): every
// intermediate of the fixture cases must match with NMSE ≤ 1e-6.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "io/safetensors.h"
#include "model/model_impl.h"
#include "test_util.h"

namespace evla {
namespace {

struct Fixture {
  std::unique_ptr<io::SafetensorsFile> expected;
  std::shared_ptr<const Model> model;

  explicit Fixture(const std::string& name) {
    const std::string dir = test::source_path("tests/fixtures/" + name);
    model = Model::load(dir);
    expected = io::SafetensorsFile::open(dir + "/expected.safetensors");
  }
  std::vector<float> f32(const std::string& n) const {
    const io::TensorInfo* t = expected->find(n);
    if (!t) throw std::runtime_error("fixture lacks " + n);
    return io::to_f32(*t);
  }
  std::vector<int> ids() const {
    const io::TensorInfo* t = expected->find("input.ids");
    std::vector<int> out(size_t(t->numel()));
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, t->data + 8 * i, 8);
      out[i] = int(v);
    }
    return out;
  }
  Observation observation() const {
    Observation obs;
    for (int k = 0; k < model->num_images(); ++k) {
      const io::TensorInfo* t = expected->find("input.image." + std::to_string(k));
      Image img(int(t->shape[1]), int(t->shape[0]));
      std::memcpy(img.rgb.data(), t->data, img.rgb.size());
      obs.images.push_back(img);
    }
    obs.instruction = expected->metadata().at("instruction");
    if (model->state_dim() > 0) obs.state = f32("input.state");
    return obs;
  }
};

// noise_scale s starts the sampler from s · noise: the same bits as the
// unscaled model given s · noise (which the reference checks above cover).
TEST(NoiseScale, ScalesTheStartingNoise) {
  Fixture fx("dual_gqa_cfg");
  test::ModelCopy copy("dual_gqa_cfg");
  nlohmann::json cfg = copy.config();
  cfg["action_head"]["noise_scale"] = 0.37;
  copy.write_config(cfg);
  std::vector<float> noise = fx.f32("input.noise"), scaled = noise;
  for (float& v : scaled) v *= 0.37f;

  Policy plain(fx.model, PolicyOptions{1});
  Observation obs = fx.observation();
  obs.noise = scaled;
  const ActionChunk want = plain.infer(obs);
  Policy cooled(Model::load(copy.dir.string()), PolicyOptions{1});
  obs.noise = noise;
  const ActionChunk got = cooled.infer(obs);
  EXPECT_EQ(got.actions, want.actions);
  EXPECT_NE(plain.infer(obs).actions, want.actions);  // the scale matters
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, EveryStageMatchesPyTorch) {
  Fixture fx(GetParam());
  Policy policy(fx.model, PolicyOptions{2});
  Trace trace;
  policy.state().trace = &trace;
  Observation obs = fx.observation();
  obs.noise = fx.f32("input.noise");
  ActionChunk chunk = policy.infer(obs);

  // The tokenizer (libsentencepiece) must give the reference's prompt ids.
  EXPECT_EQ(policy.state().ids, fx.ids());

  int compared = 0;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, info] : fx.expected->tensors()) {
    if (name.rfind("input.", 0) == 0) continue;
    ASSERT_TRUE(trace.tensors.count(name)) << "runtime did not produce " << name;
    const std::vector<float> ref = io::to_f32(info);
    const std::vector<float>& got = trace.tensors.at(name);
    ASSERT_EQ(got.size(), ref.size()) << name;
    const double e = test::nmse(got.data(), ref.data(), ref.size());
    EXPECT_LE(e, 1e-6) << name << " NMSE " << e;
    if (e >= worst) worst = e, worst_name = name;
    ++compared;
  }
  std::printf("%s: %d tensors compared, worst NMSE %.2e (%s)\n", GetParam().c_str(), compared,
              worst, worst_name.c_str());
  EXPECT_GE(compared, 10);
  const std::vector<float> ref = fx.f32("actions");
  EXPECT_LE(test::nmse(chunk.actions.data(), ref.data(), ref.size()), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Parity, ::testing::Values("dual_gqa_cfg", "single_mha_nocfg", "sim_random",
                                           "dual_gqa_cfg_pruned"));

TEST(Determinism, SameSeedSameThreadsBitIdentical) {
  Fixture fx("dual_gqa_cfg");
  Observation obs = fx.observation();
  obs.seed = 1234;
  Policy a(fx.model, PolicyOptions{2}), b(fx.model, PolicyOptions{2});
  const ActionChunk x = a.infer(obs), y = b.infer(obs), z = a.infer(obs);
  EXPECT_EQ(0, std::memcmp(x.actions.data(), y.actions.data(), sizeof(float) * x.actions.size()));
  EXPECT_EQ(0, std::memcmp(x.actions.data(), z.actions.data(), sizeof(float) * x.actions.size()));
  obs.seed = 1235;
  const ActionChunk w = a.infer(obs);
  EXPECT_NE(0, std::memcmp(x.actions.data(), w.actions.data(), sizeof(float) * x.actions.size()));
}

}  // namespace
}  // namespace evla
