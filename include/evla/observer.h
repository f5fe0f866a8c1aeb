// evla — seeing inside one inference. Every stage of the policy hands its
// output to one callback, named as the parity fixtures name it: what the
// redundancy analysis measures, what the parity tests compare with the
// PyTorch reference, what `evla run --dump` and the Python module's
// intermediates return, and what a user checks a model against.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace evla {

enum class Stage {
  PromptIds,          // the prompt's token ids (BOS … cognition token), ints
  ImagePixels,        // index = image: SmolVLA's resized, padded, [-1, 1]-scaled image [3, H, W]
  VisionFeatures,     // index = encoder: its features of every image's patches [tokens, width]
  Projected,          // the visual tokens the LM reads [tokens, hidden]
  Prefix,             // SmolVLA: images, language and state tokens the VLM reads [tokens, hidden]
  LlmHidden,          // index = l: the input of LM layer l; l = layers: the last layer's output
  LlmAfterAttention,  // index = layer: the residual stream after the attention sub-layer
  LlmLayerOutput,     // index = layer: the layer's output, before any token selection after it
  LlmMlpActivation,   // index = layer: SwiGLU activations, the down projection's input [tokens, F]
  LlmVisualAttention, // index = layer: each visual token's text→visual attention, head-averaged;
                      //   computed for this stage alone, so only when wanted
  LlmKeptTokens,      // the visual tokens a plan's selection kept (ascending indices), ints
  Cognition,          // the final-norm hidden state at the cognition token [hidden]
  Noise,              // the sampler's starting noise ε [chunk, action_dim]
  StepNoise,          // DDPM: the noise added at each step [steps, chunk × action_dim]
  DitBlockInput,      // index = step, block: a DiT block's input [batch × (chunk + 1), width]
  DitAttention,       // index = step, block: its attention sub-layer output (computed or reused)
  DitMlp,             // index = step, block: its MLP sub-layer output (computed or reused)
  DitEps,             // index = step: the guided noise prediction [chunk, action_dim]
  DitSample,          // index = step: the sample after the step
  DitRefreshed,       // index = step: per step so far, 1 where the head recomputed, 0 where it reused
  FlowVelocity,       // index = step: SmolVLA's flow-matching velocity [chunk, max_action_dim]
  ActionsSample,      // the final normalised sample
  ActionsNormalized,  // after clipping and the gripper threshold
  Actions,            // un-normalised
};

// One stage's output: rows × cols values, row stride ld; floats in `data`,
// or ints in `ids` (PromptIds, LlmKeptTokens). Valid during the callback only.
struct StageOutput {
  Stage stage;
  int index = -1;  // encoder, layer or sampling step
  int block = -1;  // DiT block
  const float* data = nullptr;
  const int* ids = nullptr;
  int rows = 0, cols = 0, ld = 0;
  // "vision.0.features", "llm.hidden.3", "dit.eps.7", ... (docs/format.md).
  std::string name() const;
};

class Observer {
 public:
  virtual ~Observer() = default;
  // Stages not wanted are not produced; some cost work of their own
  // (LlmVisualAttention, the DiT's sub-layer outputs).
  virtual bool wants(Stage stage) const = 0;
  virtual void on(const StageOutput& out) = 0;
};

// For the stages' producers: hands `out` to `observer` if there is one and it
// wants the stage.
inline void show(Observer* observer, const StageOutput& out) {
  if (observer && observer->wants(out.stage)) observer->on(out);
}

// Keeps a copy of each output it wants, by name, rows packed (ints as floats).
class Recorder : public Observer {
 public:
  // The stages the parity fixtures hold.
  static std::set<Stage> fixture_stages();
  explicit Recorder(std::set<Stage> stages = fixture_stages()) : stages_(std::move(stages)) {}
  bool wants(Stage stage) const override { return stages_.count(stage) > 0; }
  void on(const StageOutput& out) override;

  std::map<std::string, std::vector<float>> tensors;
  std::vector<int> prompt_ids;  // PromptIds, as ints

 private:
  std::set<Stage> stages_;
};

}  // namespace evla
