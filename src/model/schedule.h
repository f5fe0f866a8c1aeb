// A plan resolved against a model's config: which sub-layers of each LM
// layer run and how wide their MLP is, at what precision, after which layer
// the visual tokens are selected, which denoising steps recompute the action
// head. Resolving checks the plan (every error names the plan field); the
// forward pass, the FLOP count and Model::validate all read this one form.
#pragma once
#include <vector>

#include "evla/plan.h"
#include "model/config.h"

namespace evla {

struct LayerSchedule {
  bool attn = true;   // the attention sub-layer runs
  bool mlp = true;    // the MLP sub-layer runs
  int mlp_width = 0;  // its channels (the kept ones under MLP compaction)
  WeightType precision = WeightType::Stored;
};

struct Schedule {
  std::vector<LayerSchedule> llm;  // one per LM layer
  int select_after = -1;           // visual tokens are selected after this layer's output; -1: never
  TokenPlan tokens;                // how (when select_after ≥ 0)
  CachePlan cache;
  // Per sampling step: true = recomputes the head; false = reuses its cache
  // (a fixed interval) or may reuse it (adaptive: the input's change decides).
  std::vector<bool> head_refresh;
  bool adaptive() const { return cache.threshold > 0; }

  static Schedule resolve(const Plan& plan, const ModelConfig& cfg);
  // A language model alone, every layer as its checkpoint has it.
  static Schedule dense_llm(const LlamaConfig& llm);
};

// Throws evla::Error naming the plan field that does not fit the model.
inline void check_plan(const Plan& plan, const ModelConfig& cfg) { Schedule::resolve(plan, cfg); }

}  // namespace evla
