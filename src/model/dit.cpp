#include "model/dit.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace evla {

Dit::Dit(const ActionHeadConfig& cfg, WeightStore& store) : cfg_(cfg) {
  WeightLoader w(store, cfg.prefix);
  const int H = cfg.hidden_size, M = cfg.mlp_hidden();
  x_embedder_ = w.linear("x_embedder.linear", H, cfg.action_dim);
  t_fc1_ = w.linear("t_embedder.mlp.0", H, cfg.frequency_embedding_size);
  t_fc2_ = w.linear("t_embedder.mlp.2", H, H);
  z_embedder_ = w.linear("z_embedder.linear", H, cfg.cond_dim);
  uncondition_ = w.get("z_embedder.uncondition", {1, cfg.cond_dim});
  if (cfg.state_dim > 0) s_embedder_ = w.linear("s_embedder.linear", H, cfg.state_dim);
  // CogACT stores [C+1, H]; a leading batch axis of 1 is accepted too.
  const auto& pe = w.store().tensors().get(w.name("positional_embedding"));
  const bool batched = pe.shape.size() == 3;
  pos_embed_ = batched ? w.get("positional_embedding", {1, cfg.chunk_size + 1, H})
                       : w.get("positional_embedding", {cfg.chunk_size + 1, H});
  for (int i = 0; i < cfg.num_layers; ++i) {
    WeightLoader b = w.pp("blocks").pp(i);
    blocks_.push_back({b.linear("attn.qkv", 3 * H, H), b.linear("attn.proj", H, H),
                       b.linear("mlp.fc1", M, H), b.linear("mlp.fc2", H, M)});
  }
  final_ = w.linear("final_layer.linear", cfg.action_dim, H);
}

void Dit::condition(const float* cognition, const float* state, float* out, DitScratch& s,
                    ThreadPool& pool) const {
  const int H = cfg_.hidden_size;
  apply_linear(pool, z_embedder_, cognition, cfg_.cond_dim, 1, out, H);
  if (cfg_.use_cfg())
    apply_linear(pool, z_embedder_, uncondition_, cfg_.cond_dim, 1, out + H, H);
  if (cfg_.state_dim > 0) {
    s.state_emb.resize(size_t(H));
    apply_linear(pool, s_embedder_, state, cfg_.state_dim, 1, s.state_emb.data(), H);
    for (int b = 0; b < cfg_.batch(); ++b) kernels::add(out + size_t(b) * H, s.state_emb.data(), H);
  }
}

// The adaptive cache's decision for this step, whose input is s.x: reuse
// while the relative L1 change of the input, summed over the steps since the
// last refresh, stays below the threshold and fewer than `interval` steps
// have passed; a refresh starts the sum again.
bool Dit::adaptive_reuse(bool eligible, const CachePlan& cache, DitScratch& s, size_t n) {
  bool reuse = false;
  if (eligible && s.previous_input.size() == n) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < n; ++i) diff += std::fabs(double(s.x[i]) - s.previous_input[i]), norm += std::fabs(s.previous_input[i]);
    s.change += norm > 0 ? diff / norm : 0.0;
    s.since_refresh += 1;
    reuse = s.change < cache.threshold && s.since_refresh < cache.interval;
  }
  if (!reuse) s.change = 0, s.since_refresh = 0;
  s.previous_input.assign(s.x.begin(), s.x.begin() + std::ptrdiff_t(n));
  return reuse;
}

bool Dit::block_cached(const CachePlan& cache, int b) const {
  return cache.blocks.empty() || std::find(cache.blocks.begin(), cache.blocks.end(), b) != cache.blocks.end();
}

bool Dit::predict(const float* x, int B, int t, const float* cond, float* eps, bool reuse,
                  const CachePlan& cache, DitScratch& s, ThreadPool& pool) const {
  const int H = cfg_.hidden_size, C = cfg_.chunk_size, A = cfg_.action_dim, M = cfg_.mlp_hidden();
  const int L = C + 1, R = B * L, heads = cfg_.num_heads, hd = H / heads;

  // Timestep embedding: [cos(t·f), sin(t·f)], f_i = 10000^(−i/half), in fp32.
  const int F = cfg_.frequency_embedding_size, half = F / 2;
  s.tfreq.resize(F);
  for (int i = 0; i < half; ++i) {
    const float f = std::exp(-std::log(10000.0f) * float(i) / float(half));
    const float arg = float(t) * f;
    s.tfreq[i] = std::cos(arg);
    s.tfreq[half + i] = std::sin(arg);
  }
  s.temb.resize(2 * H);
  apply_linear(pool, t_fc1_, s.tfreq.data(), F, 1, s.temb.data(), H);
  kernels::silu(s.temb.data(), H);
  apply_linear(pool, t_fc2_, s.temb.data(), H, 1, s.temb.data() + H, H);
  const float* temb = s.temb.data() + H;

  // Tokens per batch row: [condition, x_embedder(action_i) …] + positional embedding.
  s.x.resize(size_t(R) * H);
  for (int b = 0; b < B; ++b) {
    float* row0 = &s.x[size_t(b) * L * H];
    for (int j = 0; j < H; ++j) row0[j] = temb[j] + cond[size_t(b) * H + j];
    apply_linear(pool, x_embedder_, x + size_t(b) * C * A, A, C, row0 + H, H);
    kernels::add(row0, pos_embed_, size_t(L) * H);
  }

  if (cache.threshold > 0) reuse = adaptive_reuse(reuse, cache, s, size_t(R) * H);

  s.h.resize(size_t(R) * H);
  s.qkv.resize(size_t(R) * 3 * H);
  s.attn.resize(size_t(R) * H);
  s.mlp.resize(size_t(R) * M);
  s.attn_scratch.resize(kernels::attention_scratch_floats(pool, L, L));
  s.cached_attn.resize(blocks_.size());
  s.cached_mlp.resize(blocks_.size());
  kernels::AttentionShape a{L, L, heads, heads, hd, 3 * H, 3 * H, 3 * H, H};
  a.scale = 1.0f / std::sqrt(float(hd));

  const bool input_wanted = s.observer && s.observer->wants(Stage::DitBlockInput);
  const bool sublayers_wanted =
      s.observer && (s.observer->wants(Stage::DitAttention) || s.observer->wants(Stage::DitMlp));
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const DitBlock& blk = blocks_[i];
    const bool use_cache = reuse && block_cached(cache, int(i)) && !s.cached_attn[i].empty();
    auto& ca = s.cached_attn[i];
    auto& cm = s.cached_mlp[i];
    // Sub-layer outputs are kept only when a later step may reuse them or an
    // observer reads them; the dense path skips the copies.
    const bool keep = (cache.interval > 1 && block_cached(cache, int(i))) || sublayers_wanted;
    if (input_wanted) s.x_in.assign(s.x.begin(), s.x.end());
    if (use_cache) {
      kernels::add(s.x.data(), ca.data(), size_t(R) * H);
    } else {
      kernels::layer_norm(s.x.data(), R, H, nullptr, nullptr, cfg_.norm_eps, s.h.data());
      apply_linear(pool, blk.qkv, s.h.data(), H, R, s.qkv.data(), 3 * H);
      for (int b = 0; b < B; ++b) {
        const float* q = &s.qkv[size_t(b) * L * 3 * H];
        kernels::attention(pool, a, q, q + H, q + 2 * H, &s.attn[size_t(b) * L * H],
                           s.attn_scratch.data());
      }
      apply_linear(pool, blk.proj, s.attn.data(), H, R, s.h.data(), H);
      if (keep) ca.assign(s.h.begin(), s.h.begin() + size_t(R) * H);
      kernels::add(s.x.data(), s.h.data(), size_t(R) * H);
    }
    if (use_cache) {
      kernels::add(s.x.data(), cm.data(), size_t(R) * H);
    } else {
      kernels::layer_norm(s.x.data(), R, H, nullptr, nullptr, cfg_.norm_eps, s.h.data());
      apply_linear(pool, blk.fc1, s.h.data(), H, R, s.mlp.data(), M);
      kernels::gelu_tanh(s.mlp.data(), size_t(R) * M);
      apply_linear(pool, blk.fc2, s.mlp.data(), M, R, s.h.data(), H);
      if (keep) cm.assign(s.h.begin(), s.h.begin() + size_t(R) * H);
      kernels::add(s.x.data(), s.h.data(), size_t(R) * H);
    }
    show(s.observer, {Stage::DitBlockInput, s.step, int(i), s.x_in.data(), nullptr, R, H, H});
    show(s.observer, {Stage::DitAttention, s.step, int(i), ca.data(), nullptr, R, H, H});
    show(s.observer, {Stage::DitMlp, s.step, int(i), cm.data(), nullptr, R, H, H});
  }

  // Final LayerNorm + read-out on the action positions only.
  for (int b = 0; b < B; ++b) {
    const float* rows = &s.x[(size_t(b) * L + 1) * H];
    kernels::layer_norm(rows, C, H, nullptr, nullptr, cfg_.norm_eps, s.h.data());
    apply_linear(pool, final_, s.h.data(), H, C, eps + size_t(b) * C * A, A);
  }
  return !reuse;
}

double Dit::flops_per_call(int B, const CachePlan* reuse) const {
  const double H = cfg_.hidden_size, C = cfg_.chunk_size, L = C + 1, M = cfg_.mlp_hidden();
  const double R = B * L;
  double f = 2.0 * cfg_.frequency_embedding_size * H + 2.0 * H * H;  // timestep MLP
  f += 2.0 * B * C * cfg_.action_dim * H;                           // x_embedder
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (reuse && block_cached(*reuse, int(i))) continue;
    f += 2.0 * R * H * (4 * H) + 4.0 * B * L * L * H + 2.0 * R * H * 2 * M;
  }
  f += 2.0 * B * C * H * cfg_.action_dim;  // final layer
  return f;
}

Dit Dit::with_precision(WeightType precision, DerivedArrays& arrays) const {
  Dit d = *this;
  for (Linear* L : {&d.x_embedder_, &d.t_fc1_, &d.t_fc2_, &d.z_embedder_, &d.s_embedder_, &d.final_})
    if (!L->empty()) set_precision(*L, precision, arrays);
  for (DitBlock& b : d.blocks_)
    for (Linear* L : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) set_precision(*L, precision, arrays);
  return d;
}

}  // namespace evla
