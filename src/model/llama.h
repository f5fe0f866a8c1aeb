// Llama-family decoder: RMSNorm, rotary positions (rotate-half), grouped-query
// causal attention, SwiGLU MLP. One forward pass over a whole sequence (no
// generation cache is needed by the policy). The forward pass follows the
// plan's schedule: skipped sub-layers, and visual-token selection after a
// given layer (kept tokens keep their positions); compacted MLPs come in
// with the layer weights.
#pragma once
#include <deque>
#include <initializer_list>
#include <vector>

#include "evla/observer.h"
#include "evla/plan.h"
#include "model/config.h"
#include "model/schedule.h"
#include "model/weights.h"

namespace evla {

class ThreadPool;

struct LlamaLayer {
  bool has_attn = true, has_mlp = true;  // false in physically pruned checkpoints
  const float* attn_norm = nullptr;
  const float* mlp_norm = nullptr;
  Linear q, k, v, o, gate, up, down;
  // q, k, v stacked into one [Dq + 2·Dkv, D] matrix and gate, up into one
  // [2F, D] matrix (packed once at load): one GEMM each instead of three / two.
  // Their fp32 `w` is null when only the packed copy is kept; both are empty
  // for 16-bit layers, whose parts run one after another (apply_fused).
  Linear qkv, gate_up;
};

// One Llama decoder layer's weights under `l` (input_layernorm, self_attn.*,
// post_attention_layernorm, mlp.*): width D, Dq query and Dkv key/value
// features, MLP width F; k and v read kv_in features (D, except where they
// project another model's keys and values). With fused_later, q, k, v, gate
// and up are not packed on their own (the caller stacks them).
LlamaLayer load_llama_layer(const WeightLoader& l, int D, int Dq, int Dkv, int F, int kv_in, bool fused_later);

// The parts' rows stacked into one matrix held in `storage` (no bias).
Linear stack_rows(std::initializer_list<const Linear*> parts, std::vector<float>& storage);

// Where the visual tokens sit in the sequence; the text follows them.
struct SequenceLayout {
  int visual_begin = 0;
  int visual_count = 0;
};

struct LlamaScratch {
  std::vector<float> h, qkv, attn, gate_up, attn_scratch, relevance, rope_cos, rope_sin;
  std::vector<float> x_next;
  std::vector<int> pos_next, keep;
};

class Llama {
 public:
  Llama(const LlamaConfig& cfg, WeightStore& store, bool need_lm_head);
  const LlamaConfig& config() const { return cfg_; }
  const std::vector<LlamaLayer>& layers() const { return layers_; }

  // Token embeddings of ids → out [n, hidden].
  void embed(const int* ids, int n, float* out) const;

  // Runs the decoder over x ([T, hidden], modified in place; T may shrink
  // when the plan selects tokens) with `positions` (T entries, updated
  // alongside). `layers` are the (possibly plan-compacted) layer weights.
  // Leaves the residual stream *before* the final norm in x.
  void forward(std::vector<float>& x, std::vector<int>& positions, SequenceLayout layout,
               const std::vector<LlamaLayer>& layers, const Schedule& schedule, LlamaScratch& s,
               ThreadPool& pool, Observer* obs = nullptr) const;

  // Final RMSNorm of `rows` rows.
  void final_norm(const float* x, int rows, float* y) const;
  // Logits of normed hidden rows; requires the LM head.
  void logits(const float* normed, int rows, float* out, ThreadPool& pool) const;
  bool has_lm_head() const { return !lm_head_.empty(); }

  // FLOPs of one forward over T tokens (n_visual of them visual) under the
  // schedule; `int8`, when given, receives those of its int8 layers.
  double flops(int T, int n_visual, const Schedule& schedule, double* int8 = nullptr) const;

 private:
  LlamaConfig cfg_;
  Linear embed_tokens_;
  const float* norm_;
  Linear lm_head_;
  std::vector<LlamaLayer> layers_;
  std::vector<std::vector<float>> packed_;  // fused matrices behind layers_
};

}  // namespace evla
