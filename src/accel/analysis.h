// Redundancy analysis: runs the dense policy over a calibration set and
// measures what EfficientVLA's plan is built from — how much each LM block
// and sub-layer changes its input, per-channel MLP activity, the attention
// text pays to visual tokens, and how much each DiT block's outputs change
// from one denoising step to the next.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "evla/evla.h"

namespace evla {
class Progress;
}

namespace evla::accel {

// Importance = 1 − mean cosine(input, output) over all tokens and samples.
// `cognition` is the block's importance on the last token alone (LM layers
// only): the cognition token, the one LM output the action head reads.
// `ablation` is measured on the output instead: the NMSE of the policy's
// actions when the block alone is skipped, against dense (same seeds).
struct SubLayerScores {
  double block = 0, attn = 0, mlp = 0;
  double cognition = 0;
  double ablation = -1;  // < 0: not measured (older reports)
};

struct AnalysisReport {
  std::string model;
  int samples = 0;
  int visual_tokens = 0;
  std::vector<SubLayerScores> llm;                 // per LM layer
  std::vector<std::vector<float>> mlp_channels;    // per LM layer: mean|act| × ‖down column‖
  std::vector<std::vector<float>> visual_attention;  // per LM layer: mean text→visual attention
  std::vector<std::vector<SubLayerScores>> dit;    // [step][block]
  std::vector<std::vector<double>> dit_attn_change;  // [step][block], relative L2 change vs step−1
  std::vector<std::vector<double>> dit_mlp_change;
  // Greedy joint ablation: block k is the one whose skipping, on top of
  // blocks 0..k-1 of this list, moves the actions least (up to half the LM).
  std::vector<int> greedy_drop_order;
  // Token-selection ablation: element k − 1 is the action NMSE against dense
  // when a quarter of the visual tokens is kept after layer k (EfficientVLA's
  // selection, ranked by layer k − 1's attention), k = 1 .. max(1, L / 2);
  // −1 where layer k − 1 has no attention. Which layer's attention knows
  // where the task's objects are differs from policy to policy; this
  // measures it on the output.
  std::vector<double> token_after_nmse;
  Timing dense_ms;   // mean per-module latency of the dense policy (no probes attached)
  // The LM's time with every layer int8 over its fp32 time, measured (the
  // integer kernel's gain does not follow the FLOPs); 1 where unmeasured.
  double int8_llm_ratio = 1.0;
  // The vision towers', projector's and action head's time with BF16
  // products over their dense time, measured; 1 where unmeasured.
  Timing bf16_ratio{1.0, 1.0, 1.0, 1.0, 1.0};
  FlopCount flops;   // dense analytic FLOPs

  nlohmann::json to_json() const;
  static AnalysisReport from_json(const nlohmann::json& j, const std::string& source);
  static AnalysisReport load(const std::string& path);
  // Ranking helpers: layer indices sorted by ascending importance.
  std::vector<int> least_important_blocks() const;
  std::vector<int> least_important_for_cognition() const;
  // Throws evla::Error when the report has no ablation scores.
  std::vector<int> least_important_by_ablation() const;
  // greedy_drop_order, then the other blocks by ablation; throws without them.
  std::vector<int> greedy_order() const;
  // The token_after_nmse layer that moves the actions least; throws without them.
  int best_token_after() const;
  std::vector<int> least_important_attention() const;
  std::vector<int> least_important_mlp() const;
};

// `progress` (may be null) is advanced once per sample.
AnalysisReport analyze(std::shared_ptr<const Model> model, const std::vector<Observation>& calibration,
                       int threads, Progress* progress = nullptr);

// The layer profile as an SVG picture (LM blocks and sub-layers, DiT step-to-step change).
std::string analysis_svg(const AnalysisReport& r);

}  // namespace evla::accel
