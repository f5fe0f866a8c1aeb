// 16-bit checkpoints: their matrices are used where they lie (no fp32 copy of
// any matrix). Under fp32 precision the model computes what an fp32 model
// holding the same (already rounded) values computes, dense and under plans;
// as stored, bfloat16 runs BF16 products, as a BF16 plan on the fp32 model does.
#include <gtest/gtest.h>

#include "evla/evla.h"
#include "io/dtype_convert.h"
#include "io/safetensors.h"
#include "model/model_impl.h"
#include "test_util.h"

namespace evla {
namespace {

// A scratch copy of the fixture whose weights are rounded to `dtype`, stored
// as `dtype` or as F32.
struct RoundedCopy {
  std::filesystem::path dir;
  RoundedCopy(io::DType dtype, bool store_f32) {
    dir = std::filesystem::temp_directory_path() /
          ("evla_test_weights16_" + std::to_string(::getpid()) + "_" + io::dtype_name(dtype) + (store_f32 ? "_f32" : ""));
    std::filesystem::remove_all(dir);
    std::filesystem::copy(test::source_path("tests/fixtures/dual_gqa_cfg"), dir);
    write_rounded(dtype, store_f32);
  }
  ~RoundedCopy() { std::filesystem::remove_all(dir); }
  void write_rounded(io::DType dtype, bool store_f32) const;
};

void RoundedCopy::write_rounded(io::DType dtype, bool store_f32) const {
  const auto src = io::TensorStore::open_dir(test::source_path("tests/fixtures/dual_gqa_cfg"));
  io::SafetensorsWriter w;
  for (const std::string& name : src.names()) {
    const io::TensorInfo& t = src.get(name);
    std::vector<float> v = io::to_f32(t);
    std::vector<uint16_t> h(v.size());
    io::convert_elements(io::DType::F32, reinterpret_cast<const uint8_t*>(v.data()), dtype,
                         reinterpret_cast<uint8_t*>(h.data()), v.size());
    if (store_f32) {
      io::convert_elements(dtype, reinterpret_cast<const uint8_t*>(h.data()), io::DType::F32,
                           reinterpret_cast<uint8_t*>(v.data()), v.size());
      w.add_f32(name, t.shape, v.data());
    } else {
      w.add(name, dtype, t.shape, h.data(), h.size() * 2);
    }
  }
  w.write((dir / "model.safetensors").string());
}

Observation obs() {
  Observation o;
  o.images.push_back(load_image(test::source_path("models/evla-tiny-random/example.png")));
  o.instruction = "pick up the red block";
  o.seed = 5;
  o.state.assign(5, 0.25f);
  return o;
}

class Weights16 : public ::testing::TestWithParam<io::DType> {};

TEST_P(Weights16, MatricesStayInPlaceAndComputeAsFp32) {
  const io::DType dtype = GetParam();
  const RoundedCopy sixteen(dtype, false), f32(dtype, true);
  LoadOptions lo;
  lo.weight_cache_dir = "";
  auto m16 = Model::load(sixteen.dir.string(), lo), m32 = Model::load(f32.dir.string(), lo);

  // Every matrix of the 16-bit model points into the mapped file; none has an
  // fp32 copy. Bfloat16 ones run as BF16 products unless a plan says fp32.
  const ModelImpl& im = m16->impl();
  const bool bf16 = dtype == io::DType::BF16;
  auto in_place = [&](const Linear& L, const std::string& what) {
    EXPECT_EQ(L.w, nullptr) << what;
    EXPECT_NE(L.w16, nullptr) << what;
    EXPECT_EQ(L.w16_bf16, bf16) << what;
    EXPECT_EQ(L.bf16_dot, bf16) << what;
  };
  for (size_t i = 0; i < im.llm->layers().size(); ++i) {
    const LlamaLayer& L = im.llm->layers()[i];
    for (const Linear* p : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
      in_place(*p, "llm layer " + std::to_string(i));
  }
  EXPECT_EQ(m16->num_params(), m32->num_params());

  // Under fp32 precision everywhere, the 16-bit model computes what the fp32
  // one holding the same values does.
  const std::string fp32 = R"("precision": {"vision": "fp32", "projector": "fp32", "llm": "fp32", "action_head": "fp32"})";
  for (const std::string& plan : {R"({"evla_plan": 1, )" + fp32 + "}",
                                 R"({"evla_plan": 1, )" + fp32 + R"(, "llm": {"num_layers": 3, "int8_layers": [0, 2],
                                     "intermediate_size": 128, "mlp_channels": {"1": [0, 3, 7, 64, 100, 127]}}})"}) {
    SCOPED_TRACE(plan);
    const bool compacts = plan.find("mlp_channels") != std::string::npos;
    Policy p16(m16, PolicyOptions{1}), p32(m32, PolicyOptions{1});
    p16.set_plan(Plan::from_json(plan, "p"));
    p32.set_plan(Plan::from_json(plan, "p"));
    const ActionChunk a = p16.infer(obs()), b = p32.infer(obs());
    // Compacted MLPs of a 16-bit layer stay 16-bit.
    const PlannedModel& pm = *p16.state().planned;
    EXPECT_EQ(pm.derived->count_of<uint16_t>() > 0, compacts);
    EXPECT_NE(pm.llm_layers[1].gate.w16, nullptr);
    EXPECT_FALSE(pm.llm_layers[1].gate.bf16_dot);
    EXPECT_LE(test::nmse(a.actions.data(), b.actions.data(), a.actions.size()), 1e-10);
    EXPECT_LE(test::nmse(p16.cognition().data(), p32.cognition().data(), p16.cognition().size()), 1e-10);
  }

  // As stored: IEEE half is widened (the same as fp32); bfloat16 runs BF16
  // products, whose rounded activations move the result a little, and exactly
  // as the fp32 model under a BF16 plan does (up to the order of the sums).
  const std::string bf16_plan =
      R"({"evla_plan": 1, "precision": {"vision": "bf16", "projector": "bf16", "llm": "bf16", "action_head": "bf16"}})";
  Policy p16(m16, PolicyOptions{1}), p32(m32, PolicyOptions{1}), p32b(m32, PolicyOptions{1});
  p32b.set_plan(Plan::from_json(bf16_plan, "p"));
  const ActionChunk a = p16.infer(obs()), b = p32.infer(obs()), c = p32b.infer(obs());
  const double moved = test::nmse(p16.cognition().data(), p32.cognition().data(), p16.cognition().size());
  if (bf16) {
    EXPECT_GT(moved, 0.0);
    EXPECT_LE(moved, 1e-3);
    EXPECT_LE(test::nmse(p16.cognition().data(), p32b.cognition().data(), p16.cognition().size()), 1e-10);
    EXPECT_LE(test::nmse(a.actions.data(), c.actions.data(), a.actions.size()), 1e-10);
    // The fp32 model's BF16 plan derives bfloat16 copies; the bfloat16 model's needs none.
    EXPECT_GT(p32b.state().planned->derived->count_of<uint16_t>(), 0u);
    p16.set_plan(Plan::from_json(bf16_plan, "p"));
    EXPECT_EQ(p16.state().planned->derived->count_of<uint16_t>(), 0u);
  } else {
    EXPECT_LE(moved, 1e-10);
    EXPECT_LE(test::nmse(a.actions.data(), b.actions.data(), a.actions.size()), 1e-10);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, Weights16, ::testing::Values(io::DType::BF16, io::DType::F16),
                         [](const auto& info) { return std::string(io::dtype_name(info.param)); });

}  // namespace
}  // namespace evla
