#include "model/llama.h"

#include <cmath>
#include <cstring>

#include "model/token_select.h"
#include "core/thread_pool.h"
#include "evla/error.h"
#include "kernels/kernels.h"

namespace evla {

Llama::Llama(const LlamaConfig& cfg, WeightStore& store, bool need_lm_head) : cfg_(cfg) {
  WeightLoader w(store, cfg.prefix);
  const int D = cfg.hidden_size, hd = cfg.head_dim();
  const int Dq = cfg.num_heads * hd, Dkv = cfg.num_kv_heads * hd;
  // As stored (a 16-bit table stays 16-bit; rows are widened as tokens are embedded).
  embed_tokens_ = w.matrix("model.embed_tokens.weight", {cfg.vocab_size, D}, "", /*pack=*/false);
  norm_ = w.get("model.norm.weight", {D});
  for (int i = 0; i < cfg.num_layers; ++i) {
    WeightLoader l = w.pp("model.layers").pp(i);
    const LlamaLayerShape& shape = cfg.layers[size_t(i)];
    LlamaLayer L;
    if (shape.attn && shape.mlp) {
      L = load_llama_layer(l, D, Dq, Dkv, shape.intermediate_size, D, /*fused_later=*/true);
    } else {  // a physically pruned layer keeps one sub-layer
      L.has_attn = shape.attn;
      L.has_mlp = shape.mlp;
      if (L.has_attn) {
        L.attn_norm = l.get("input_layernorm.weight", {D});
        L.q = l.linear("self_attn.q_proj", Dq, D, false, false);
        L.k = l.linear("self_attn.k_proj", Dkv, D, false, false);
        L.v = l.linear("self_attn.v_proj", Dkv, D, false, false);
        L.o = l.linear("self_attn.o_proj", D, Dq, false);
      }
      if (L.has_mlp) {
        const int F = shape.intermediate_size;
        L.mlp_norm = l.get("post_attention_layernorm.weight", {D});
        L.gate = l.linear("mlp.gate_proj", F, D, false, false);
        L.up = l.linear("mlp.up_proj", F, D, false, false);
        L.down = l.linear("mlp.down_proj", D, F, false);
      }
    }
    layers_.push_back(L);
  }
  packed_.resize(2 * layers_.size());
  std::vector<float> scratch;  // stacking buffer for fused matrices that get packed
  // A fused matrix run by the small-matrix kernel keeps only its packed copy
  // (stacked in the reused scratch, a derived weight); otherwise the stacked
  // fp32 matrix is kept, unless the parts are 16-bit: stacking those would
  // copy the language model, so they stay apart and run one after another
  // (an empty fused Linear, see apply_fused).
  auto fuse = [&](std::initializer_list<const Linear*> parts, std::vector<float>& keep, const std::string& key) {
    int rows = 0;
    bool sixteen = false, dot = false;
    for (const Linear* p : parts) rows += p->out, sixteen |= p->w16 != nullptr, dot |= p->bf16_dot || p->w8;
    if (dot) return Linear{nullptr, nullptr, D, rows};  // BF16 and int8 products run part by part
    if (!kernels::prefer_packed(rows, D)) return sixteen ? Linear{nullptr, nullptr, D, rows} : stack_rows(parts, keep);
    Linear f{nullptr, nullptr, D, rows};
    f.packed = store.derived(key, kernels::packed_floats(rows, D), [&](float* p) {
      kernels::pack_weights(stack_rows(parts, scratch).w, rows, D, p);
    });
    return f;
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    LlamaLayer& L = layers_[i];
    const WeightLoader l = w.pp("model.layers").pp(int(i));
    if (L.has_attn) L.qkv = fuse({&L.q, &L.k, &L.v}, packed_[2 * i], "packed:" + l.name("self_attn.qkv_proj"));
    if (L.has_mlp) L.gate_up = fuse({&L.gate, &L.up}, packed_[2 * i + 1], "packed:" + l.name("mlp.gate_up_proj"));
  }
  if (need_lm_head) {
    if (cfg.tie_word_embeddings || !w.has("lm_head.weight"))
      lm_head_ = embed_tokens_;
    else
      lm_head_ = w.matrix("lm_head.weight", {cfg.vocab_size, D}, "", /*pack=*/false);
  }
}

void Llama::embed(const int* ids, int n, float* out) const {
  const int D = cfg_.hidden_size;
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= cfg_.vocab_size)
      throw Error("token id " + std::to_string(ids[i]) + " outside the vocabulary (size " +
                  std::to_string(cfg_.vocab_size) + ")");
    weight_rows(embed_tokens_, ids[i], 1, out + size_t(i) * D);
  }
}

void Llama::final_norm(const float* x, int rows, float* y) const {
  kernels::rms_norm(x, rows, cfg_.hidden_size, norm_, cfg_.rms_norm_eps, y);
}

void Llama::logits(const float* normed, int rows, float* out, ThreadPool& pool) const {
  if (lm_head_.empty()) throw Error("this model was loaded without its LM head");
  apply_linear(pool, lm_head_, normed, cfg_.hidden_size, rows, out, cfg_.vocab_size);
}

LlamaLayer load_llama_layer(const WeightLoader& l, int D, int Dq, int Dkv, int F, int kv_in, bool fused_later) {
  const bool pack = !fused_later;
  LlamaLayer L;
  L.attn_norm = l.get("input_layernorm.weight", {D});
  L.q = l.linear("self_attn.q_proj", Dq, D, false, pack);
  L.k = l.linear("self_attn.k_proj", Dkv, kv_in, false, pack);
  L.v = l.linear("self_attn.v_proj", Dkv, kv_in, false, pack);
  L.o = l.linear("self_attn.o_proj", D, Dq, false);
  L.mlp_norm = l.get("post_attention_layernorm.weight", {D});
  L.gate = l.linear("mlp.gate_proj", F, D, false, pack);
  L.up = l.linear("mlp.up_proj", F, D, false, pack);
  L.down = l.linear("mlp.down_proj", D, F, false);
  return L;
}

Linear stack_rows(std::initializer_list<const Linear*> parts, std::vector<float>& storage) {
  int rows = 0;
  const int in = (*parts.begin())->in;
  for (const Linear* p : parts) rows += p->out;
  storage.resize(size_t(rows) * in);
  size_t at = 0;
  for (const Linear* p : parts) {
    weight_rows(*p, 0, p->out, storage.data() + at);
    at += size_t(p->out) * in;
  }
  return Linear{storage.data(), nullptr, in, rows};
}

void Llama::forward(std::vector<float>& x, std::vector<int>& positions, SequenceLayout layout,
                    const std::vector<LlamaLayer>& layers, const Schedule& schedule, LlamaScratch& s,
                    ThreadPool& pool, Observer* obs) const {
  const int D = cfg_.hidden_size, hd = cfg_.head_dim();
  const int Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads;
  const int Dq = Hq * hd, Dkv = Hkv * hd;
  const int select_at = schedule.select_after;
  const TokenPlan& tokens = schedule.tokens;
  int T = int(positions.size());
  // One rotary table for every layer (rebuilt if token selection shortens the sequence).
  auto build_rope = [&] {
    s.rope_cos.resize(size_t(T) * hd / 2);
    s.rope_sin.resize(size_t(T) * hd / 2);
    kernels::rope_tables(positions.data(), T, hd, cfg_.rope_theta, s.rope_cos.data(), s.rope_sin.data());
  };
  build_rope();
  // Row-wise steps, split over the pool on long sequences (ThreadPool::for_rows).
  auto norm = [&](const float* weight) {
    pool.for_rows(T, D, [&](int t0, int t1) {
      kernels::rms_norm(x.data() + size_t(t0) * D, t1 - t0, D, weight, cfg_.rms_norm_eps, s.h.data() + size_t(t0) * D);
    });
  };
  auto residual = [&] {  // x += h
    pool.for_rows(T, D, [&](int t0, int t1) {
      kernels::add(x.data() + size_t(t0) * D, s.h.data() + size_t(t0) * D, size_t(t1 - t0) * D);
    });
  };

  auto show_stream = [&](Stage stage, int l) { show(obs, {stage, l, -1, x.data(), nullptr, T, D, D}); };
  const bool wants_attention = obs && obs->wants(Stage::LlmVisualAttention) && layout.visual_count > 0;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LlamaLayer& L = layers[size_t(l)];
    const LayerSchedule& ls = schedule.llm[size_t(l)];
    const bool want_relevance = l == select_at || wants_attention;
    show_stream(Stage::LlmHidden, l);

    if (ls.attn) {
      const int W = Dq + 2 * Dkv;  // one row of the fused q|k|v projection
      s.h.resize(size_t(T) * D);
      s.qkv.resize(size_t(T) * W);
      s.attn.resize(size_t(T) * Dq);
      s.attn_scratch.resize(kernels::attention_scratch_floats(pool, T, T));
      norm(L.attn_norm);
      apply_fused(pool, L.qkv, {&L.q, &L.k, &L.v}, s.h.data(), D, T, s.qkv.data(), W);
      float* q = s.qkv.data();
      float* k = q + Dq;
      const float* v = q + Dq + Dkv;
      pool.for_rows(T, Dq + Dkv, [&](int t0, int t1) {
        const size_t r = size_t(t0) * W, c = size_t(t0) * (hd / 2);
        kernels::rope_apply(q + r, W, t1 - t0, Hq, hd, s.rope_cos.data() + c, s.rope_sin.data() + c);
        kernels::rope_apply(k + r, W, t1 - t0, Hkv, hd, s.rope_cos.data() + c, s.rope_sin.data() + c);
      });
      kernels::AttentionShape a{T, T, Hq, Hkv, hd, W, W, W, Dq};
      a.causal = true;
      a.scale = 1.0f / std::sqrt(float(hd));
      if (want_relevance) {
        s.relevance.resize(size_t(layout.visual_count));
        QkView view{q, k, W, W, T, Hq, Hkv, hd, a.scale};
        text_to_visual_attention(view, layout.visual_begin, layout.visual_count,
                                        tokens.queries, s.relevance.data());
        if (wants_attention)
          obs->on({Stage::LlmVisualAttention, l, -1, s.relevance.data(), nullptr, 1, layout.visual_count,
                   layout.visual_count});
      }
      kernels::attention(pool, a, q, k, v, s.attn.data(), s.attn_scratch.data());
      apply_linear(pool, L.o, s.attn.data(), Dq, T, s.h.data(), D);
      residual();
    }
    show_stream(Stage::LlmAfterAttention, l);

    if (ls.mlp) {
      const int F = L.gate.out;  // compacted layers have fewer channels
      s.h.resize(size_t(T) * D);
      const int ld = kernels::unaliased_stride(2 * F);
      s.gate_up.resize(size_t(T) * ld);
      norm(L.mlp_norm);
      apply_fused(pool, L.gate_up, {&L.gate, &L.up}, s.h.data(), D, T, s.gate_up.data(), ld);
      // Row t holds [gate | up]; SwiGLU overwrites the gate half, which the
      // down projection then reads in place (row stride ld, 2F or a little more).
      pool.for_rows(T, 2 * F, [&](int t0, int t1) {
        for (int t = t0; t < t1; ++t) {
          float* row = s.gate_up.data() + size_t(t) * ld;
          kernels::swiglu(row, row + F, size_t(F));
        }
      });
      show(obs, {Stage::LlmMlpActivation, l, -1, s.gate_up.data(), nullptr, T, F, ld});
      apply_linear(pool, L.down, s.gate_up.data(), ld, T, s.h.data(), D);
      residual();
    }
    show_stream(Stage::LlmLayerOutput, l);

    if (l == select_at && layout.visual_count > tokens.keep) {
      // Keep the selected visual tokens (with their original positions) and
      // every non-visual token; later layers see the shorter sequence.
      const int vb = layout.visual_begin, nv = layout.visual_count;
      s.keep = select_visual_tokens(tokens, s.relevance.data(),
                                           x.data() + size_t(vb) * D, nv, D, D);
      if (tokens.merge) merge_dropped_tokens(s.keep, x.data() + size_t(vb) * D, nv, D, D);
      const int kept_visual = int(s.keep.size());
      show(obs, {Stage::LlmKeptTokens, l, -1, nullptr, s.keep.data(), 1, kept_visual, kept_visual});
      const int T2 = T - nv + kept_visual;
      s.x_next.resize(size_t(T2) * D);
      s.pos_next.resize(size_t(T2));
      int r = 0;
      auto copy_row = [&](int src) {
        std::memcpy(&s.x_next[size_t(r) * D], &x[size_t(src) * D], sizeof(float) * D);
        s.pos_next[size_t(r)] = positions[size_t(src)];
        ++r;
      };
      for (int i = 0; i < vb; ++i) copy_row(i);
      for (int j : s.keep) copy_row(vb + j);
      for (int i = vb + nv; i < T; ++i) copy_row(i);
      x.swap(s.x_next);
      positions.swap(s.pos_next);
      x.resize(size_t(T2) * D);
      positions.resize(size_t(T2));
      T = T2;
      layout.visual_count = kept_visual;
      build_rope();
    }
  }
  show_stream(Stage::LlmHidden, cfg_.num_layers);
}

double Llama::flops(int T, int n_visual, const Schedule& schedule, double* int8) const {
  const double D = cfg_.hidden_size, hd = cfg_.head_dim();
  const double Dq = cfg_.num_heads * hd, Dkv = cfg_.num_kv_heads * hd;
  double f = 0;
  double t = T;
  if (int8) *int8 = 0;
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const LayerSchedule& ls = schedule.llm[size_t(l)];
    double layer = 0;
    if (ls.attn) layer += 2.0 * t * D * (2 * Dq + 2 * Dkv) + 4.0 * t * t * Dq / 2.0;  // causal half
    if (ls.mlp) layer += 2.0 * t * D * 3 * double(ls.mlp_width);
    f += layer;
    if (int8 && ls.precision == WeightType::Int8) *int8 += layer;
    if (l == schedule.select_after && n_visual > schedule.tokens.keep) t -= n_visual - schedule.tokens.keep;
  }
  return f;
}

}  // namespace evla
