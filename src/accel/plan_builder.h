// Building an acceleration plan from an analysis report: explicit numbers
// (how many layers to drop, tokens to keep, cache interval …) or a target
// speed-up, with the choice of *which* layers made by redundancy (the
// method) or by the baselines it is compared with (random, evenly spread).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "accel/analysis.h"
#include "evla/plan.h"
#include "model/config.h"

namespace evla::accel {

// Importance: 1 − cos over all tokens (EfficientVLA); CognitionImportance: the
// same on the cognition token only; Ablation: how much skipping the block
// alone moves the actions; Greedy: joint ablation, one block at a time;
// Random / Even: the baselines.
enum class LayerChoice { Importance, CognitionImportance, Ablation, Greedy, Random, Even };

struct PlanRequest {
  std::string name;
  int drop_blocks = 0;       // whole LM blocks
  int drop_attention = 0;    // attention sub-layers (of blocks not dropped whole)
  int drop_mlp = 0;          // MLP sub-layers
  float mlp_prune = 0.f;     // fraction of MLP channels removed in every kept MLP
  int int8_layers = 0;       // kept LM layers run from int8 weights (the least important first)
  bool bf16_modules = false; // vision towers, projector and action head with BF16 products
  LayerChoice layers = LayerChoice::Importance;
  int tokens = 0;            // K_final; 0 = keep all
  int token_key = 4;
  float token_alpha = 0.5f;
  int token_after_layer = 2;  // 0: the analysis' best_token_after()
  TokenMethod token_method = TokenMethod::EfficientVla;
  TokenQueries token_queries = TokenQueries::Text;
  bool token_merge = false;  // merge the tokens not kept into the kept ones (ToMe) instead of dropping them
  int cache_interval = 1;
  int cache_start = 0;
  std::vector<int> cache_blocks;
  uint64_t seed = 0;         // for the random baselines
  double target_speedup = 0; // > 0: choose the numbers above to reach it
  // With a target: the speed-up of a candidate plan as measured on this
  // machine, used instead of the estimate (empty: the estimate).
  std::function<double(const Plan&)> measure;
};

// Every number of a request, checked before any plan is built (build_plan
// calls it too); messages name the `evla plan` option.
void check_request(const PlanRequest& req, const ModelConfig& cfg);

Plan build_plan(const AnalysisReport& a, const Model& model, const PlanRequest& req);

// Estimated end-to-end speed-up of a plan: each module's measured dense time
// scaled by its FLOPs ratio under the plan, the LM's also by the measured
// int8 speed (int8_llm_ratio) for the share of its FLOPs in int8 layers,
// the other modules' by their measured BF16 speed (bf16_ratio) where the
// plan gives them BF16 products.
double estimated_speedup(const AnalysisReport& a, const FlopCount& plan_flops, double int8_share,
                         const PrecisionPlan& precision = {});
double estimated_speedup(const AnalysisReport& a, const Model& model, const Plan& plan);

// MLP sparsity: keeps the round((1 − prune) · F) channels of highest score
// (at least one) in `lp`; nothing when the layer has no channel scores.
void keep_top_channels(const std::vector<float>& score, double prune, LayerPlan& lp);

}  // namespace evla::accel
