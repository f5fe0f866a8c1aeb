// Vision transformer encoder (timm layout: DINOv2 with registers and
// LayerScale, or SigLIP without a class token; or Hugging Face's SigLIP
// layout, as SmolVLM has it). Produces the patch features of block
// `feature_layer`: without the final norm as CogACT uses them, or through it
// (post_norm) as SmolVLM does.
#pragma once
#include <cstdint>
#include <vector>

#include "evla/image.h"
#include "model/config.h"
#include "model/weights.h"

namespace evla {

class ThreadPool;

struct VitBlock {
  const float *norm1_w, *norm1_b, *norm2_w, *norm2_b;
  const float *ls1 = nullptr, *ls2 = nullptr;
  Linear qkv, proj, fc1, fc2;
  // Hugging Face's separate projections when 16-bit: run one after another
  // where they lie (qkv then empty) rather than stacked into an fp32 copy.
  Linear q, k, v;
};

struct VitScratch {
  std::vector<float> pixels, patches, x, h, qkv, attn, mlp, attn_scratch;
};

class Vit {
 public:
  Vit(const VitConfig& cfg, const WeightLoader& w);
  const VitConfig& config() const { return cfg_; }

  // Normalises `img` (already image_size × image_size) and writes the
  // num_patches × hidden_size features to out, rows strided by out_stride.
  void forward(const Image& img, float* out, int out_stride, VitScratch& s, ThreadPool& pool) const;
  // The same from pixels already normalised, [3, image_size, image_size].
  void forward_pixels(const float* chw, float* out, int out_stride, VitScratch& s, ThreadPool& pool) const;
  double flops() const;
  // A copy whose matrix products run at `precision` (set_precision); the
  // BF16 matrices it derives go into `arrays`.
  Vit with_precision(WeightType precision, DerivedArrays& arrays) const;

 private:
  VitConfig cfg_;
  Linear patch_embed_;  // conv as a matrix: [D, 3·P·P]
  const float* pos_embed_;
  const float* cls_token_ = nullptr;
  const float* reg_token_ = nullptr;
  const float *post_norm_w_ = nullptr, *post_norm_b_ = nullptr;
  std::vector<VitBlock> blocks_;  // only up to feature_layer
};

}  // namespace evla
