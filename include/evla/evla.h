// evla — run diffusion Vision-Language-Action policies (CogACT family) on CPU.
//
// Basic usage:
//
//   #include <evla/evla.h>
//
//   auto model = evla::Model::load("models/evla-tiny-random");   // throws evla::Error
//   evla::Policy policy(model);                                  // one per thread
//   evla::Observation obs;
//   obs.images.push_back(evla::load_image("scene.png"));
//   obs.instruction = "pick up the red cube";
//   obs.seed = 7;
//   evla::ActionChunk chunk = policy.infer(obs);
//   for (int t = 0; t < chunk.horizon; ++t)
//     robot.apply(chunk.row(t));                                 // chunk.dim floats
//
//   policy.set_plan(evla::Plan::load("plan.json"));              // accelerate
//
// Thread safety: a Model is immutable and may be shared by any number of
// threads; a Policy holds per-inference buffers and is used by one thread at a
// time. Every error is an evla::Error whose message names what was wrong.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "evla/error.h"
#include "evla/image.h"
#include "evla/observer.h"
#include "evla/plan.h"

namespace evla {

struct ModelImpl;
struct PolicyState;

// Where loads keep derived weights (packed, fused, converted) for the next
// load of the same checkpoint, and plans the weights they derive (compacted,
// int8, BF16) for the next compilation of the same plan: $EVLA_CACHE_DIR (set
// but empty: nowhere), else $XDG_CACHE_HOME/evla, else $HOME/.cache/evla.
std::string default_weight_cache_dir();

struct LoadOptions {
  bool load_tokenizer = true;
  // A missing tokenizer file is no error (the model can still be described,
  // or run on token ids given directly).
  bool tokenizer_optional = false;
  std::string weight_cache_dir = default_weight_cache_dir();  // "" = no cache
  // A plan's derived weights are cached only when deriving them took at least
  // this long: small ones are derived again faster than a file is written.
  double plan_cache_min_seconds = 0.5;
};

// Memory, in bytes.
struct MemoryUse {
  int64_t weights = 0;   // the checkpoint's tensors, used from its mapped files (shared with the page cache)
  int64_t derived = 0;   // arrays derived from them (packed, fused, converted at load; compacted, int8 by a plan)
  int64_t scratch = 0;   // a policy's per-inference buffers (activations, attention, sampler), as last grown
  int64_t peak_rss = 0;  // this process's peak resident set so far
};

// Analytic cost of one inference, per module, in FLOPs (2 per multiply-add).
struct FlopCount {
  double vision = 0, projector = 0, llm = 0, action_head = 0;
  double llm_int8 = 0;  // the part of llm in int8 layers
  double total() const { return vision + projector + llm + action_head; }
};

class Model {
 public:
  // Reads config.json, the safetensors weights and the tokenizer of `dir`.
  static std::shared_ptr<const Model> load(const std::string& dir, const LoadOptions& opts = {});
  ~Model();

  const std::string& name() const;
  const std::string& directory() const;
  // "cogact" (vision towers → Llama → DiT head) or "smolvla" (LeRobot's SmolVLA).
  std::string family() const;
  int action_dim() const;
  int action_horizon() const;
  // Actions per chunk to execute before the next inference (config's n_action_steps).
  int action_steps() const;
  int num_images() const;
  int image_size() const;
  int state_dim() const;
  int llm_layers() const;  // the language model's decoder layers
  int64_t num_params() const;
  // Names of the datasets whose action statistics the model holds (empty
  // when it holds one unnamed set); Observation::unnorm_key picks one.
  std::vector<std::string> unnorm_keys() const;
  // Weights mapped and derived at load, and the process's peak so far.
  MemoryUse memory() const;
  // What the load did with the derived-weight cache (read, wrote, off, or why not).
  const std::string& weight_cache_status() const;
  // One-paragraph human-readable description of the architecture.
  std::string describe() const;
  // The analytic cost of one inference under `plan`.
  FlopCount flops(const Plan& plan = Plan{}) const;
  // Throws evla::Error naming the problem if `plan` does not fit this model.
  void validate(const Plan& plan) const;

  // Internal (src/model/model_impl.h, not installed): for the offline tools
  // (analysis, plan building) and tests built with the library.
  const ModelImpl& impl() const { return *impl_; }

 private:
  Model() = default;
  std::unique_ptr<ModelImpl> impl_;
};

struct Observation {
  std::vector<Image> images;    // num_images RGB images; resized when needed
  std::string instruction;      // e.g. "pick up the coke can"
  std::vector<float> state;     // state_dim floats, when the model takes state
  uint64_t seed = 0;            // initial diffusion noise
  // Which dataset's action statistics un-normalise the actions (CogACT's
  // unnorm_key); may stay empty when the model has one set.
  std::string unnorm_key;

  // Verification hooks, for checking a model against another implementation
  // of it (e.g. a conversion against its PyTorch original). Empty: unused.
  std::vector<int> token_ids;    // the prompt's ids (BOS … cognition), instead of tokenizing
  std::vector<float> noise;      // chunk × action_dim ε instead of the seed's (scaled by noise_scale)
  std::vector<float> step_noise; // DDPM: steps × chunk × action_dim noise added per step
};

// An observation of the model's shape: mid-grey images, a short instruction,
// a zero state, the first dataset's statistics. For warm-ups and for
// measuring what one inference allocates.
Observation example_observation(const Model& model);

// Wall-clock milliseconds of the last inference, per module.
struct Timing {
  double vision_ms = 0, projector_ms = 0, llm_ms = 0, action_head_ms = 0, total_ms = 0;
};

struct ActionChunk {
  int horizon = 0;             // number of future steps
  int dim = 0;                 // action dimensions per step
  std::vector<float> actions;  // horizon × dim, un-normalised
  Timing timing;
  const float* row(int t) const { return actions.data() + size_t(t) * dim; }
};

struct PolicyOptions {
  int threads = 0;  // 0: EVLA_THREADS or the number of cores
};

class Policy {
 public:
  explicit Policy(std::shared_ptr<const Model> model, const PolicyOptions& opts = {});
  ~Policy();
  Policy(Policy&&) noexcept;
  Policy& operator=(Policy&&) noexcept;

  // Checks the plan against the model (evla::Error if it does not fit).
  void set_plan(const Plan& plan);
  const Plan& plan() const;
  const Model& model() const { return *model_; }

  // Runs the whole policy. Same model, plan, observation, seed and thread
  // count give bit-identical actions.
  // `observer` sees each stage's output as it is produced (evla/observer.h).
  ActionChunk infer(const Observation& obs, Observer* observer = nullptr);

  // The model's memory plus what this policy's plan derived (shared with
  // every Policy on the same plan) and its own scratch.
  MemoryUse memory() const;
  int64_t scratch_bytes() const;  // memory().scratch alone (cheap: no file or tensor scan)
  // What compiling the plan did with the plan cache (read, wrote, not written
  // and why, off).
  const std::string& plan_cache_status() const;
  // Frees this policy's per-inference buffers; the next inference allocates
  // them again. For after an unusually large request (a long prompt).
  void release_scratch();

  // The last inference's cognition feature (the LM's final-norm hidden at the
  // cognition token, hidden_size values): what conditions the action head.
  const std::vector<float>& cognition() const;

  // Internal (src/model/model_impl.h, not installed): for tests.
  PolicyState& state() { return *state_; }

 private:
  std::shared_ptr<const Model> model_;
  std::unique_ptr<PolicyState> state_;
};

// A Llama-family decoder on its own (e.g. a Hugging Face LlamaForCausalLM
// directory): token ids in, hidden states and logits out.
class LanguageModel {
 public:
  static std::shared_ptr<const LanguageModel> load(const std::string& dir);
  ~LanguageModel();

  struct Output {
    int tokens = 0, hidden_size = 0, vocab_size = 0;
    std::vector<std::vector<float>> hidden;  // layers+1 entries of tokens × hidden_size:
                                             // input of each layer, then last output
    std::vector<float> final_hidden;         // after the final norm
    std::vector<float> logits;               // tokens × vocab_size
  };
  Output forward(const std::vector<int>& ids, int threads = 0) const;
  // Greedy decoding: appends `n_new` argmax tokens to `prompt`.
  std::vector<int> generate_greedy(const std::vector<int>& prompt, int n_new, int threads = 0) const;
  int vocab_size() const;

 private:
  LanguageModel() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace evla
