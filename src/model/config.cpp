#include "model/config.h"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "core/json_reader.h"
#include "evla/error.h"

namespace evla {

int VisionConfig::feature_dim() const {
  int d = 0;
  for (const auto& e : encoders) d += e.hidden_size;
  return d;
}

int VisionConfig::tokens_per_image() const { return encoders.at(0).num_patches(); }

namespace {

void require_positive(const JsonReader& r, const std::string& key, int64_t v) {
  if (v <= 0) r.fail(key, "must be positive, got " + std::to_string(v));
}

// Every size has an upper bound (docs/format.md, Limits), so that products
// of sizes fit the int32 element counts the kernels index with and a hostile
// config cannot ask for terabytes before the weights are checked.
int positive(const JsonReader& r, const std::string& key, int64_t max = int64_t(1) << 20) {
  int64_t v = r.integer(key);
  require_positive(r, key, v);
  if (v > max) r.fail(key, "must be at most " + std::to_string(max) + ", got " + std::to_string(v));
  return int(v);
}

// A product of sizes (a tensor or buffer), checked against int32 element counts.
void check_product(const JsonReader& r, const std::string& key, std::initializer_list<int64_t> dims,
                   const std::string& what) {
  int64_t p = 1;
  for (int64_t d : dims) {
    if (d > 0 && p > (int64_t(1) << 31) / d)
      r.fail(key, what + " would exceed 2^31 elements");
    p *= d;
  }
}

// A real-valued setting: finite as a float and inside [lo, hi].
float number_in(const JsonReader& r, const std::string& key, double fallback, double lo, double hi) {
  const double v = r.number(key, fallback);
  if (!(v >= lo && v <= hi))
    r.fail(key, "must be a finite number in [" + fmt::format("{:g}, {:g}", lo, hi) + "], got " + fmt::format("{:g}", v));
  return float(v);
}

void read_rgb(const JsonReader& r, const std::string& key, float* dst, float fallback) {
  if (!r.has(key)) {
    for (int c = 0; c < 3; ++c) dst[c] = fallback;
    return;
  }
  auto v = r.numbers(key);
  if (v.size() != 3) r.fail(key, "expected 3 numbers (R, G, B), got " + std::to_string(v.size()));
  for (int c = 0; c < 3; ++c) {
    if (!(std::abs(v[c]) <= 1e6)) r.fail(key, "entries must be finite numbers of magnitude at most 1e6");
    dst[c] = float(v[c]);
  }
}

VitConfig parse_vit(const JsonReader& r) {
  VitConfig c;
  c.name = r.string("name", "encoder");
  c.prefix = r.string("prefix");
  c.image_size = positive(r, "image_size", 4096);
  c.patch_size = positive(r, "patch_size", 4096);
  c.hidden_size = positive(r, "hidden_size", 65536);
  c.num_layers = positive(r, "num_layers", 1024);
  c.num_heads = positive(r, "num_heads", 4096);
  c.intermediate_size = positive(r, "intermediate_size", 1 << 20);
  c.class_token = r.boolean("class_token", false);
  c.num_registers = r.int32("num_registers", 0);
  if (c.num_registers < 0 || c.num_registers > 64) r.fail("num_registers", "must be in [0, 64]");
  c.layer_scale = r.boolean("layer_scale", false);
  c.feature_layer = r.int32("feature_layer", c.num_layers - 2);
  c.norm_eps = number_in(r, "norm_eps", 1e-6, 1e-30, 1);
  read_rgb(r, "image_mean", c.image_mean, 0.5f);
  read_rgb(r, "image_std", c.image_std, 0.5f);
  for (int k = 0; k < 3; ++k)
    if (!(c.image_std[k] > 0)) r.fail("image_std", "entries must be positive");
  if (c.image_size % c.patch_size != 0)
    r.fail("image_size", "must be a multiple of patch_size (" + std::to_string(c.patch_size) + ")");
  if (c.hidden_size % c.num_heads != 0)
    r.fail("hidden_size", "must be a multiple of num_heads (" + std::to_string(c.num_heads) + ")");
  const int64_t tokens = int64_t(c.grid()) * c.grid() + c.num_prefix_tokens();
  check_product(r, "image_size", {tokens, c.hidden_size}, "(image_size / patch_size)² tokens × hidden_size");
  check_product(r, "image_size", {tokens, c.intermediate_size}, "(image_size / patch_size)² tokens × intermediate_size");
  check_product(r, "image_size", {tokens, tokens}, "the attention matrix of (image_size / patch_size)² tokens");
  check_product(r, "intermediate_size", {c.hidden_size, c.intermediate_size}, "hidden_size × intermediate_size");
  check_product(r, "patch_size", {c.hidden_size, 3, c.patch_size, c.patch_size}, "the patch embedding");
  if (c.feature_layer < 0 || c.feature_layer >= c.num_layers)
    r.fail("feature_layer", "must be a block index in [0, " + std::to_string(c.num_layers) +
                                "), got " + std::to_string(c.feature_layer));
  return c;
}

LlamaConfig parse_llama(const JsonReader& r) {
  LlamaConfig c;
  c.prefix = r.string("prefix", "");
  c.hidden_size = positive(r, "hidden_size", 65536);
  c.intermediate_size = positive(r, "intermediate_size", 1 << 20);
  c.num_layers = positive(r, "num_hidden_layers", 1024);
  c.num_heads = positive(r, "num_attention_heads", 4096);
  c.num_kv_heads = r.int32("num_key_value_heads", c.num_heads);
  require_positive(r, "num_key_value_heads", c.num_kv_heads);
  c.vocab_size = positive(r, "vocab_size", 1 << 24);
  if (r.has("max_position_embeddings")) c.max_positions = positive(r, "max_position_embeddings", 1 << 20);
  c.rms_norm_eps = number_in(r, "rms_norm_eps", 1e-5, 1e-30, 1);
  c.rope_theta = number_in(r, "rope_theta", 10000.0, 1, 1e12);
  check_product(r, "vocab_size", {c.vocab_size, c.hidden_size}, "the embedding, vocab_size × hidden_size,");
  check_product(r, "intermediate_size", {c.hidden_size, c.intermediate_size}, "hidden_size × intermediate_size");
  c.bos_token_id = r.int32("bos_token_id", 1);
  c.eos_token_id = r.int32("eos_token_id", 2);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (c.hidden_size % c.num_heads != 0)
    r.fail("hidden_size", "must be a multiple of num_attention_heads");
  if (c.num_heads % c.num_kv_heads != 0)
    r.fail("num_key_value_heads", "must divide num_attention_heads (" +
                                      std::to_string(c.num_heads) + ")");
  if (c.head_dim() % 2 != 0) r.fail("hidden_size", "head dimension must be even for RoPE");
  c.layers.assign(size_t(c.num_layers), LlamaLayerShape{true, true, c.intermediate_size});
  if (r.has("layers")) {  // a physically pruned checkpoint
    if (!r.node().at("layers").is_array()) r.fail("layers", "expected an array of layer objects");
    JsonReader list(r.node().at("layers"), r.source(), r.key_path("layers"));
    if (int(list.size()) != c.num_layers)
      r.fail("layers", "must describe num_hidden_layers (" + std::to_string(c.num_layers) + ") layers");
    for (int i = 0; i < c.num_layers; ++i) {
      JsonReader e = list.at(size_t(i));
      auto& L = c.layers[size_t(i)];
      L.attn = e.boolean("attention", true);
      L.mlp = e.boolean("mlp", true);
      L.intermediate_size = e.int32("intermediate_size", c.intermediate_size);
      if (L.intermediate_size < 1 || L.intermediate_size > c.intermediate_size)
        e.fail("intermediate_size", "must be in [1, llm.intermediate_size (" + std::to_string(c.intermediate_size) + ")]");
    }
  }
  return c;
}

}  // namespace

LlamaConfig parse_hf_llama_config(const nlohmann::json& j, const std::string& source) {
  return parse_llama(JsonReader(j, source));
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source) {
  JsonReader root(j, source);
  ModelConfig m;
  m.raw = j;
  const int64_t version = root.integer("evla_format");
  if (version != 1) root.fail("evla_format", "unsupported version " + std::to_string(version));
  const std::string arch = root.string("architecture");
  if (arch != "cogact") root.fail("architecture", "unsupported architecture '" + arch + "'");
  m.name = root.string("name", "unnamed");

  // Vision
  JsonReader vis = root.child("vision");
  m.vision.num_images = vis.int32("num_images", 1);
  if (m.vision.num_images < 1 || m.vision.num_images > 8) vis.fail("num_images", "must be in [1, 8]");
  if (!vis.has("encoders") || !vis.node().at("encoders").is_array())
    vis.fail("encoders", "expected an array of encoder objects");
  JsonReader encs(vis.node().at("encoders"), source, vis.key_path("encoders"));
  if (encs.size() < 1 || encs.size() > 2) vis.fail("encoders", "must hold 1 or 2 encoders");
  for (size_t i = 0; i < encs.size(); ++i) m.vision.encoders.push_back(parse_vit(encs.at(i)));
  if (m.vision.encoders.size() == 2) {
    const auto &a = m.vision.encoders[0], &b = m.vision.encoders[1];
    if (a.grid() != b.grid() || a.image_size != b.image_size)
      vis.fail("encoders", "both encoders must see the same image_size and patch grid");
  }

  // Projector
  JsonReader proj = root.child("projector");
  m.projector.prefix = proj.string("prefix");
  for (int64_t d : proj.integers("hidden_dims")) {
    if (d <= 0 || d > (1 << 20)) proj.fail("hidden_dims", "entries must be in [1, 1048576]");
    m.projector.hidden_dims.push_back(int(d));
  }

  // Language model
  m.llm = parse_llama(root.child("llm"));

  // Prompt
  if (root.has("prompt")) {
    JsonReader p = root.child("prompt");
    m.prompt.tokenizer = p.string("tokenizer", m.prompt.tokenizer);
    m.prompt.tmpl = p.string("template", m.prompt.tmpl);
    if (m.prompt.tmpl.find("{instruction}") == std::string::npos)
      p.fail("template", "must contain {instruction}");
    m.prompt.lowercase_instruction = p.boolean("lowercase_instruction", true);
    m.prompt.space_token_id = p.int32("space_token_id", m.prompt.space_token_id);
    m.prompt.cognition_token_id = p.int32("cognition_token_id", m.llm.eos_token_id);
  }
  // Checked here, defaults included, so a bad id fails at load and not at the first inference.
  const auto outside_vocab = [&](int id) { return id < 0 || id >= m.llm.vocab_size; };
  const std::string vocab = "outside the vocabulary of " + std::to_string(m.llm.vocab_size);
  if (m.prompt.space_token_id != -1 && outside_vocab(m.prompt.space_token_id))
    root.fail("prompt.space_token_id", vocab + ": " + std::to_string(m.prompt.space_token_id) +
                                           (root.has("prompt") && root.child("prompt").has("space_token_id")
                                                ? std::string()
                                                : " (the default, for a Llama-2 tokenizer; set it, or -1 for none)"));
  if (outside_vocab(m.prompt.cognition_token_id))
    root.fail("prompt.cognition_token_id", vocab + ": " + std::to_string(m.prompt.cognition_token_id));
  if (outside_vocab(m.llm.bos_token_id))
    root.fail("llm.bos_token_id", vocab + ": " + std::to_string(m.llm.bos_token_id));

  // Action head
  JsonReader ah = root.child("action_head");
  auto& a = m.action_head;
  a.prefix = ah.string("prefix");
  a.hidden_size = positive(ah, "hidden_size", 65536);
  a.num_layers = positive(ah, "num_layers", 1024);
  a.num_heads = positive(ah, "num_heads", 4096);
  a.mlp_ratio = number_in(ah, "mlp_ratio", 4.0, 0, 64);
  a.action_dim = positive(ah, "action_dim", 1024);
  a.chunk_size = positive(ah, "chunk_size", 4096);
  a.cond_dim = positive(ah, "cond_dim", 65536);
  a.state_dim = ah.int32("state_dim", 0);
  a.frequency_embedding_size = positive(ah, "frequency_embedding_size", 65536);
  a.norm_eps = number_in(ah, "norm_eps", 1e-6, 1e-30, 1);
  a.train_steps = positive(ah, "train_steps", 100000);
  a.beta_schedule = ah.string("beta_schedule", "squaredcos_cap_v2");
  a.sampler = ah.string("sampler", "ddim");
  if (a.sampler != "ddim" && a.sampler != "ddpm") ah.fail("sampler", "must be \"ddim\" or \"ddpm\", got '" + a.sampler + "'");
  a.sample_steps = ah.int32("sample_steps", a.sampler == "ddpm" ? a.train_steps : 10);
  a.cfg_scale = number_in(ah, "cfg_scale", 1.5, 0, 100);
  a.noise_scale = float(ah.number("noise_scale", 1.0));
  if (!(a.noise_scale >= 0 && a.noise_scale <= 10)) ah.fail("noise_scale", "must be between 0 and 10");
  a.n_action_steps = ah.int32("n_action_steps", std::min(4, a.chunk_size));
  if (a.n_action_steps < 1 || a.n_action_steps > a.chunk_size)
    ah.fail("n_action_steps", "must be between 1 and chunk_size (" + std::to_string(a.chunk_size) + ")");
  if (a.state_dim < 0 || a.state_dim > 65536) ah.fail("state_dim", "must be in [0, 65536]");
  check_product(ah, "hidden_size", {a.hidden_size, a.mlp_hidden()}, "hidden_size × mlp_ratio × hidden_size");
  check_product(ah, "chunk_size", {a.chunk_size + 2, a.chunk_size + 2, a.num_heads}, "the attention of chunk_size tokens");
  if (a.hidden_size % a.num_heads != 0) ah.fail("hidden_size", "must be a multiple of num_heads");
  if (a.cond_dim != m.llm.hidden_size)
    ah.fail("cond_dim", "must equal llm.hidden_size (" + std::to_string(m.llm.hidden_size) + ")");
  if (a.sampler == "ddim" && (a.sample_steps < 1 || a.sample_steps > a.train_steps ||
                              ddim_timesteps(a.train_steps, a.sample_steps).empty()))
    ah.fail("sample_steps", "no integer stride gives exactly " + std::to_string(a.sample_steps) + " of the " +
                                std::to_string(a.train_steps) + " training steps (CogACT's ddimN respacing)");
  if (a.beta_schedule != "squaredcos_cap_v2" && a.beta_schedule != "linear")
    ah.fail("beta_schedule", "unsupported schedule '" + a.beta_schedule + "'");
  if (a.beta_schedule == "linear" && a.train_steps <= 20)  // its last beta is 20 / train_steps
    ah.fail("train_steps", "the linear beta schedule needs more than 20 steps (its betas would reach 1)");
  if (a.frequency_embedding_size % 2 != 0) ah.fail("frequency_embedding_size", "must be even");
  if (a.mlp_hidden() <= 0) ah.fail("mlp_ratio", "must be positive");

  // Action normalisation: one unnamed set, or one per dataset.
  auto& n = m.action_norm;
  const size_t ad = size_t(a.action_dim);
  const auto read_stats = [&](const JsonReader& r) { return parse_action_stats(r, ad); };
  if (root.has("action_normalization")) {
    JsonReader an = root.child("action_normalization");
    n.gripper_index = an.int32("gripper_index", a.action_dim - 1);
    if (an.has("datasets")) {
      JsonReader ds = an.child("datasets");
      if (ds.node().empty()) an.fail("datasets", "must name at least one dataset");
      for (const auto& [key, value] : ds.node().items()) {
        if (key.empty()) ds.fail(key, "dataset names must not be empty");
        n.datasets[key] = read_stats(ds.child(key));
      }
    } else {
      n.datasets[""] = read_stats(an);
    }
    if (n.gripper_index < -1 || n.gripper_index >= a.action_dim)
      an.fail("gripper_index", "must be -1 or an action dimension");
  } else {
    // No statistics: actions stay in the normalised space.
    n.datasets[""] = ActionStats{std::vector<float>(ad, -1.f), std::vector<float>(ad, 1.f), std::vector<bool>(ad, true)};
    n.gripper_index = -1;
  }
  return m;
}

ActionStats parse_action_stats(const JsonReader& r, size_t action_dim) {
  ActionStats st;
  for (const char* key : {"q01", "q99"})
    for (double v : r.numbers(key)) {
      if (!(std::abs(v) <= 1e30)) r.fail(key, "entries must be finite numbers of magnitude at most 1e30");
      (key[1] == '0' ? st.q01 : st.q99).push_back(float(v));
    }
  if (r.has("mask")) st.mask = r.booleans("mask");
  const std::string n = std::to_string(action_dim);
  if (st.q01.size() != action_dim) r.fail("q01", "must have action_dim (" + n + ") entries");
  if (st.q99.size() != action_dim) r.fail("q99", "must have action_dim (" + n + ") entries");
  if (st.mask.empty()) st.mask.assign(action_dim, true);
  if (st.mask.size() != action_dim) r.fail("mask", "must have action_dim (" + n + ") entries");
  return st;
}

std::vector<int> ddim_timesteps(int train_steps, int sample_steps) {
  // ddim1 is step 50 whatever the schedule's length, as improved-diffusion fixes it.
  if (sample_steps == 1) return train_steps > 50 ? std::vector<int>{50} : std::vector<int>{};
  for (int k = 1; k < train_steps; ++k)
    if ((train_steps + k - 1) / k == sample_steps) {
      std::vector<int> ts;
      for (int t = (sample_steps - 1) * k; t >= 0; t -= k) ts.push_back(t);
      return ts;
    }
  return {};
}

std::vector<std::string> ActionNormConfig::keys() const {
  std::vector<std::string> out;
  for (const auto& [key, stats] : datasets)
    if (!key.empty()) out.push_back(key);
  return out;
}

const ActionStats& ActionNormConfig::select(const std::string& key) const {
  if (key.empty() && datasets.size() == 1) return datasets.begin()->second;
  if (auto it = datasets.find(key); !key.empty() && it != datasets.end()) return it->second;
  std::string names;
  for (const std::string& k : keys()) names += (names.empty() ? "" : ", ") + k;
  if (names.empty()) throw Error("unnorm_key '" + key + "': the model has one unnamed set of action statistics");
  if (key.empty())
    throw Error("the model has action statistics for " + std::to_string(datasets.size()) +
                " datasets; choose one with unnorm_key: " + names);
  throw Error("unnorm_key '" + key + "': no such dataset statistics; the model has: " + names);
}

ModelConfig load_model_config(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) throw Error(model_dir + ": no config.json in model directory");
  return parse_model_config(read_json_file(path), path);
}

}  // namespace evla
