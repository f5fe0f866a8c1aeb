// CogACT's diffusion-transformer action head: a condition token (timestep
// embedding + projected cognition feature [+ projected robot state]) followed
// by the noisy action chunk, pre-LN blocks without affine norms, and a linear
// read-out of the noise. The plan's cache (FORA) lets blocks reuse their
// attention and MLP outputs from the last refresh step.
#pragma once
#include <cstdint>
#include <vector>

#include "evla/observer.h"
#include "evla/plan.h"
#include "model/config.h"
#include "model/weights.h"

namespace evla {

class ThreadPool;

struct DitBlock {
  Linear qkv, proj, fc1, fc2;
};

// Per-inference buffers, and the FORA cache of each block's sub-layer outputs.
struct DitScratch {
  Observer* observer = nullptr;  // for this inference (set by the policy)
  int step = 0;  // set by the sampler, for the observer
  std::vector<float> x, x_in, h, qkv, attn, mlp, attn_scratch, tfreq, temb, out;
  std::vector<float> sample, batch, eps, guided, state_emb;  // sampler and condition buffers
  std::vector<std::vector<float>> cached_attn, cached_mlp;
  // The adaptive cache's state: the previous step's input, the change summed
  // since the last refresh, and the steps since it.
  std::vector<float> previous_input;
  double change = 0;
  int since_refresh = 0;
};

class Dit {
 public:
  Dit(const ActionHeadConfig& cfg, WeightStore& store);
  const ActionHeadConfig& config() const { return cfg_; }

  // Condition embeddings, one row per batch entry: z_embedder(cognition) for
  // the conditional row and z_embedder(uncondition) for the CFG row, plus the
  // state embedding when the model takes state. out: [batch, hidden].
  void condition(const float* cognition, const float* state, float* out, DitScratch& s, ThreadPool& pool) const;

  // Noise prediction for batch rows of noisy chunks x ([B, C, A]) at training
  // timestep t. `reuse` = this step reads the FORA cache instead of
  // recomputing the blocks the plan names; otherwise the cache is refreshed.
  // Returns whether it recomputed (false: every cached block reused).
  bool predict(const float* x, int B, int t, const float* cond, float* eps, bool reuse,
               const CachePlan& cache, DitScratch& s, ThreadPool& pool) const;

  double flops_per_call(int B, const CachePlan* reuse = nullptr) const;
  // A copy whose matrix products run at `precision` (set_precision); the
  // BF16 matrices it derives go into `arrays`.
  Dit with_precision(WeightType precision, DerivedArrays& arrays) const;

 private:
  bool block_cached(const CachePlan& cache, int b) const;
  static bool adaptive_reuse(bool eligible, const CachePlan& cache, DitScratch& s, size_t n);

  ActionHeadConfig cfg_;
  Linear x_embedder_, t_fc1_, t_fc2_, z_embedder_, s_embedder_, final_;
  const float* uncondition_;
  const float* pos_embed_;
  std::vector<DitBlock> blocks_;
};

}  // namespace evla
