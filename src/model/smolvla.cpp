#include "model/smolvla.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "core/thread_pool.h"
#include "evla/error.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"

namespace evla {

namespace fs = std::filesystem;

namespace {

const std::string kVlm = "model.vlm_with_expert.vlm.model.";
const std::string kExpert = "model.vlm_with_expert.lm_expert.";
constexpr float kRopeTheta = 10000.0f;  // LeRobot's own RoPE; the VLM config's rope_theta is not used

// The VLMs smolvla configs name, with their configs' sizes.
struct VlmSizes {
  int text_hidden, text_heads, text_kv_heads, head_dim, text_intermediate, vocab_size;
  double rms_norm_eps;
  int vision_hidden, vision_layers, vision_heads, vision_intermediate, vision_image_size, patch_size, scale_factor;
  double vision_eps;
};
const std::map<std::string, VlmSizes>& known_vlms() {
  static const std::map<std::string, VlmSizes> m = {
      {"HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
       {960, 15, 5, 64, 2560, 49280, 1e-5, 768, 12, 12, 3072, 512, 16, 4, 1e-6}},
  };
  return m;
}

// LeRobot's rule for the expert's MLP width: 2/3 of 4×, up to a multiple of 256.
int expert_intermediate(int width) {
  const int h = 4 * int(2.0 * width / 3);
  return 256 * ((h + 255) / 256);
}

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Resized with padding as LeRobot does: bilinear (PyTorch's, corners not
// aligned, no antialiasing) to fit `width` × `height` keeping the aspect,
// then padded on the left and the top with 0. In and out: [3, H, W] floats.
void resize_with_pad(const std::vector<float>& in, int ih, int iw, int height, int width, std::vector<float>& out) {
  const double ratio = std::max(double(iw) / width, double(ih) / height);
  const int rh = int(ih / ratio), rw = int(iw / ratio);
  const int top = height - rh, left = width - rw;
  out.assign(size_t(3) * height * width, 0.0f);
  struct Tap {
    int i0, i1;
    float w0, w1;
  };
  auto taps = [](int in_size, int out_size) {
    std::vector<Tap> t(static_cast<size_t>(out_size));
    const float scale = float(in_size) / float(out_size);
    for (int o = 0; o < out_size; ++o) {
      float src = scale * (float(o) + 0.5f) - 0.5f;
      if (src < 0) src = 0;
      const int i0 = int(src);
      const float l1 = std::min(std::max(src - float(i0), 0.0f), 1.0f);
      t[size_t(o)] = {i0, i0 + (i0 < in_size - 1 ? 1 : 0), 1.0f - l1, l1};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(ih, rh), tx = taps(iw, rw);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < rh; ++y) {
      const Tap& a = ty[size_t(y)];
      const float* r0 = &in[(size_t(c) * ih + a.i0) * iw];
      const float* r1 = &in[(size_t(c) * ih + a.i1) * iw];
      float* o = &out[(size_t(c) * height + top + y) * width + left];
      for (int x = 0; x < rw; ++x) {
        const Tap& b = tx[size_t(x)];
        const float t0 = r0[b.i0] * b.w0 + r0[b.i1] * b.w1;
        const float t1 = r1[b.i0] * b.w0 + r1[b.i1] * b.w1;
        o[x] = t0 * a.w0 + t1 * a.w1;
      }
    }
}

// Mean and std of `feature` from LeRobot's processor state files (newer
// layout) or the normalisation buffers inside model.safetensors (older).
FeatureStats read_stats(const std::string& dir, const io::TensorStore& weights, const std::string& feature,
                        const std::string& processor_json, const std::string& buffer, int dim) {
  FeatureStats st;
  auto take = [&](const io::TensorInfo* mean, const io::TensorInfo* std, const std::string& where) {
    if (!mean || !std) throw Error(fmt::format("{}: holds no mean and std of {}", where, feature));
    if (mean->numel() != dim || std->numel() != dim)
      throw Error(fmt::format("{}: {} statistics have {} and {} values, the feature has {}", where, feature,
                              mean->numel(), std->numel(), dim));
    st.mean = io::to_f32(*mean);
    st.std = io::to_f32(*std);
    for (int i = 0; i < dim; ++i)
      if (!std::isfinite(st.mean[size_t(i)]) || !std::isfinite(st.std[size_t(i)]) || st.std[size_t(i)] < 0)
        throw Error(fmt::format("{}: {} statistics [{}] are not finite, or the std is negative", where, feature, i));
  };
  const fs::path pj = fs::path(dir) / processor_json;
  if (fs::exists(pj)) {
    const nlohmann::json j = read_json_file(pj.string());
    const JsonReader r(j, pj.string());
    if (!r.has("steps") || !j["steps"].is_array()) r.fail("steps", "expected an array");
    for (const auto& step : j["steps"]) {
      if (!step.is_object() || !step.contains("state_file") || !step["state_file"].is_string()) continue;
      const std::string name = step["state_file"].get<std::string>();
      if (name.find('/') != std::string::npos || name.find("..") != std::string::npos)
        throw Error(pj.string() + ": state_file '" + name + "' must name a file beside it");
      const std::string path = (fs::path(dir) / name).string();
      auto f = io::SafetensorsFile::open(path);
      if (f->find(feature + ".mean")) {
        take(f->find(feature + ".mean"), f->find(feature + ".std"), path);
        return st;
      }
    }
    return st;  // the pipeline normalises nothing for this feature
  }
  if (weights.has(buffer + ".mean"))
    take(&weights.get(buffer + ".mean"), weights.has(buffer + ".std") ? &weights.get(buffer + ".std") : nullptr,
         dir + "/model.safetensors");
  return st;
}

}  // namespace

bool is_smolvla_dir(const std::string& dir) {
  const fs::path p = fs::path(dir) / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return false;
  const nlohmann::json j = read_json_file(p.string());
  return j.is_object() && j.contains("type") && j["type"] == "smolvla";
}

SmolVlaConfig load_smolvla_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  const std::string text = read_json_text(path);
  const nlohmann::json j = parse_json(text, path);
  const JsonReader r(j, path);
  SmolVlaConfig c;
  c.name = fs::path(dir).filename().string();
  if (c.name.empty()) c.name = fs::path(dir).parent_path().filename().string();
  auto positive = [&](const char* key, int fallback, int max) {
    const int v = r.int32(key, fallback);
    if (v < 1 || v > max) r.fail(key, fmt::format("{} is not in [1, {}]", v, max));
    return v;
  };
  c.chunk = positive("chunk_size", 50, 1024);
  c.n_action_steps = positive("n_action_steps", 50, c.chunk);
  c.max_state_dim = positive("max_state_dim", 32, 4096);
  c.max_action_dim = positive("max_action_dim", 32, 4096);
  c.tokenizer_max_length = positive("tokenizer_max_length", 48, 4096);
  c.num_steps = positive("num_steps", 10, 1000);
  c.num_vlm_layers = positive("num_vlm_layers", 16, 256);
  const int n_exp = r.int32("num_expert_layers", -1);
  c.num_expert_layers = n_exp > 0 ? n_exp : c.num_vlm_layers;
  if (c.num_expert_layers != c.num_vlm_layers)
    r.fail("num_expert_layers", fmt::format("{} expert layers for {} VLM layers: only one expert layer per VLM layer "
                                            "is supported", c.num_expert_layers, c.num_vlm_layers));
  c.self_attn_every = r.int32("self_attn_every_n_layers", 2);
  if (c.self_attn_every < 0 || c.self_attn_every > 256) r.fail("self_attn_every_n_layers", "is not in [0, 256]");
  c.min_period = r.number("min_period", 4e-3);
  c.max_period = r.number("max_period", 4.0);
  if (!(c.min_period > 0) || !(c.max_period > 0) || !std::isfinite(c.min_period) || !std::isfinite(c.max_period))
    r.fail("min_period", "min_period and max_period must be positive and finite");
  if (r.string("attention_mode", "cross_attn") != "cross_attn")
    r.fail("attention_mode", "'" + r.string("attention_mode") + "' is not supported (evla runs cross_attn)");
  if (r.boolean("add_image_special_tokens", false))
    r.fail("add_image_special_tokens", "image special tokens are not supported yet");
  if (r.int32("empty_cameras", 0) != 0) r.fail("empty_cameras", "empty cameras are not supported yet");
  if (r.int32("n_obs_steps", 1) != 1) r.fail("n_obs_steps", "only one observation step is supported");
  for (const char* k : {"adapt_to_pi_aloha", "use_delta_joint_actions_aloha"})
    if (r.boolean(k, false)) r.fail(k, "the Aloha joint and gripper transforms are not supported");
  if (r.has("rtc_config") && j["rtc_config"].is_object() && j["rtc_config"].value("enabled", false))
    r.fail("rtc_config", "real-time chunking is not supported");
  if (r.has("normalization_mapping")) {
    const JsonReader nm = r.child("normalization_mapping");
    for (const char* k : {"STATE", "ACTION"})
      if (nm.has(k) && nm.string(k) != "MEAN_STD" && nm.string(k) != "IDENTITY")
        nm.fail(k, "'" + nm.string(k) + "' is not supported (MEAN_STD or IDENTITY)");
    if (nm.has("VISUAL") && nm.string("VISUAL") != "IDENTITY")
      nm.fail("VISUAL", "'" + nm.string("VISUAL") + "' is not supported (IDENTITY: LeRobot's own scaling only)");
    c.normalize_state = nm.string("STATE", "MEAN_STD") == "MEAN_STD";
    c.normalize_action = nm.string("ACTION", "MEAN_STD") == "MEAN_STD";
  }

  // Cameras in the file's order (nlohmann::json would sort them).
  const nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(text);
  if (!ordered.contains("input_features") || !ordered["input_features"].is_object())
    r.fail("input_features", "expected an object of features");
  for (const auto& [name, f] : ordered["input_features"].items())
    if (f.is_object() && f.value("type", "") == "VISUAL") c.cameras.push_back(name);
  if (c.cameras.empty() || c.cameras.size() > 16)
    r.fail("input_features", fmt::format("{} VISUAL features: 1 to 16 cameras are supported", c.cameras.size()));
  const JsonReader in = r.child("input_features");
  if (in.has("observation.state")) {
    const auto shape = in.child("observation.state").integers("shape");
    if (shape.size() != 1 || shape[0] < 1 || shape[0] > c.max_state_dim)
      in.fail("observation.state", fmt::format("shape must be [n] with n in [1, max_state_dim = {}]", c.max_state_dim));
    c.state_dim = int(shape[0]);
  }
  const auto ashape = r.child("output_features").child("action").integers("shape");
  if (ashape.size() != 1 || ashape[0] < 1 || ashape[0] > c.max_action_dim)
    r.fail("output_features", fmt::format("action shape must be [n] with n in [1, max_action_dim = {}]", c.max_action_dim));
  c.action_dim = int(ashape[0]);

  // The VLM: a known name, or its sizes in evla_vlm (which also overrides).
  const std::string vlm_name = r.string("vlm_model_name", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct");
  auto known = known_vlms().find(vlm_name);
  if (known == known_vlms().end() && !r.has("evla_vlm")) {
    std::string names;
    for (const auto& [n, _] : known_vlms()) names += (names.empty() ? "" : ", ") + n;
    r.fail("vlm_model_name", "'" + vlm_name + "' is not known (known: " + names + "); give its sizes in evla_vlm");
  }
  VlmSizes v = known != known_vlms().end() ? known->second : VlmSizes{};
  if (r.has("evla_vlm")) {
    const JsonReader e = r.child("evla_vlm");
    e.only_keys({"text_hidden", "text_heads", "text_kv_heads", "head_dim", "text_intermediate", "vocab_size",
                 "rms_norm_eps", "vision_hidden", "vision_layers", "vision_heads", "vision_intermediate",
                 "vision_image_size", "patch_size", "scale_factor", "vision_eps"});
    auto num = [&](const char* k, int& f) {
      f = e.int32(k, f);
      if (f < 1 || f > 65536) e.fail(k, fmt::format("{} is not in [1, 65536]", f));
    };
    num("text_hidden", v.text_hidden), num("text_heads", v.text_heads), num("text_kv_heads", v.text_kv_heads);
    num("head_dim", v.head_dim), num("text_intermediate", v.text_intermediate);
    v.vocab_size = e.int32("vocab_size", v.vocab_size);
    if (v.vocab_size < 1 || v.vocab_size > (1 << 22)) e.fail("vocab_size", "is not in [1, 4194304]");
    num("vision_hidden", v.vision_hidden), num("vision_layers", v.vision_layers), num("vision_heads", v.vision_heads);
    num("vision_intermediate", v.vision_intermediate), num("vision_image_size", v.vision_image_size);
    num("patch_size", v.patch_size), num("scale_factor", v.scale_factor);
    v.rms_norm_eps = e.number("rms_norm_eps", v.rms_norm_eps);
    v.vision_eps = e.number("vision_eps", v.vision_eps);
  }
  if (v.text_heads % v.text_kv_heads != 0) r.fail("evla_vlm", "text_heads must be a multiple of text_kv_heads");
  if (v.vision_hidden % v.vision_heads != 0) r.fail("evla_vlm", "vision_hidden must be a multiple of vision_heads");
  if (v.vision_image_size % v.patch_size != 0 || (v.vision_image_size / v.patch_size) % v.scale_factor != 0)
    r.fail("evla_vlm", "the patch grid must divide by patch_size and then by scale_factor");
  if (v.head_dim % 2 != 0) r.fail("evla_vlm", "head_dim must be even (rotary positions)");
  c.hidden = v.text_hidden, c.heads = v.text_heads, c.kv_heads = v.text_kv_heads, c.head_dim = v.head_dim;
  c.intermediate = v.text_intermediate, c.vocab_size = v.vocab_size, c.rms_eps = float(v.rms_norm_eps);
  c.scale_factor = v.scale_factor;
  VitConfig& vc = c.vision;
  vc.name = "siglip";
  vc.prefix = kVlm + "vision_model";
  vc.image_size = v.vision_image_size, vc.patch_size = v.patch_size;
  vc.hidden_size = v.vision_hidden, vc.num_layers = v.vision_layers, vc.num_heads = v.vision_heads;
  vc.intermediate_size = v.vision_intermediate, vc.feature_layer = v.vision_layers - 1;
  vc.norm_eps = float(v.vision_eps);
  vc.hf_layout = vc.gelu_tanh = vc.post_norm = true;

  if (r.has("resize_imgs_with_padding") && !j["resize_imgs_with_padding"].is_null()) {
    const auto wh = r.integers("resize_imgs_with_padding");
    if (wh.size() != 2) r.fail("resize_imgs_with_padding", "expected [width, height]");
    c.resize_width = int(wh[0]), c.resize_height = int(wh[1]);
  } else {
    c.resize = false;
    c.resize_width = c.resize_height = vc.image_size;
  }
  if (c.resize_width != vc.image_size || c.resize_height != vc.image_size)
    r.fail("resize_imgs_with_padding", fmt::format("[{}, {}] differs from the vision tower's {} × {} input",
                                                   c.resize_width, c.resize_height, vc.image_size, vc.image_size));
  const double mult = r.number("expert_width_multiplier", 0.75);
  if (!(mult > 0 && mult <= 4)) r.fail("expert_width_multiplier", "is not in (0, 4]");
  c.expert_width = int(c.hidden * mult);
  if (c.expert_width < 2 || c.expert_width % 2 != 0)
    r.fail("expert_width_multiplier", fmt::format("gives an expert width of {}, which must be even", c.expert_width));
  c.expert_intermediate = expert_intermediate(c.expert_width);
  return c;
}

SmolVla::SmolVla(const SmolVlaConfig& cfg, WeightStore& store, const std::string& dir)
    : cfg_(cfg), vision_(cfg.vision, WeightLoader(store, cfg.vision.prefix)) {
  const WeightLoader root(store, "");
  const int D = cfg.hidden, s2 = cfg.scale_factor * cfg.scale_factor, E = cfg.expert_width;
  const int Dq = cfg.heads * cfg.head_dim, Dkv = cfg.kv_heads * cfg.head_dim;
  connector_ = root.matrix(kVlm + "connector.modality_projection.proj.weight", {D, s2 * cfg.vision.hidden_size}, "");
  embed_tokens_ = root.matrix(kVlm + "text_model.embed_tokens.weight", {cfg.vocab_size, D}, "", /*pack=*/false);
  for (int l = 0; l < cfg.num_vlm_layers; ++l)
    vlm_.push_back(load_llama_layer(WeightLoader(store, kVlm + "text_model.layers").pp(l), D, Dq, Dkv,
                                    cfg.intermediate, D, /*fused_later=*/false));
  for (int l = 0; l < cfg.num_expert_layers; ++l) {
    const bool cross = cfg.cross_layer(l);
    expert_.push_back({load_llama_layer(WeightLoader(store, kExpert + "layers").pp(l), E, Dq, Dkv,
                                        cfg.expert_intermediate, cross ? Dkv : E, /*fused_later=*/false),
                       cross});
  }
  expert_norm_ = root.get(kExpert + "norm.weight", {E});
  state_proj_ = root.linear("model.state_proj", D, cfg.max_state_dim);
  action_in_ = root.linear("model.action_in_proj", E, cfg.max_action_dim);
  action_out_ = root.linear("model.action_out_proj", cfg.max_action_dim, E);
  time_in_ = root.linear("model.action_time_mlp_in", E, 2 * E);
  time_out_ = root.linear("model.action_time_mlp_out", E, E);
  const io::TensorStore& t = store.tensors();
  if (cfg.state_dim > 0 && cfg.normalize_state)
    state_stats_ = read_stats(dir, t, "observation.state", "policy_preprocessor.json",
                              "normalize_inputs.buffer_observation_state", cfg.state_dim);
  if (cfg.normalize_action)
    action_stats_ = read_stats(dir, t, "action", "policy_postprocessor.json", "unnormalize_outputs.buffer_action",
                             cfg.action_dim);
}

namespace {

// Row-wise RMSNorm of T rows of width D.
void rms_rows(ThreadPool& pool, const float* x, int T, int D, const float* w, float eps, float* y) {
  pool.for_rows(T, D, [&](int t0, int t1) {
    kernels::rms_norm(x + size_t(t0) * D, t1 - t0, D, w, eps, y + size_t(t0) * D);
  });
}

// x += SwiGLU MLP of RMSNorm(x), T rows of width D.
void mlp_residual(ThreadPool& pool, const LlamaLayer& L, float* x, int T, int D, float eps, std::vector<float>& h,
                  std::vector<float>& gate_up) {
  const int F = L.gate.out, ld = kernels::unaliased_stride(2 * F);
  h.resize(size_t(T) * D);
  gate_up.resize(size_t(T) * ld);
  rms_rows(pool, x, T, D, L.mlp_norm, eps, h.data());
  apply_linear(pool, L.gate, h.data(), D, T, gate_up.data(), ld);
  apply_linear(pool, L.up, h.data(), D, T, gate_up.data() + F, ld);
  pool.for_rows(T, ld, [&](int t0, int t1) {
    for (int t = t0; t < t1; ++t) kernels::swiglu(&gate_up[size_t(t) * ld], &gate_up[size_t(t) * ld + F], size_t(F));
  });
  apply_linear(pool, L.down, gate_up.data(), ld, T, h.data(), D);
  kernels::add(x, h.data(), size_t(T) * D);
}

void rope_rows(float* x, int ld, int T, int H, int hd, const std::vector<float>& cos, const std::vector<float>& sin) {
  kernels::rope_apply(x, ld, T, H, hd, cos.data(), sin.data());
}

}  // namespace

void SmolVla::vlm_prefix(SmolVlaScratch& s, int P, ThreadPool& pool, Observer* obs) const {
  const int D = cfg_.hidden, hd = cfg_.head_dim, Hq = cfg_.heads, Hkv = cfg_.kv_heads;
  const int Dq = Hq * hd, Dkv = Hkv * hd, N = cfg_.chunk;
  s.positions.resize(size_t(P));
  for (int i = 0; i < P; ++i) s.positions[size_t(i)] = i;
  std::vector<float> cos(size_t(P) * hd / 2), sin(size_t(P) * hd / 2);
  kernels::rope_tables(s.positions.data(), P, hd, kRopeTheta, cos.data(), sin.data());
  s.x = s.prefix;
  s.h.resize(size_t(P) * D);
  s.q.resize(size_t(P) * Dq);
  s.attn.resize(size_t(P) * Dq);
  s.attn_scratch.resize(std::max(kernels::attention_scratch_floats(pool, P, P),
                                 kernels::attention_scratch_floats(pool, N, P + N)));
  s.keys.resize(size_t(cfg_.num_vlm_layers));
  s.values.resize(size_t(cfg_.num_vlm_layers));
  kernels::AttentionShape a{P - 1, P - 1, Hq, Hkv, hd, Dq, Dkv, Dkv, Dq};
  a.scale = 1.0f / std::sqrt(float(hd));
  for (int l = 0; l < cfg_.num_vlm_layers; ++l) {
    const LlamaLayer& L = vlm_[size_t(l)];
    // Self-attention layers of the expert append the action tokens' keys and
    // values after the prefix's: room for them is kept here.
    const int rows = P + (expert_[size_t(l)].cross ? 0 : N);
    std::vector<float>&K = s.keys[size_t(l)], &V = s.values[size_t(l)];
    K.resize(size_t(rows) * Dkv);
    V.resize(size_t(rows) * Dkv);
    rms_rows(pool, s.x.data(), P, D, L.attn_norm, cfg_.rms_eps, s.h.data());
    apply_linear(pool, L.q, s.h.data(), D, P, s.q.data(), Dq);
    apply_linear(pool, L.k, s.h.data(), D, P, K.data(), Dkv);
    apply_linear(pool, L.v, s.h.data(), D, P, V.data(), Dkv);
    rope_rows(s.q.data(), Dq, P, Hq, hd, cos, sin);
    rope_rows(K.data(), Dkv, P, Hkv, hd, cos, sin);
    // Images and language attend to one another; the state token to all.
    kernels::attention(pool, a, s.q.data(), K.data(), V.data(), s.attn.data(), s.attn_scratch.data());
    kernels::AttentionShape last = a;
    last.Tq = 1, last.Tk = P;
    kernels::attention(pool, last, s.q.data() + size_t(P - 1) * Dq, K.data(), V.data(),
                       s.attn.data() + size_t(P - 1) * Dq, s.attn_scratch.data());
    apply_linear(pool, L.o, s.attn.data(), Dq, P, s.h.data(), D);
    kernels::add(s.x.data(), s.h.data(), size_t(P) * D);
    mlp_residual(pool, L, s.x.data(), P, D, cfg_.rms_eps, s.h, s.gate_up);
    show(obs, {Stage::LlmLayerOutput, l, -1, s.x.data(), nullptr, P, D, D});
  }
  // Cross-attention layers read the prefix keys and values through their own
  // projections: the same for every flow step, so projected once here.
  std::vector<float> projected;
  for (int l = 0; l < cfg_.num_expert_layers; ++l) {
    const ExpertLayer& X = expert_[size_t(l)];
    if (!X.cross) continue;
    for (auto* kv : {&s.keys[size_t(l)], &s.values[size_t(l)]}) {
      const Linear& W = kv == &s.keys[size_t(l)] ? X.layer.k : X.layer.v;
      projected.resize(size_t(P) * W.out);
      apply_linear(pool, W, kv->data(), Dkv, P, projected.data(), W.out);
      kv->swap(projected);
    }
  }
}

void SmolVla::velocity(SmolVlaScratch& s, int P, float t, ThreadPool& pool) const {
  const int E = cfg_.expert_width, N = cfg_.chunk, A = cfg_.max_action_dim;
  const int hd = cfg_.head_dim, Hq = cfg_.heads, Hkv = cfg_.kv_heads, Dq = Hq * hd, Dkv = Hkv * hd;
  // The suffix: [action_in_proj(x) | sin-cos(t)] through the time MLP.
  s.time_in.resize(size_t(N) * 2 * E);
  apply_linear(pool, action_in_, s.sample.data(), A, N, s.time_in.data(), 2 * E);
  const int half = E / 2;
  std::vector<float> temb(static_cast<size_t>(E));
  for (int i = 0; i < half; ++i) {
    // In float64, as LeRobot computes it (linspace over [0, 1], then cast).
    const double frac = half > 1 ? double(i) / (half - 1) : 0.0;
    const double period = cfg_.min_period * std::pow(cfg_.max_period / cfg_.min_period, frac);
    const double arg = 1.0 / period * 2 * M_PI * double(t);
    temb[size_t(i)] = float(std::sin(arg));
    temb[size_t(half + i)] = float(std::cos(arg));
  }
  for (int r = 0; r < N; ++r) std::memcpy(&s.time_in[size_t(r) * 2 * E + E], temb.data(), sizeof(float) * E);
  s.suffix.resize(size_t(N) * E);
  apply_linear(pool, time_in_, s.time_in.data(), 2 * E, N, s.suffix.data(), E);
  kernels::silu(s.suffix.data(), s.suffix.size());
  s.h.resize(size_t(N) * E);
  apply_linear(pool, time_out_, s.suffix.data(), E, N, s.h.data(), E);
  s.suffix.swap(s.h);

  float* h = s.suffix.data();
  s.q.resize(size_t(N) * Dq);
  s.attn.resize(size_t(N) * Dq);
  s.h.resize(size_t(N) * E);
  for (int l = 0; l < cfg_.num_expert_layers; ++l) {
    const ExpertLayer& X = expert_[size_t(l)];
    const LlamaLayer& L = X.layer;
    std::vector<float>&K = s.keys[size_t(l)], &V = s.values[size_t(l)];
    rms_rows(pool, h, N, E, L.attn_norm, cfg_.rms_eps, s.h.data());
    apply_linear(pool, L.q, s.h.data(), E, N, s.q.data(), Dq);
    kernels::AttentionShape a{N, P, Hq, Hkv, hd, Dq, Dkv, Dkv, Dq};
    a.scale = 1.0f / std::sqrt(float(hd));
    if (X.cross) {  // queries at positions 0 … chunk−1; the projected prefix keys as they are
      rope_rows(s.q.data(), Dq, N, Hq, hd, s.cross_cos, s.cross_sin);
    } else {  // [prefix | actions], the actions causal among themselves, after the prefix
      float* k = K.data() + size_t(P) * Dkv;
      apply_linear(pool, L.k, s.h.data(), E, N, k, Dkv);
      apply_linear(pool, L.v, s.h.data(), E, N, V.data() + size_t(P) * Dkv, Dkv);
      rope_rows(s.q.data(), Dq, N, Hq, hd, s.self_cos, s.self_sin);
      rope_rows(k, Dkv, N, Hkv, hd, s.self_cos, s.self_sin);
      a.Tk = P + N;
      a.causal = true;
      a.q_offset = P;
    }
    kernels::attention(pool, a, s.q.data(), K.data(), V.data(), s.attn.data(), s.attn_scratch.data());
    apply_linear(pool, L.o, s.attn.data(), Dq, N, s.h.data(), E);
    kernels::add(h, s.h.data(), size_t(N) * E);
    mlp_residual(pool, L, h, N, E, cfg_.rms_eps, s.h, s.gate_up);
  }
  s.h.resize(size_t(N) * E);
  rms_rows(pool, h, N, E, expert_norm_, cfg_.rms_eps, s.h.data());
  s.velocity.resize(size_t(N) * A);
  apply_linear(pool, action_out_, s.h.data(), E, N, s.velocity.data(), A);
}

std::vector<float> SmolVla::infer(const std::vector<Image>& images, const std::vector<int>& ids,
                                  const std::vector<float>& state, const std::vector<float>& noise,
                                  SmolVlaScratch& s, ThreadPool& pool, Observer* obs, Timing& timing) const {
  const int C = int(cfg_.cameras.size()), Ni = cfg_.tokens_per_image(), D = cfg_.hidden;
  const int L = int(ids.size()), P = C * Ni + L + 1, N = cfg_.chunk, A = cfg_.max_action_dim;
  const int S = cfg_.vision.image_size, G = cfg_.vision.grid(), Dv = cfg_.vision.hidden_size;
  const int sf = cfg_.scale_factor, g = G / sf;
  const float scale = float(std::sqrt(double(D)));

  // --- images: resized with padding, [-1, 1], SigLIP, pixel shuffle, projection ---
  auto t0 = Clock::now();
  s.prefix.resize(size_t(P) * D);
  std::vector<float>& shuffled = s.shuffled;
  shuffled.resize(size_t(Ni) * sf * sf * Dv);
  s.features.resize(size_t(G) * G * Dv);
  for (int k = 0; k < C; ++k) {
    const Image& img = images[size_t(k)];
    s.rgb.resize(size_t(3) * img.height * img.width);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x)
          s.rgb[(size_t(c) * img.height + y) * img.width + x] = img.pixel(x, y)[c] / 255.0f;
    if (cfg_.resize) {
      resize_with_pad(s.rgb, img.height, img.width, S, S, s.pixels);
    } else {  // no resize_imgs_with_padding: the image comes at the tower's size
      if (img.width != S || img.height != S)
        throw Error(fmt::format("image {} is {} × {}; without resize_imgs_with_padding the model takes {} × {}", k,
                                img.width, img.height, S, S));
      s.pixels = s.rgb;
    }
    for (float& v : s.pixels) v = v * 2.0f - 1.0f;
    show(obs, {Stage::ImagePixels, k, -1, s.pixels.data(), nullptr, 3, S * S, S * S});
    vision_.forward_pixels(s.pixels.data(), s.features.data(), Dv, s.vit, pool);
    // s × s neighbouring patches become one token of s²·width channels.
    for (int h2 = 0; h2 < g; ++h2)
      for (int w2 = 0; w2 < g; ++w2)
        for (int hs = 0; hs < sf; ++hs)
          for (int ws = 0; ws < sf; ++ws)
            std::memcpy(&shuffled[(size_t(h2) * g + w2) * sf * sf * Dv + size_t(hs * sf + ws) * Dv],
                        &s.features[(size_t(h2 * sf + hs) * G + (w2 * sf + ws)) * Dv], sizeof(float) * Dv);
    float* rows = s.prefix.data() + size_t(k) * Ni * D;
    apply_linear(pool, connector_, shuffled.data(), sf * sf * Dv, Ni, rows, D);
    for (size_t i = 0; i < size_t(Ni) * D; ++i) rows[i] *= scale;
  }
  show(obs, {Stage::Projected, -1, -1, s.prefix.data(), nullptr, C * Ni, D, D});
  timing.vision_ms = ms_since(t0);

  // --- language (× √width) and the normalised, padded state ---
  t0 = Clock::now();
  for (int i = 0; i < L; ++i) {
    float* row = s.prefix.data() + size_t(C * Ni + i) * D;
    weight_rows(embed_tokens_, ids[size_t(i)], 1, row);
    for (int d = 0; d < D; ++d) row[d] *= scale;
  }
  std::vector<float> st(size_t(cfg_.max_state_dim), 0.0f);
  for (int i = 0; i < cfg_.state_dim; ++i)
    st[size_t(i)] = state_stats_.mean.empty() ? state[size_t(i)]
                                              : (state[size_t(i)] - state_stats_.mean[size_t(i)]) /
                                                    (state_stats_.std[size_t(i)] + 1e-8f);
  apply_linear(pool, state_proj_, st.data(), cfg_.max_state_dim, 1, s.prefix.data() + size_t(P - 1) * D, D);
  show(obs, {Stage::Prefix, -1, -1, s.prefix.data(), nullptr, P, D, D});
  timing.projector_ms = ms_since(t0);

  // --- the VLM over the prefix, once ---
  t0 = Clock::now();
  vlm_prefix(s, P, pool, obs);
  timing.llm_ms = ms_since(t0);

  // --- flow matching: num_steps Euler steps from t = 1 ---
  t0 = Clock::now();
  const int hd = cfg_.head_dim;
  std::vector<int> pos(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) pos[size_t(i)] = P + i;
  s.self_cos.resize(size_t(N) * hd / 2), s.self_sin.resize(size_t(N) * hd / 2);
  kernels::rope_tables(pos.data(), N, hd, kRopeTheta, s.self_cos.data(), s.self_sin.data());
  for (int i = 0; i < N; ++i) pos[size_t(i)] = i;
  s.cross_cos.resize(size_t(N) * hd / 2), s.cross_sin.resize(size_t(N) * hd / 2);
  kernels::rope_tables(pos.data(), N, hd, kRopeTheta, s.cross_cos.data(), s.cross_sin.data());
  s.sample = noise;
  const double dt = -1.0 / cfg_.num_steps;
  for (int step = 0; step < cfg_.num_steps; ++step) {
    // t in double, then float32, as LeRobot's Euler loop computes it.
    velocity(s, P, float(1.0 + step * dt), pool);
    show(obs, {Stage::FlowVelocity, step, -1, s.velocity.data(), nullptr, N, A, A});
    const float dtf = float(dt);
    for (size_t i = 0; i < s.sample.size(); ++i) s.sample[i] += dtf * s.velocity[i];
  }
  std::vector<float> actions(size_t(N) * cfg_.action_dim);
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < cfg_.action_dim; ++c) {
      const float v = s.sample[size_t(r) * A + c];
      actions[size_t(r) * cfg_.action_dim + c] =
          action_stats_.mean.empty() ? v : v * action_stats_.std[size_t(c)] + action_stats_.mean[size_t(c)];
    }
  show(obs, {Stage::Actions, -1, -1, actions.data(), nullptr, N, cfg_.action_dim, cfg_.action_dim});
  timing.action_head_ms = ms_since(t0);
  return actions;
}

double SmolVla::flops(int language_tokens, FlopCount& f) const {
  const double C = double(cfg_.cameras.size()), Ni = cfg_.tokens_per_image(), D = cfg_.hidden;
  const double P = C * Ni + language_tokens + 1, N = cfg_.chunk, E = cfg_.expert_width;
  const double hd = cfg_.head_dim, Dq = cfg_.heads * hd, Dkv = cfg_.kv_heads * hd;
  f.vision = C * vision_.flops();
  f.projector = 2.0 * C * Ni * cfg_.scale_factor * cfg_.scale_factor * cfg_.vision.hidden_size * D;
  f.llm = cfg_.num_vlm_layers * (2.0 * P * D * (2 * Dq + 2 * Dkv) + 4.0 * P * P * Dq + 2.0 * P * D * 3 * cfg_.intermediate);
  double expert = 2.0 * N * (cfg_.max_action_dim * E + 2 * E * E + E * E + E * cfg_.max_action_dim);
  for (const ExpertLayer& X : expert_) {
    expert += 2.0 * N * E * (2 * Dq) + 2.0 * N * E * 3 * cfg_.expert_intermediate;
    expert += X.cross ? 4.0 * N * P * Dq : 2.0 * N * E * 2 * Dkv + 4.0 * N * (P + N / 2) * Dq;
  }
  f.action_head = cfg_.num_steps * expert;
  for (const ExpertLayer& X : expert_)
    if (X.cross) f.action_head += 2.0 * P * Dkv * 2 * Dkv;  // the prefix keys and values projected once
  return f.total();
}

}  // namespace evla
