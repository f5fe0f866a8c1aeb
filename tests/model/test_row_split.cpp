// Row-wise work (norms, activations, residual adds) is split over the pool
// on long sequences (ThreadPool::for_rows). A 224-px-class ViT is long enough.
// Its rows are independent, but OpenBLAS's column slices round differently
// at their edges, so two threads agree with one to rounding (a misplaced row
// range would be off by O(1)).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/vit.h"

namespace evla {
namespace {

TEST(RowSplit, VitFeaturesDoNotDependOnThreads) {
  VitConfig cfg;
  cfg.prefix = "vit";
  cfg.image_size = 112, cfg.patch_size = 8;  // 196 patches + CLS + 4 registers
  cfg.hidden_size = 192, cfg.num_layers = 2, cfg.num_heads = 3, cfg.intermediate_size = 768;
  cfg.class_token = true, cfg.num_registers = 4, cfg.layer_scale = true, cfg.feature_layer = 1;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, P = cfg.patch_size;
  ASSERT_GE((cfg.num_patches() + 5) * D, int64_t(1) << 15) << "too short to exercise the split";

  Rng rng(7);
  std::vector<std::vector<float>> keep;
  io::SafetensorsWriter w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    keep.emplace_back(size_t(n));
    for (float& v : keep.back()) v = scale * float(rng.normal());
    w.add_f32("vit." + name, shape, keep.back().data());
  };
  add("patch_embed.proj.weight", {D, 3, P, P}, 0.07f);
  add("patch_embed.proj.bias", {D}, 0.02f);
  add("pos_embed", {1, cfg.num_patches(), D}, 0.5f);
  add("cls_token", {1, 1, D}, 0.5f);
  add("reg_token", {1, 4, D}, 0.5f);
  for (int b = 0; b < 2; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    for (const char* n : {"norm1", "norm2"}) add(p + n + ".weight", {D}, 1.0f), add(p + n + ".bias", {D}, 0.1f);
    add(p + "ls1.gamma", {D}, 0.3f), add(p + "ls2.gamma", {D}, 0.3f);
    add(p + "attn.qkv.weight", {3 * D, D}, 0.07f), add(p + "attn.qkv.bias", {3 * D}, 0.02f);
    add(p + "attn.proj.weight", {D, D}, 0.07f), add(p + "attn.proj.bias", {D}, 0.02f);
    add(p + "mlp.fc1.weight", {I, D}, 0.07f), add(p + "mlp.fc1.bias", {I}, 0.02f);
    add(p + "mlp.fc2.weight", {D, I}, 0.04f), add(p + "mlp.fc2.bias", {D}, 0.02f);
  }
  const auto dir = std::filesystem::temp_directory_path() / ("evla_row_split_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  w.write((dir / "vit.safetensors").string());
  WeightStore store(io::TensorStore::open_file((dir / "vit.safetensors").string()));
  const Vit vit(cfg, WeightLoader(store, cfg.prefix));

  Image img(cfg.image_size, cfg.image_size);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t(rng.uniform() * 255);
  const size_t n = size_t(cfg.num_patches()) * D;
  std::vector<float> one(n), two(n);
  VitScratch s1, s2;
  ThreadPool p1(1), p2(2);
  vit.forward(img, one.data(), int(D), s1, p1);
  vit.forward(img, two.data(), int(D), s2, p2);
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) err += std::pow(double(one[i]) - two[i], 2), ref += std::pow(double(one[i]), 2);
  EXPECT_GT(ref, 0.0);
  EXPECT_LE(err / ref, 1e-12);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace evla
