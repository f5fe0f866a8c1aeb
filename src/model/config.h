// The architecture of a model, read from config.json. Every size the runtime
// uses comes from here; docs/format.md documents each key.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace evla {

struct VitConfig {
  std::string name;
  std::string prefix;
  int image_size = 224;
  int patch_size = 14;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  bool class_token = false;
  int num_registers = 0;
  bool layer_scale = false;
  int feature_layer = 0;  // block whose output is taken
  float norm_eps = 1e-6f;
  // Hugging Face's SigLIP layout (SmolVLM's vision_model: embeddings.*,
  // encoder.layers.N.* with separate q/k/v projections) instead of timm's.
  bool hf_layout = false;
  bool gelu_tanh = false;  // GELU's tanh approximation (SmolVLM's SigLIP) instead of erf's
  bool post_norm = false;  // the features through the final LayerNorm (post_layernorm / norm)
  float image_mean[3] = {0.5f, 0.5f, 0.5f};
  float image_std[3] = {0.5f, 0.5f, 0.5f};

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int num_prefix_tokens() const { return (class_token ? 1 : 0) + num_registers; }
};

struct VisionConfig {
  int num_images = 1;
  std::vector<VitConfig> encoders;
  int feature_dim() const;      // sum of encoder widths
  int tokens_per_image() const;  // patches of one image
  int image_size() const { return encoders.at(0).image_size; }
};

struct ProjectorConfig {
  std::string prefix;
  std::vector<int> hidden_dims;
};

// One decoder block of a physically pruned checkpoint (config `llm.layers`).
struct LlamaLayerShape {
  bool attn = true;
  bool mlp = true;
  int intermediate_size = 0;
};

struct LlamaConfig {
  std::string prefix;  // "" for a bare Hugging Face checkpoint
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int vocab_size = 0;
  // max_position_embeddings: the longest sequence (BOS, visual tokens and the
  // prompt's tokens) the model accepts; a longer prompt is an error.
  int max_positions = 2048;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  int bos_token_id = 1;
  int eos_token_id = 2;
  bool tie_word_embeddings = false;
  std::vector<LlamaLayerShape> layers;  // one per layer (filled in by the parser)
  int head_dim() const { return hidden_size / num_heads; }
};

// The prompt's defaults are CogACT's (the one place they are written down).
struct PromptConfig {
  std::string tokenizer = "tokenizer.model";
  std::string tmpl = "In: What action should the robot take to {instruction}?\nOut: ";
  bool lowercase_instruction = true;
  int space_token_id = 29871;  // -1: never appended
  int cognition_token_id = 2;
};

struct ActionHeadConfig {
  std::string prefix;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  float mlp_ratio = 4.f;
  int action_dim = 7;
  int chunk_size = 16;
  int cond_dim = 0;
  int state_dim = 0;
  int frequency_embedding_size = 256;
  float norm_eps = 1e-6f;
  int train_steps = 100;
  std::string beta_schedule = "squaredcos_cap_v2";
  // "ddim": eta 0 over sample_steps respaced steps; "ddpm": every training step.
  std::string sampler = "ddim";
  int sample_steps = 10;
  float cfg_scale = 1.5f;
  // The sampler starts from noise_scale · ε, ε ~ N(0, I) (from the
  // observation's seed): below 1, samples lean towards the mode of the
  // learned action distribution (a sampling temperature).
  float noise_scale = 1.0f;
  // Actions of each chunk a controller executes before it asks again (LeRobot's
  // n_action_steps): how far the policy was validated to run open loop.
  int n_action_steps = 4;

  int mlp_hidden() const { return int(hidden_size * mlp_ratio); }
  // Network evaluations per inference.
  int steps() const { return sampler == "ddpm" ? train_steps : sample_steps; }
  bool use_cfg() const { return cfg_scale > 1.0f; }
  int batch() const { return use_cfg() ? 2 : 1; }
};

// One dataset's action statistics: a = 0.5·(x+1)·(q99−q01) + q01 on the
// dimensions whose mask is true; the others pass through.
struct ActionStats {
  std::vector<float> q01, q99;
  std::vector<bool> mask;
};

class JsonReader;
// {"q01": [..], "q99": [..], "mask": [..]} with action_dim entries each (mask
// optional, all true); errors name the key.
ActionStats parse_action_stats(const JsonReader& r, size_t action_dim);

struct ActionNormConfig {
  // By dataset name (CogACT's unnorm_key); a config with one unnamed set
  // holds it under "".
  std::map<std::string, ActionStats> datasets;
  int gripper_index = -1;
  // The statistics for `key`. With one set, "" picks it; with several, ""
  // and unknown keys are errors that list the names.
  const ActionStats& select(const std::string& key) const;
  std::vector<std::string> keys() const;  // the named sets
};

struct ModelConfig {
  std::string name;
  VisionConfig vision;
  ProjectorConfig projector;
  LlamaConfig llm;
  PromptConfig prompt;
  ActionHeadConfig action_head;
  ActionNormConfig action_norm;
  nlohmann::json raw;  // as read, for tools that print it
};

// CogACT's "ddimN" respacing (improved-diffusion's space_timesteps): the
// training steps 0, k, 2k, … for the smallest integer stride k that gives
// exactly N of them (N = 1: step 50), in sampling order. Empty when no
// stride gives N.
std::vector<int> ddim_timesteps(int train_steps, int sample_steps);

// Parses and validates; errors name `source` and the offending key.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& model_dir);

// A Hugging Face LlamaForCausalLM config.json (for running a bare LM).
LlamaConfig parse_hf_llama_config(const nlohmann::json& j, const std::string& source);

}  // namespace evla
