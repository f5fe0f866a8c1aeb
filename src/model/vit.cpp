#include "model/vit.h"

#include <cmath>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace evla {

namespace {

// Hugging Face's separate q, k, v projections: 16-bit ones kept apart in
// `blk` (run where they lie), others stacked into one [3D, D] matrix with its
// bias, derived at load (and packed where that is faster).
Linear fused_qkv(const WeightLoader& a, int D, VitBlock& blk) {
  const Linear q = a.linear("q_proj", D, D, true, false), k = a.linear("k_proj", D, D, true, false),
               v = a.linear("v_proj", D, D, true, false);
  if (q.w16 && k.w16 && v.w16) {
    blk.q = a.linear("q_proj", D, D), blk.k = a.linear("k_proj", D, D), blk.v = a.linear("v_proj", D, D);
    return Linear{nullptr, nullptr, D, 3 * D};
  }
  WeightStore& st = a.store();
  const std::string key = a.name("qkv_proj");
  const size_t DD = size_t(D) * D;
  Linear f{nullptr, nullptr, D, 3 * D};
  f.w = st.derived("fused:" + key + ".weight", 3 * DD, [&](float* p) {
    weight_rows(q, 0, D, p);
    weight_rows(k, 0, D, p + DD);
    weight_rows(v, 0, D, p + 2 * DD);
  });
  f.b = st.derived("fused:" + key + ".bias", size_t(3) * D, [&](float* p) {
    std::memcpy(p, q.b, sizeof(float) * D);
    std::memcpy(p + D, k.b, sizeof(float) * D);
    std::memcpy(p + 2 * D, v.b, sizeof(float) * D);
  });
  if (kernels::prefer_packed(3 * D, D))
    f.packed = st.derived("packed:" + key, kernels::packed_floats(3 * D, D),
                          [&](float* p) { kernels::pack_weights(f.w, 3 * D, D, p); });
  return f;
}

}  // namespace

Vit::Vit(const VitConfig& cfg, const WeightLoader& w) : cfg_(cfg) {
  const int D = cfg.hidden_size, P = cfg.patch_size;
  if (cfg.hf_layout) {
    patch_embed_ = w.matrix("embeddings.patch_embedding.weight", {D, 3, P, P}, "embeddings.patch_embedding.bias");
    pos_embed_ = w.get("embeddings.position_embedding.weight", {cfg.num_patches(), D});
    for (int i = 0; i <= cfg.feature_layer; ++i) {
      WeightLoader b = w.pp("encoder.layers").pp(i);
      VitBlock blk;
      blk.norm1_w = b.get("layer_norm1.weight", {D});
      blk.norm1_b = b.get("layer_norm1.bias", {D});
      blk.norm2_w = b.get("layer_norm2.weight", {D});
      blk.norm2_b = b.get("layer_norm2.bias", {D});
      blk.qkv = fused_qkv(b.pp("self_attn"), D, blk);
      blk.proj = b.linear("self_attn.out_proj", D, D);
      blk.fc1 = b.linear("mlp.fc1", cfg.intermediate_size, D);
      blk.fc2 = b.linear("mlp.fc2", D, cfg.intermediate_size);
      blocks_.push_back(blk);
    }
    if (cfg.post_norm) {
      post_norm_w_ = w.get("post_layernorm.weight", {D});
      post_norm_b_ = w.get("post_layernorm.bias", {D});
    }
    return;
  }
  patch_embed_ = w.matrix("patch_embed.proj.weight", {D, 3, P, P}, "patch_embed.proj.bias");
  pos_embed_ = w.get("pos_embed", {1, cfg.num_patches(), D});
  if (cfg.class_token) cls_token_ = w.get("cls_token", {1, 1, D});
  if (cfg.num_registers > 0) reg_token_ = w.get("reg_token", {1, cfg.num_registers, D});
  for (int i = 0; i <= cfg.feature_layer; ++i) {
    WeightLoader b = w.pp("blocks").pp(i);
    VitBlock blk;
    blk.norm1_w = b.get("norm1.weight", {D});
    blk.norm1_b = b.get("norm1.bias", {D});
    blk.norm2_w = b.get("norm2.weight", {D});
    blk.norm2_b = b.get("norm2.bias", {D});
    if (cfg.layer_scale) {
      blk.ls1 = b.get("ls1.gamma", {D});
      blk.ls2 = b.get("ls2.gamma", {D});
    }
    blk.qkv = b.linear("attn.qkv", 3 * D, D);
    blk.proj = b.linear("attn.proj", D, D);
    blk.fc1 = b.linear("mlp.fc1", cfg.intermediate_size, D);
    blk.fc2 = b.linear("mlp.fc2", D, cfg.intermediate_size);
    blocks_.push_back(blk);
  }
}

double Vit::flops() const {
  const double T = cfg_.num_patches() + cfg_.num_prefix_tokens();
  const double D = cfg_.hidden_size, I = cfg_.intermediate_size;
  const double patch = 2.0 * cfg_.num_patches() * D * 3 * cfg_.patch_size * cfg_.patch_size;
  const double per_block = 2.0 * T * D * (3 * D + D + 2 * I) + 4.0 * T * T * D;
  return patch + per_block * blocks_.size();
}

void Vit::forward(const Image& img, float* out, int out_stride, VitScratch& s,
                  ThreadPool& pool) const {
  const int S = cfg_.image_size;
  s.pixels.resize(size_t(3) * S * S);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x)
        s.pixels[(size_t(c) * S + y) * S + x] = (img.pixel(x, y)[c] / 255.0f - cfg_.image_mean[c]) / cfg_.image_std[c];
  forward_pixels(s.pixels.data(), out, out_stride, s, pool);
}

void Vit::forward_pixels(const float* chw, float* out, int out_stride, VitScratch& s, ThreadPool& pool) const {
  const int P = cfg_.patch_size, G = cfg_.grid(), D = cfg_.hidden_size, S = cfg_.image_size;
  const int N = cfg_.num_patches(), prefix = cfg_.num_prefix_tokens(), T = N + prefix;
  const int H = cfg_.num_heads, hd = D / H, I = cfg_.intermediate_size;

  // Patches as rows of (channel, ky, kx), the order of the conv weight.
  s.patches.resize(size_t(N) * 3 * P * P);
  for (int gy = 0; gy < G; ++gy)
    for (int gx = 0; gx < G; ++gx) {
      float* row = &s.patches[(size_t(gy) * G + gx) * 3 * P * P];
      for (int c = 0; c < 3; ++c)
        for (int ky = 0; ky < P; ++ky)
          std::memcpy(row + (c * P + ky) * P, chw + (size_t(c) * S + gy * P + ky) * S + gx * P, sizeof(float) * P);
    }

  // Tokens: [CLS, registers, patches + pos_embed].
  s.x.resize(size_t(T) * D);
  float* x = s.x.data();
  if (cls_token_) std::memcpy(x, cls_token_, sizeof(float) * D);
  if (reg_token_)
    std::memcpy(x + size_t(cls_token_ ? 1 : 0) * D, reg_token_, sizeof(float) * cfg_.num_registers * D);
  float* xp = x + size_t(prefix) * D;
  apply_linear(pool, patch_embed_, s.patches.data(), patch_embed_.in, N, xp, D);
  kernels::add(xp, pos_embed_, size_t(N) * D);

  s.h.resize(size_t(T) * D);
  s.qkv.resize(size_t(T) * 3 * D);
  s.attn.resize(size_t(T) * D);
  const int ldm = kernels::unaliased_stride(I);
  s.mlp.resize(size_t(T) * ldm);
  s.attn_scratch.resize(kernels::attention_scratch_floats(pool, T, T));
  kernels::AttentionShape attn_shape{T, T, H, H, hd, 3 * D, 3 * D, 3 * D, D};
  attn_shape.scale = 1.0f / std::sqrt(float(hd));

  // Row-wise steps go through pool.for_rows: split on long sequences (224-px
  // towers), on the caller for the benchmark model's 64-patch images.
  auto residual = [&](const float* scale) {
    pool.for_rows(T, D, [&](int r0, int r1) {
      float* xr = x + size_t(r0) * D;
      const float* hr = s.h.data() + size_t(r0) * D;
      if (scale) kernels::add_scaled(xr, hr, scale, r1 - r0, D);
      else kernels::add(xr, hr, size_t(r1 - r0) * D);
    });
  };
  auto norm = [&](const float* w, const float* bias) {
    pool.for_rows(T, D, [&](int r0, int r1) {
      kernels::layer_norm(x + size_t(r0) * D, r1 - r0, D, w, bias, cfg_.norm_eps, s.h.data() + size_t(r0) * D);
    });
  };
  for (const VitBlock& b : blocks_) {
    norm(b.norm1_w, b.norm1_b);
    apply_fused(pool, b.qkv, {&b.q, &b.k, &b.v}, s.h.data(), D, T, s.qkv.data(), 3 * D);
    const float* qkv = s.qkv.data();
    kernels::attention(pool, attn_shape, qkv, qkv + D, qkv + 2 * D, s.attn.data(),
                       s.attn_scratch.data());
    apply_linear(pool, b.proj, s.attn.data(), D, T, s.h.data(), D);
    residual(b.ls1);

    norm(b.norm2_w, b.norm2_b);
    apply_linear(pool, b.fc1, s.h.data(), D, T, s.mlp.data(), ldm);
    pool.for_rows(T, I, [&](int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        float* row = s.mlp.data() + size_t(r) * ldm;
        if (cfg_.gelu_tanh) kernels::gelu_tanh(row, size_t(I));
        else kernels::gelu_erf(row, size_t(I));
      }
    });
    apply_linear(pool, b.fc2, s.mlp.data(), ldm, T, s.h.data(), D);
    residual(b.ls2);
  }
  if (post_norm_w_) {
    norm(post_norm_w_, post_norm_b_);
    x = s.h.data();
  }

  for (int n = 0; n < N; ++n)
    std::memcpy(out + size_t(n) * out_stride, x + size_t(prefix + n) * D, sizeof(float) * D);
}

Vit Vit::with_precision(WeightType precision, DerivedArrays& arrays) const {
  Vit v = *this;
  set_precision(v.patch_embed_, precision, arrays);
  for (VitBlock& b : v.blocks_)
    for (Linear* L : {&b.qkv, &b.q, &b.k, &b.v, &b.proj, &b.fc1, &b.fc2})
      if (!L->empty()) set_precision(*L, precision, arrays);
  return v;
}

}  // namespace evla
