#include "evla/observer.h"

#include <cstring>

namespace evla {

std::string StageOutput::name() const {
  const std::string i = std::to_string(index);
  switch (stage) {
    case Stage::PromptIds: return "prompt.ids";
    case Stage::ImagePixels: return "images." + i + ".pixels";
    case Stage::VisionFeatures: return "vision." + i + ".features";
    case Stage::Projected: return "projector.out";
    case Stage::Prefix: return "prefix";
    case Stage::LlmHidden: return "llm.hidden." + i;
    case Stage::LlmAfterAttention: return "llm.after_attention." + i;
    case Stage::LlmLayerOutput: return "llm.output." + i;
    case Stage::LlmMlpActivation: return "llm.mlp_activation." + i;
    case Stage::LlmVisualAttention: return "llm.visual_attention." + i;
    case Stage::LlmKeptTokens: return "llm.kept_tokens";
    case Stage::Cognition: return "llm.cognition";
    case Stage::Noise: return "noise";
    case Stage::StepNoise: return "step_noise";
    case Stage::DitBlockInput: return "dit.block." + i + "." + std::to_string(block) + ".input";
    case Stage::DitAttention: return "dit.block." + i + "." + std::to_string(block) + ".attention";
    case Stage::DitMlp: return "dit.block." + i + "." + std::to_string(block) + ".mlp";
    case Stage::DitEps: return "dit.eps." + i;
    case Stage::DitSample: return "dit.x." + i;
    case Stage::DitRefreshed: return "dit.refreshed";
    case Stage::FlowVelocity: return "flow.velocity." + i;
    case Stage::ActionsSample: return "actions.sample";
    case Stage::ActionsNormalized: return "actions.normalized";
    case Stage::Actions: return "actions";
  }
  return "unknown";
}

std::set<Stage> Recorder::fixture_stages() {
  return {Stage::PromptIds,     Stage::VisionFeatures, Stage::Projected,   Stage::LlmHidden,
          Stage::LlmKeptTokens, Stage::Cognition,      Stage::DitEps,      Stage::DitSample,
          Stage::DitRefreshed,  Stage::ActionsSample,  Stage::ActionsNormalized, Stage::Actions};
}

void Recorder::on(const StageOutput& out) {
  if (out.stage == Stage::PromptIds) {
    prompt_ids.assign(out.ids, out.ids + size_t(out.rows) * out.cols);
    return;
  }
  std::vector<float>& v = tensors[out.name()];
  v.resize(size_t(out.rows) * out.cols);
  for (int r = 0; r < out.rows; ++r)
    for (int c = 0; c < out.cols; ++c)
      v[size_t(r) * out.cols + c] = out.data ? out.data[size_t(r) * out.ld + c] : float(out.ids[size_t(r) * out.ld + c]);
}

}  // namespace evla
