// Model: loading a model directory, describing it, and its analytic cost.
#include <filesystem>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model/schedule.h"
#include "core/memory_info.h"
#include "io/unicode.h"
#include "model/model_impl.h"

namespace evla {

namespace fs = std::filesystem;

Model::~Model() = default;

namespace {

// Loading materialises fp32 arrays beside the mapped file: 16-bit tensors
// that are not matrices (embedding tables, position embeddings, patch
// convolutions, norms; 16-bit matrices are used in place) and, for an fp32
// language model, each layer's fused q/k/v and gate/up matrices. A model that
// cannot fit is refused before any of it is allocated.
void check_load_memory(const ModelConfig& cfg, const io::TensorStore& tensors, const std::string& dir) {
  double bytes = 0;
  bool llm_f32 = true;
  for (const std::string& name : tensors.names()) {
    const io::TensorInfo& t = tensors.get(name);
    const bool sixteen = t.dtype == io::DType::F16 || t.dtype == io::DType::BF16;
    if (name.find("lm_head") != std::string::npos) continue;  // a policy never loads it
    if (name.find("self_attn.q_proj") != std::string::npos) llm_f32 = !sixteen;
    const bool matrix = t.shape.size() == 2 && name.find("embed_tokens") == std::string::npos;
    if (sixteen && !matrix) bytes += 4.0 * double(t.numel());
  }
  const auto& l = cfg.llm;
  for (const auto& layer : l.layers) {
    if (!llm_f32) break;
    if (layer.attn) bytes += 4.0 * double(l.hidden_size) * double(l.hidden_size + 2 * l.num_kv_heads * l.head_dim());
    if (layer.mlp) bytes += 4.0 * 2.0 * double(l.hidden_size) * double(layer.intermediate_size);
  }
  const uint64_t avail = available_memory_bytes();
  if (avail > 0 && bytes > double(avail))
    throw Error(fmt::format("{}: loading needs about {:.1f} GB for fp32 weights (the language model's fused "
                            "matrices, 16-bit tables converted) but {:.1f} GB of memory is available",
                            dir, bytes / 1e9, double(avail) / 1e9));
}

// A SmolVLA policy directory in LeRobot's layout, plus the tokenizer.json of
// its VLM (LeRobot fetches it by vlm_model_name; evla reads it beside the model).
void load_smolvla(ModelImpl& im, const LoadOptions& opts) {
  const SmolVlaConfig cfg = load_smolvla_config(im.dir);
  im.weights = std::make_unique<WeightStore>(io::TensorStore::open_dir(im.dir));
  im.weights->use_cache(opts.weight_cache_dir);
  im.cache_dir = opts.weight_cache_dir;
  im.plan_cache_min_seconds = opts.plan_cache_min_seconds;
  im.smolvla = std::make_unique<SmolVla>(cfg, *im.weights, im.dir);
  im.weights->save_cache();
  im.cfg.name = cfg.name;
  // Beside the model, or where newer LeRobot saves its processor's tokenizer.
  std::string tok = (fs::path(im.dir) / cfg.tokenizer).string();
  if (const fs::path nested = fs::path(im.dir) / "tokenizer" / cfg.tokenizer; !fs::exists(tok) && fs::exists(nested))
    tok = nested.string();
  if (!opts.load_tokenizer || (opts.tokenizer_optional && !fs::exists(tok))) return;
  if (!fs::exists(tok))
    throw Error(tok + ": missing; SmolVLA reads its VLM's tokenizer.json (" + cfg.tokenizer +
                " of the vlm_model_name repository) from the model directory");
  im.tokenizer = io::load_tokenizer(tok);
  if (im.tokenizer->vocab_size() > cfg.vocab_size)
    throw Error(fmt::format("{}: tokenizer has {} tokens but the VLM's vocabulary has {}", tok,
                            im.tokenizer->vocab_size(), cfg.vocab_size));
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  if (!fs::is_directory(dir)) throw Error(dir + ": not a model directory");
  std::shared_ptr<Model> m(new Model());
  m->impl_ = std::make_unique<ModelImpl>();
  ModelImpl& im = *m->impl_;
  im.dir = dir;
  if (is_smolvla_dir(dir)) {
    load_smolvla(im, opts);
    return m;
  }
  im.cfg = load_model_config(dir);
  io::TensorStore tensors = io::TensorStore::open_dir(dir);
  check_load_memory(im.cfg, tensors, dir);
  im.weights = std::make_unique<WeightStore>(std::move(tensors));
  WeightStore& w = *im.weights;
  w.use_cache(opts.weight_cache_dir);
  im.cache_dir = opts.weight_cache_dir;
  im.plan_cache_min_seconds = opts.plan_cache_min_seconds;
  for (const auto& ec : im.cfg.vision.encoders) im.encoders.emplace_back(ec, WeightLoader(w, ec.prefix));
  im.projector = std::make_unique<Projector>(im.cfg.projector, im.cfg.vision.feature_dim(),
                                             im.cfg.llm.hidden_size, w);
  im.llm = std::make_unique<Llama>(im.cfg.llm, w, /*need_lm_head=*/false);
  im.dit = std::make_unique<Dit>(im.cfg.action_head, w);
  im.schedule = DiffusionSchedule::make(im.cfg.action_head);
  w.save_cache();
  const std::string tok = (fs::path(dir) / im.cfg.prompt.tokenizer).string();
  if (opts.load_tokenizer && !(opts.tokenizer_optional && !fs::exists(tok))) {
    im.tokenizer = io::load_tokenizer(tok);
    if (im.tokenizer->vocab_size() > im.cfg.llm.vocab_size)
      throw Error(tok + ": tokenizer has " + std::to_string(im.tokenizer->vocab_size()) +
                  " pieces but llm.vocab_size is " + std::to_string(im.cfg.llm.vocab_size));
  }
  return m;
}

std::vector<int> ModelImpl::prompt_ids(const std::string& instruction) const {
  if (!tokenizer)
    throw Error(dir + ": no tokenizer loaded (" + cfg.prompt.tokenizer +
                "): the instruction cannot be tokenized; give the token ids instead");
  // CogACT lower-cases with Python's str.lower(): Unicode, not ASCII only.
  const std::string lowered = cfg.prompt.lowercase_instruction ? io::lowercase_utf8(instruction) : instruction;
  // prismatic's PurePromptBuilder deletes "<image>" from the turn (one
  // left-to-right pass, as Python's str.replace), after the lower-casing.
  static const std::string image_tag = "<image>";
  std::string instr;
  for (size_t i = 0; i < lowered.size();) {
    if (lowered.compare(i, image_tag.size(), image_tag) == 0) {
      i += image_tag.size();
    } else {
      instr += lowered[i++];
    }
  }
  std::string prompt = cfg.prompt.tmpl;
  prompt.replace(prompt.find("{instruction}"), 13, instr);
  std::vector<int> ids = tokenizer->encode(prompt, /*add_bos=*/true);
  if (cfg.prompt.space_token_id >= 0 && (ids.empty() || ids.back() != cfg.prompt.space_token_id))
    ids.push_back(cfg.prompt.space_token_id);
  ids.push_back(cfg.prompt.cognition_token_id);
  return ids;
}

const std::string& Model::name() const { return impl_->cfg.name; }
const std::string& Model::directory() const { return impl_->dir; }
std::string Model::family() const { return impl_->smolvla ? "smolvla" : "cogact"; }
int Model::action_dim() const {
  return impl_->smolvla ? impl_->smolvla->config().action_dim : impl_->cfg.action_head.action_dim;
}
int Model::action_horizon() const {
  return impl_->smolvla ? impl_->smolvla->config().chunk : impl_->cfg.action_head.chunk_size;
}
int Model::action_steps() const {
  return impl_->smolvla ? impl_->smolvla->config().n_action_steps : impl_->cfg.action_head.n_action_steps;
}
int Model::num_images() const {
  return impl_->smolvla ? int(impl_->smolvla->config().cameras.size()) : impl_->cfg.vision.num_images;
}
int Model::image_size() const {
  return impl_->smolvla ? impl_->smolvla->config().vision.image_size : impl_->cfg.vision.image_size();
}
int Model::state_dim() const {
  return impl_->smolvla ? impl_->smolvla->config().state_dim : impl_->cfg.action_head.state_dim;
}
int64_t Model::num_params() const { return impl_->weights->loaded_params(); }
MemoryUse Model::memory() const {
  MemoryUse m;
  const io::TensorStore& t = impl_->weights->tensors();
  for (const std::string& name : t.names()) m.weights += int64_t(t.get(name).nbytes);
  m.derived = int64_t(impl_->weights->derived_bytes());
  m.peak_rss = int64_t(peak_rss_bytes());
  return m;
}

Observation example_observation(const Model& m) {
  Observation obs;
  for (int k = 0; k < m.num_images(); ++k) {
    Image img(m.image_size(), m.image_size());
    std::fill(img.rgb.begin(), img.rgb.end(), uint8_t(128));
    obs.images.push_back(std::move(img));
  }
  obs.instruction = "pick up the object";
  obs.state.assign(size_t(m.state_dim()), 0.0f);
  if (const auto keys = m.unnorm_keys(); !keys.empty()) obs.unnorm_key = keys.front();
  return obs;
}

int Model::llm_layers() const {
  return impl_->smolvla ? impl_->smolvla->config().num_vlm_layers : impl_->cfg.llm.num_layers;
}

std::vector<std::string> Model::unnorm_keys() const { return impl_->cfg.action_norm.keys(); }
const std::string& Model::weight_cache_status() const { return impl_->weights->cache_status(); }

void Model::validate(const Plan& plan) const {
  if (impl_->smolvla) {
    if (!plan.is_dense()) throw Error("plan '" + plan.name + "': plans for SmolVLA models are not supported yet");
    return;
  }
  check_plan(plan, impl_->cfg);
}

FlopCount Model::flops(const Plan& plan) const {
  const ModelImpl& im = *impl_;
  FlopCount f;
  if (im.smolvla) {
    const int text = im.tokenizer ? int(im.tokenizer->encode("pick up the red block\n", true).size()) : 8;
    im.smolvla->flops(text, f);
    return f;
  }
  for (const auto& e : im.encoders) f.vision += e.flops() * im.cfg.vision.num_images;
  const int nv = im.visual_tokens();
  f.projector = im.projector->flops(nv);
  // A typical prompt: the template plus a short instruction.
  const int text = im.tokenizer ? int(im.prompt_ids("pick up the red block").size()) - 1 : 24;
  const Schedule sc = Schedule::resolve(plan, im.cfg);
  f.llm = im.llm->flops(1 + nv + text, nv, sc, &f.llm_int8);
  // An adaptive cache decides at run time: counted as refreshing every step
  // (an upper bound).
  for (const bool refresh : sc.head_refresh)
    f.action_head += im.dit->flops_per_call(im.cfg.action_head.batch(), refresh || sc.adaptive() ? nullptr : &sc.cache);
  return f;
}

std::string Model::describe() const {
  if (impl_->smolvla) {
    const SmolVlaConfig& s = impl_->smolvla->config();
    std::string o = fmt::format("model        {} ({}), SmolVLA\n", s.name, impl_->dir);
    o += fmt::format("parameters   {:.2f} M\n", num_params() / 1e6);
    o += fmt::format("vision       SigLIP {}px/{}, {} layers, d={} heads={} mlp={}; pixel shuffle ×{} → {} tokens per "
                     "camera\n", s.vision.image_size, s.vision.patch_size, s.vision.num_layers, s.vision.hidden_size,
                     s.vision.num_heads, s.vision.intermediate_size, s.scale_factor, s.tokens_per_image());
    o += fmt::format("cameras      {}: {}\n", s.cameras.size(), fmt::join(s.cameras, ", "));
    o += fmt::format("vlm          {} Llama layers, d={}, heads={}/{} kv × {}, ffn={}, vocab={}\n", s.num_vlm_layers,
                     s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab_size);
    o += fmt::format("expert       {} layers, d={}, ffn={}; self-attention over [prefix | actions] on layers 0, {}, "
                     "…, cross-attention to the VLM's keys and values on the others\n",
                     s.num_expert_layers, s.expert_width, s.expert_intermediate, s.self_attn_every);
    o += fmt::format("actions      flow matching, {} Euler steps; chunk {}×{} ({} padded), {} executed; state {} "
                     "({} padded)\n", s.num_steps, s.chunk, s.action_dim, s.max_action_dim, s.n_action_steps,
                     s.state_dim, s.max_state_dim);
    o += fmt::format("tokenizer    {}: {}\n", s.tokenizer,
                     impl_->tokenizer ? fmt::format("{} tokens", impl_->tokenizer->vocab_size()) : "not loaded");
    return o;
  }
  const ModelConfig& c = impl_->cfg;
  std::ostringstream o;
  o << fmt::format("model        {} ({})\n", c.name, impl_->dir);
  o << fmt::format("parameters   {:.2f} M\n", num_params() / 1e6);
  for (const auto& e : c.vision.encoders)
    o << fmt::format(
        "vision       {}: ViT {}px/{} → {} patches, {} of {} blocks, d={} heads={} mlp={}{}{}{}\n",
        e.name, e.image_size, e.patch_size, e.num_patches(), e.feature_layer + 1, e.num_layers,
        e.hidden_size, e.num_heads, e.intermediate_size, e.class_token ? ", CLS" : "",
        e.num_registers ? fmt::format(", {} registers", e.num_registers) : "",
        e.layer_scale ? ", LayerScale" : "");
  o << fmt::format("images       {} × {} visual tokens\n", c.vision.num_images,
                   c.vision.tokens_per_image());
  std::string dims = std::to_string(c.vision.feature_dim());
  for (int d : c.projector.hidden_dims) dims += "→" + std::to_string(d);
  dims += "→" + std::to_string(c.llm.hidden_size);
  o << fmt::format("projector    MLP {}\n", dims);
  o << fmt::format("llm          Llama {} layers, d={}, heads={}/{} kv, ffn={}, vocab={}\n",
                   c.llm.num_layers, c.llm.hidden_size, c.llm.num_heads, c.llm.num_kv_heads,
                   c.llm.intermediate_size, c.llm.vocab_size);
  const auto& a = c.action_head;
  o << fmt::format(
      "action head  DiT {} layers, d={}, heads={}; chunk {}×{}, {} executed; {}, noise ×{:g}; CFG {}\n",
      a.num_layers, a.hidden_size, a.num_heads, a.chunk_size, a.action_dim, a.n_action_steps,
      a.sampler == "ddpm" ? fmt::format("DDPM {} steps", a.train_steps)
                          : fmt::format("DDIM {}/{} steps", a.sample_steps, a.train_steps),
      a.noise_scale, a.use_cfg() ? fmt::format("{:.2f}", a.cfg_scale) : "off");
  const auto keys = c.action_norm.keys();
  if (!keys.empty())
    o << fmt::format("statistics   {} dataset{}: {}{}\n", keys.size(), keys.size() > 1 ? "s" : "", fmt::join(keys, ", "),
                     keys.size() > 1 ? " (choose with unnorm_key)" : "");
  const bool tok_file = fs::exists(fs::path(impl_->dir) / c.prompt.tokenizer);
  o << fmt::format("tokenizer    {}: {}\n", c.prompt.tokenizer,
                   impl_->tokenizer ? fmt::format("{} pieces", impl_->tokenizer->vocab_size())
                   : tok_file       ? std::string("not loaded")
                                    : std::string("missing (instructions cannot be tokenized)"));
  return o.str();
}

}  // namespace evla
