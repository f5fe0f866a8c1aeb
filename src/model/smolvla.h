// SmolVLA (LeRobot): a SmolVLM2 backbone (SigLIP vision at 512 px, pixel
// shuffle, the first layers of a SmolLM2 decoder) that runs once over the
// prefix [camera tokens | language | state], and a narrower action expert that
// runs every flow-matching step, attending to the VLM layer's keys and values
// (self-attention over [prefix | actions] on every self_attn_every_n_layers-th
// layer, cross-attention through its own projections on the others).
// Read from a checkpoint in LeRobot's own layout (docs/format.md, "SmolVLA").
#pragma once
#include <string>
#include <vector>

#include "evla/evla.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/vit.h"
#include "model/weights.h"

namespace evla {

class ThreadPool;

struct SmolVlaConfig {
  std::string name;
  std::vector<std::string> cameras;  // input_features of type VISUAL, in order
  int state_dim = 0, action_dim = 0;
  int chunk = 50, n_action_steps = 50, max_state_dim = 32, max_action_dim = 32;
  bool resize = true;  // resize_imgs_with_padding set (else images must come at the tower's size)
  int resize_width = 512, resize_height = 512;
  int tokenizer_max_length = 48, num_steps = 10;
  bool normalize_state = true, normalize_action = true;  // normalization_mapping MEAN_STD (else IDENTITY)
  int num_vlm_layers = 16, num_expert_layers = 16, self_attn_every = 2;
  double min_period = 4e-3, max_period = 4.0;
  // The VLM (from vlm_model_name, or config.json's evla_vlm).
  VitConfig vision;
  int scale_factor = 4;
  int hidden = 960, heads = 15, kv_heads = 5, head_dim = 64, intermediate = 2560, vocab_size = 49280;
  float rms_eps = 1e-5f;
  int expert_width = 720, expert_intermediate = 2048;
  std::string tokenizer = "tokenizer.json";

  int tokens_per_image() const { return vision.num_patches() / (scale_factor * scale_factor); }
  // As LeRobot decides it: self-attention where the index is a multiple of
  // self_attn_every_n_layers (none when it is 0), cross-attention elsewhere.
  bool cross_layer(int l) const { return !(self_attn_every > 0 && l % self_attn_every == 0); }
};

// Mean and standard deviation of a feature (empty: identity).
struct FeatureStats {
  std::vector<float> mean, std;
};

// True when dir/config.json is a LeRobot smolvla policy config.
bool is_smolvla_dir(const std::string& dir);
// Reads dir/config.json; throws evla::Error naming the field.
SmolVlaConfig load_smolvla_config(const std::string& dir);

struct SmolVlaScratch {
  std::vector<float> rgb, pixels, features, shuffled, prefix, x, h, q, attn, gate_up, attn_scratch;
  std::vector<float> self_cos, self_sin, cross_cos, cross_sin;  // rotary tables of the action tokens
  std::vector<float> noise, sample, suffix, velocity, time_in;
  std::vector<std::vector<float>> keys, values;  // per VLM layer: [prefix (+ chunk on self layers), kv width]
  std::vector<int> ids, positions;
  VitScratch vit;
};

class SmolVla {
 public:
  SmolVla(const SmolVlaConfig& cfg, WeightStore& store, const std::string& dir);
  const SmolVlaConfig& config() const { return cfg_; }

  // One inference: images in camera order (any size: resized with padding),
  // the language ids (already tokenized, at most tokenizer_max_length), the
  // raw state, the starting noise [chunk, max_action_dim]. Returns the
  // un-normalised actions [chunk, action_dim].
  std::vector<float> infer(const std::vector<Image>& images, const std::vector<int>& ids,
                           const std::vector<float>& state, const std::vector<float>& noise, SmolVlaScratch& s,
                           ThreadPool& pool, Observer* obs, Timing& timing) const;
  double flops(int language_tokens, FlopCount& f) const;

 private:
  struct ExpertLayer {
    LlamaLayer layer;  // q, k, v, o, gate, up, down and norms (k, v read prefix keys / values on cross layers)
    bool cross = false;
  };
  void vlm_prefix(SmolVlaScratch& s, int P, ThreadPool& pool, Observer* obs) const;
  void velocity(SmolVlaScratch& s, int P, float t, ThreadPool& pool) const;

  SmolVlaConfig cfg_;
  Vit vision_;
  Linear connector_;  // [hidden, scale² · vision width], no bias
  Linear embed_tokens_;
  std::vector<LlamaLayer> vlm_;
  std::vector<ExpertLayer> expert_;
  const float* expert_norm_ = nullptr;
  Linear state_proj_, action_in_, action_out_, time_in_, time_out_;
  FeatureStats state_stats_, action_stats_;
};

}  // namespace evla
