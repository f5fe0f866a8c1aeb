#include "convert/cogact.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include <stdlib.h>

#include "core/json_reader.h"
#include "core/output_file.h"
#include "evla/error.h"
#include "io/dtype_convert.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "kernels/kernels.h"
#include "model/config.h"

namespace evla::convert {

namespace fs = std::filesystem;
using nlohmann::json;
using Shape = std::vector<int64_t>;

namespace {

// One tensor of the input, readable as raw bytes of its own type.
struct SourceTensor {
  io::DType dtype;
  Shape shape;
  io::SafetensorsWriter::Producer read;
};
using Sources = std::map<std::string, SourceTensor>;  // by CogACT flat name

const std::set<std::string> kGroups = {"vision_backbone", "projector", "llm_backbone", "action_model",
                                       "ema_diffusion"};

std::string group_of(const std::string& name) { return name.substr(0, name.find('.')); }

Sources open_torch(const std::string& path) {
  std::shared_ptr<io::TorchCheckpoint> ckpt = io::TorchCheckpoint::open(path);
  // CogACT saves {"model": {group: state_dict}}; a bare {group: state_dict} is accepted too.
  bool under_model = false;
  for (const auto& t : ckpt->tensors())
    if (t.name.rfind("model.", 0) == 0 && kGroups.count(group_of(t.name.substr(6)))) under_model = true;
  Sources out;
  for (const auto& t : ckpt->tensors()) {
    std::string name = t.name;
    if (under_model) {
      if (name.rfind("model.", 0) != 0) continue;  // e.g. an optimizer state beside the model
      name = name.substr(6);
    }
    const io::TorchTensor* tp = &t;
    out[name] = SourceTensor{t.dtype, t.shape, [ckpt, tp](const io::SafetensorsWriter::Sink& sink) {
                               ckpt->read(*tp, [&](const uint8_t* p, size_t n) { sink(p, n); });
                             }};
  }
  return out;
}

Sources open_safetensors(const std::string& path) {
  auto store = std::make_shared<io::TensorStore>(fs::is_directory(path) ? io::TensorStore::open_dir(path)
                                                                          : io::TensorStore::open_file(path));
  Sources out;
  for (const std::string& name : store->names()) {
    const io::TensorInfo* t = &store->get(name);
    out[name] = SourceTensor{t->dtype, t->shape, [store, t](const io::SafetensorsWriter::Sink& sink) {
                               const size_t piece = size_t(16) << 20;  // converted a piece at a time
                               for (size_t at = 0; at < t->nbytes; at += piece)
                                 sink(t->data + at, std::min(piece, t->nbytes - at));
                             }};
  }
  return out;
}

bool looks_like_zip(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
}

Sources open_sources(const std::string& path) {
  if (!fs::exists(path)) throw Error(path + ": no such file or directory");
  if (fs::is_directory(path) || path.ends_with(".safetensors")) return open_safetensors(path);
  if (!looks_like_zip(path))
    throw Error(path + ": not a zip-format torch.save checkpoint (PyTorch ≥ 1.6 writes zip; re-save the "
                       "legacy format with torch.save) nor a .safetensors file");
  return open_torch(path);
}

// Looks shapes up by name; a missing tensor is an error naming it.
class Shapes {
 public:
  explicit Shapes(const Sources& s, std::string source) : s_(s), source_(std::move(source)) {}
  bool has(const std::string& n) const { return s_.count(n) > 0; }
  const Shape& at(const std::string& n) const {
    auto it = s_.find(n);
    if (it == s_.end()) throw Error(fmt::format("{}: no tensor '{}'", source_, n));
    return it->second.shape;
  }
  int64_t dim(const std::string& n, size_t d, size_t rank) const {
    const Shape& sh = at(n);
    if (sh.size() != rank)
      throw Error(fmt::format("{}: tensor '{}' has shape [{}], expected {} dimensions", source_, n,
                              fmt::join(sh, ", "), rank));
    return sh[d];
  }
  // Number of consecutive indices i with `head + i + tail` present.
  int count(const std::string& head, const std::string& tail) const {
    int n = 0;
    while (has(head + std::to_string(n) + tail)) ++n;
    return n;
  }

 private:
  const Sources& s_;
  std::string source_;
};

// Presets for what the shapes cannot tell, keyed by the names CogACT's own
// config uses. Head counts of the vision towers are timm's for each width.
int vit_heads(const std::string& kind, int64_t width) {
  static const std::map<std::pair<std::string, int64_t>, int> heads = {
      {{"dino", 384}, 6},     {{"dino", 768}, 12},    {{"dino", 1024}, 16}, {{"dino", 1536}, 24},
      {{"siglip", 768}, 12},  {{"siglip", 1024}, 16}, {{"siglip", 1152}, 16}};
  auto it = heads.find({kind, width});
  return it == heads.end() ? 0 : it->second;
}

struct DitPreset {
  int layers, hidden, heads;
};
const std::map<std::string, DitPreset>& dit_presets() {
  static const std::map<std::string, DitPreset> p = {
      {"DiT-S", {6, 384, 4}}, {"DiT-B", {12, 768, 12}}, {"DiT-L", {24, 1024, 16}}};
  return p;
}

// Llama-2 sizes by the suffix of prismatic's base VLM id ("...+7b").
struct LlmPreset {
  int heads, kv_heads;
};
const std::map<std::string, LlmPreset>& llm_presets() {
  static const std::map<std::string, LlmPreset> p = {{"7b", {32, 32}}, {"13b", {40, 40}}};
  return p;
}

json vit_config(const Shapes& sh, const std::string& prefix, const std::string& kind) {
  const std::string p = "vision_backbone." + prefix + ".";
  const int64_t D = sh.dim(p + "patch_embed.proj.weight", 0, 4);
  const int64_t P = sh.dim(p + "patch_embed.proj.weight", 2, 4);
  if (sh.dim(p + "patch_embed.proj.weight", 1, 4) != 3 || sh.dim(p + "patch_embed.proj.weight", 3, 4) != P)
    throw Error(fmt::format("{}: patch embedding is not a square RGB convolution", p + "patch_embed.proj.weight"));
  const int64_t N = sh.dim(p + "pos_embed", 1, 3);
  const int64_t grid = std::llround(std::sqrt(double(N)));
  if (grid * grid != N)
    throw Error(fmt::format("{}pos_embed covers {} positions, not a square patch grid (evla reads position "
                            "embeddings over the patches only, as timm's DINOv2-with-registers and SigLIP have them)",
                            p, N));
  const int layers = sh.count(p + "blocks.", ".norm1.weight");
  if (layers < 2) throw Error(fmt::format("{}: {} blocks found (at least 2: features come from the second-to-last)", p, layers));
  json c = {{"name", kind},
            {"prefix", "vision_backbone." + prefix},
            {"image_size", grid * P},
            {"patch_size", P},
            {"hidden_size", D},
            {"num_layers", layers},
            {"intermediate_size", sh.dim(p + "blocks.0.mlp.fc1.weight", 0, 2)},
            {"class_token", sh.has(p + "cls_token")},
            {"num_registers", sh.has(p + "reg_token") ? sh.dim(p + "reg_token", 1, 3) : 0},
            {"layer_scale", sh.has(p + "blocks.0.ls1.gamma")},
            {"feature_layer", layers - 2},
            {"norm_eps", 1e-6}};
  if (int h = vit_heads(kind, D)) c["num_heads"] = h;
  if (kind == "dino") {
    c["image_mean"] = {0.485, 0.456, 0.406};
    c["image_std"] = {0.229, 0.224, 0.225};
  } else {
    c["image_mean"] = {0.5, 0.5, 0.5};
    c["image_std"] = {0.5, 0.5, 0.5};
  }
  return c;
}

json infer_config(const Shapes& sh, const json& cogact_cfg, std::vector<std::string>& notes) {
  const json vla = cogact_cfg.value("vla", json::object());
  const std::string base_vlm = vla.value("base_vlm", "");
  std::string dit_type = cogact_cfg.value("action_model_type", vla.value("action_model_type", ""));

  json cfg = {{"evla_format", 1}, {"architecture", "cogact"}};
  cfg["name"] = vla.value("vla_id", base_vlm.empty() ? std::string("cogact") : base_vlm);

  // Vision: prismatic's fused DINOv2 + SigLIP backbone, or a single tower.
  json encoders = json::array();
  if (sh.has("vision_backbone.dino_featurizer.patch_embed.proj.weight"))
    encoders.push_back(vit_config(sh, "dino_featurizer", "dino"));
  if (sh.has("vision_backbone.siglip_featurizer.patch_embed.proj.weight"))
    encoders.push_back(vit_config(sh, "siglip_featurizer", "siglip"));
  if (sh.has("vision_backbone.featurizer.patch_embed.proj.weight")) {
    const std::string kind = base_vlm.find("siglip") != std::string::npos ? "siglip" : "dino";
    encoders.push_back(vit_config(sh, "featurizer", kind));
  }
  if (encoders.empty())
    throw Error("the checkpoint has no vision_backbone weights (CogACT would take the towers from timm's "
                "pretrained downloads, which evla never fetches: convert a checkpoint that includes them)");
  cfg["vision"] = {{"num_images", 1}, {"encoders", encoders}};

  // Projector: Linear layers at indices 0, 2, 4, ... with GELUs between;
  // the config lists the widths between them.
  const int proj_layers = [&] {
    int n = 0;
    while (sh.has(fmt::format("projector.projector.{}.weight", 2 * n))) ++n;
    return n;
  }();
  if (proj_layers == 0) throw Error("the checkpoint has no projector.projector.0.weight (MLP projector)");
  json dims = json::array();
  for (int i = 0; i + 1 < proj_layers; ++i) dims.push_back(sh.dim(fmt::format("projector.projector.{}.weight", 2 * i), 0, 2));
  cfg["projector"] = {{"prefix", "projector.projector"}, {"hidden_dims", dims}};

  // Language model (Hugging Face Llama names under llm_backbone.llm).
  const std::string L = "llm_backbone.llm.";
  const int64_t D = sh.dim(L + "model.embed_tokens.weight", 1, 2);
  json llm = {{"prefix", "llm_backbone.llm"},
              {"hidden_size", D},
              {"intermediate_size", sh.dim(L + "model.layers.0.mlp.gate_proj.weight", 0, 2)},
              {"num_hidden_layers", sh.count(L + "model.layers.", ".input_layernorm.weight")},
              {"vocab_size", sh.dim(L + "model.embed_tokens.weight", 0, 2)},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"max_position_embeddings", 2048},  // prismatic's llm_max_length
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"tie_word_embeddings", !sh.has(L + "lm_head.weight")}};
  const std::string size = base_vlm.substr(base_vlm.rfind('+') == std::string::npos ? base_vlm.size() : base_vlm.rfind('+') + 1);
  const int64_t kv_rows = sh.dim(L + "model.layers.0.self_attn.k_proj.weight", 0, 2);
  if (auto it = llm_presets().find(size); it != llm_presets().end() && D % it->second.heads == 0 &&
                                          kv_rows % (D / it->second.heads) == 0) {
    const int64_t head_dim = D / it->second.heads;
    llm["num_attention_heads"] = it->second.heads;
    llm["num_key_value_heads"] = kv_rows / head_dim;
    notes.push_back(fmt::format("language model: Llama-2 {} preset ({} heads) from base_vlm '{}'", size,
                                it->second.heads, base_vlm));
  }
  cfg["llm"] = llm;
  const PromptConfig prompt;  // CogACT's prompt is the format's default
  cfg["prompt"] = {{"tokenizer", prompt.tokenizer},
                   {"template", prompt.tmpl},
                   {"lowercase_instruction", prompt.lowercase_instruction},
                   {"space_token_id", prompt.space_token_id},
                   {"cognition_token_id", prompt.cognition_token_id}};

  // Action head (CogACT's DiT under action_model.net).
  const std::string A = "action_model.net.";
  const int64_t H = sh.dim(A + "x_embedder.linear.weight", 0, 2);
  const Shape& pe = sh.at(A + "positional_embedding");
  if (pe.size() != 2 && !(pe.size() == 3 && pe[0] == 1))
    throw Error(fmt::format("{}positional_embedding has shape [{}], expected [chunk+1, hidden]", A, fmt::join(pe, ", ")));
  const int64_t positions = pe[pe.size() - 2];
  const int dit_layers = sh.count(A + "blocks.", ".attn.qkv.weight");
  if (dit_type.empty())
    for (const auto& [name, p] : dit_presets())
      if (p.hidden == H && p.layers == dit_layers) dit_type = name;
  json head = {{"prefix", "action_model.net"},
               {"hidden_size", H},
               {"num_layers", dit_layers},
               {"mlp_ratio", double(sh.dim(A + "blocks.0.mlp.fc1.weight", 0, 2)) / double(H)},
               {"action_dim", sh.dim(A + "x_embedder.linear.weight", 1, 2)},
               {"chunk_size", positions - 1},
               {"cond_dim", sh.dim(A + "z_embedder.linear.weight", 1, 2)},
               {"frequency_embedding_size", sh.dim(A + "t_embedder.mlp.0.weight", 1, 2)},
               {"norm_eps", 1e-6},
               {"train_steps", 100},
               {"beta_schedule", "squaredcos_cap_v2"},
               {"sampler", "ddim"},
               {"sample_steps", 10},
               {"noise_scale", 1.0},
               {"state_dim", 0},
               {"cfg_scale", 1.5},
               // SIMPLER runs CogACT with an action ensemble, asking again every step.
               {"n_action_steps", 1}};
  if (auto it = dit_presets().find(dit_type); it != dit_presets().end()) {
    head["num_heads"] = it->second.heads;
    notes.push_back(fmt::format("action head: {} preset ({} heads)", dit_type, it->second.heads));
  }
  cfg["action_head"] = head;
  return cfg;
}

// Head counts are the one thing neither shapes nor an unknown config name
// tell: without a preset, the error says which --set gives them.
void require_head_counts(const json& cfg, const json& cogact_cfg) {
  std::vector<std::string> missing;
  const auto& encs = cfg["vision"]["encoders"];
  for (size_t i = 0; i < encs.size(); ++i)
    if (!encs[i].contains("num_heads"))
      missing.push_back(fmt::format("vision.encoders.{}.num_heads ({} tower, {} wide)", i,
                                    encs[i].value("name", "?"), encs[i].value("hidden_size", 0)));
  if (!cfg["llm"].contains("num_attention_heads"))
    missing.push_back(fmt::format("llm.num_attention_heads and llm.num_key_value_heads ({} wide)",
                                  cfg["llm"].value("hidden_size", 0)));
  if (!cfg["action_head"].contains("num_heads"))
    missing.push_back(fmt::format("action_head.num_heads ({} wide, {} blocks)", cfg["action_head"].value("hidden_size", 0),
                                  cfg["action_head"].value("num_layers", 0)));
  if (missing.empty()) return;
  const json vla = cogact_cfg.value("vla", json::object());
  throw Error(fmt::format("no preset gives the head counts for base_vlm '{}' / action_model_type '{}'; "
                          "set them with --set: {}",
                          vla.value("base_vlm", ""), cogact_cfg.value("action_model_type", ""),
                          fmt::join(missing, "; ")));
}

// Every per-layer tensor must have the shape of its layer-0 sibling, and
// every layer the same tensors: a contradiction names both.
void check_layers(const Sources& src, const std::string& source) {
  static const std::regex layer(R"(\.(blocks|layers)\.(\d+)\.)");
  std::map<std::string, std::pair<std::string, const Shape*>> first;
  std::map<std::string, std::set<std::string>> members;  // stack -> layer indices
  std::map<std::string, int> count;
  for (const auto& [name, t] : src) {
    std::smatch m;
    if (!std::regex_search(name, m, layer)) continue;
    const std::string generic = m.prefix().str() + "." + m[1].str() + ".#." + m.suffix().str();
    const std::string stack = m.prefix().str() + "." + m[1].str();
    members[stack].insert(m[2].str());
    ++count[generic];
    auto [it, added] = first.try_emplace(generic, name, &t.shape);
    if (!added && *it->second.second != t.shape)
      throw Error(fmt::format("{}: tensor '{}' has shape [{}] but '{}' has [{}]", source, name,
                              fmt::join(t.shape, ", "), it->second.first, fmt::join(*it->second.second, ", ")));
  }
  for (const auto& [stack, indices] : members) {  // layers 0 … n−1, no gap
    std::set<long> numbers;
    for (const std::string& i : indices) numbers.insert(std::stol(i));
    if (*numbers.rbegin() != long(numbers.size()) - 1 || indices.size() != numbers.size())
      throw Error(fmt::format("{}: {} has {} layers numbered up to {}: the numbering has a gap", source, stack,
                              numbers.size(), *numbers.rbegin()));
  }
  for (const auto& [generic, n] : count) {
    const std::string stack = generic.substr(0, generic.find(".#."));
    if (size_t(n) != members[stack].size())
      throw Error(fmt::format("{}: '{}' is present in {} of the {} layers of {}", source, generic, n,
                              members[stack].size(), stack));
  }
}

// "a.b.0.c=value": value as JSON when it parses, else as a string.
void apply_set(json& cfg, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw Error("--set '" + assignment + "': expected key=value");
  const std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json value;
  try {
    value = parse_json(text, "--set value");
  } catch (const Error&) {
    value = text;  // not JSON: a string
  }
  json* node = &cfg;
  size_t start = 0;
  for (;;) {
    const size_t dot = path.find('.', start);
    const std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (key.empty()) throw Error("--set '" + assignment + "': empty key");
    json* next = nullptr;
    if (node->is_array()) {
      size_t idx = 0;
      if (key.size() > 9 || key.find_first_not_of("0123456789") != std::string::npos || (idx = std::stoul(key)) >= node->size())
        throw Error(fmt::format("--set '{}': '{}' is not an index of a list of {}", assignment, key, node->size()));
      next = &(*node)[idx];
    } else if (node->is_object()) {
      if (dot != std::string::npos && !node->contains(key))
        throw Error(fmt::format("--set '{}': the config has no section '{}'", assignment, key));
      // A new field only where the converter leaves one out on purpose; a
      // typo would otherwise sit beside the field it meant, unread.
      static const std::set<std::string> optional = {"num_heads", "num_attention_heads", "num_key_value_heads",
                                                     "state_dim", "noise_scale", "layers", "mask"};
      if (!node->contains(key) && !optional.count(key)) {
        std::vector<std::string> known;
        for (const auto& [k, v] : node->items()) known.push_back(k);
        throw Error(fmt::format("--set '{}': no field '{}' here (did you mean '{}'?)", assignment, key,
                                nearest_key(key, known)));
      }
      next = &(*node)[key];
    } else {
      throw Error(fmt::format("--set '{}': '{}' is not inside a section", assignment, key));
    }
    if (dot == std::string::npos) {
      *next = value;
      return;
    }
    node = next;
    start = dot + 1;
  }
}

// dataset_statistics.json: {dataset: {"action": {"q01", "q99", "mask", ...}, ...}}.
json action_statistics(const std::string& path, int action_dim) {
  const json stats = read_json_file(path);
  if (!stats.is_object() || stats.empty()) throw Error(path + ": expected an object of datasets");
  json datasets = json::object();
  for (const auto& [key, entry] : stats.items()) {
    if (key.empty()) throw Error(path + ": a dataset with an empty name");
    JsonReader action = JsonReader(entry, path, key).child("action");
    const ActionStats st = parse_action_stats(action, size_t(action_dim));  // checked as a load checks it
    datasets[key] = {{"q01", st.q01}, {"q99", st.q99}, {"mask", st.mask}};
  }
  return datasets;
}

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || size > (uint64_t(64) << 20)) throw Error(path + ": not a readable file of at most 64 MiB");
  std::ifstream f(path, std::ios::binary);
  std::string data(size_t(size), '\0');
  if (!f.read(data.data(), std::streamsize(size))) throw Error(path + ": cannot read");
  return data;
}

std::string shard_name(size_t i, size_t n) {
  return n == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
}

// Streams one tensor, converting its elements; pieces may split an element.
void stream_converted(const SourceTensor& t, io::DType to, const std::string& name, const io::SafetensorsWriter::Sink& sink) {
  const size_t in_es = io::dtype_size(t.dtype), out_es = io::dtype_size(to);
  std::vector<uint8_t> carry, out;
  size_t bad = 0;
  t.read([&](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    if (!carry.empty()) {  // complete the element split across pieces
      const size_t need = std::min(n, in_es - carry.size());
      carry.insert(carry.end(), p, p + need);
      p += need;
      n -= need;
      if (carry.size() < in_es) return;
      out.resize(out_es);
      bad += io::convert_elements(t.dtype, carry.data(), to, out.data(), 1);
      sink(out.data(), out_es);
      carry.clear();
    }
    const size_t whole = n / in_es;
    out.resize(whole * out_es);
    bad += io::convert_elements(t.dtype, p, to, out.data(), whole);
    if (whole) sink(out.data(), out.size());
    carry.assign(p + whole * in_es, p + n);
  });
  if (bad)
    throw Error(fmt::format("tensor '{}': {} values are NaN or infinite{}", name, bad,
                            io::is_floating(to) && to != t.dtype ? std::string(" after conversion to ") + io::dtype_name(to) : ""));
}

io::DType target_dtype(const std::string& want, io::DType have) {
  if (want.empty() || !io::is_floating(have)) return have;
  if (want == "f32") return io::DType::F32;
  if (want == "bf16" || want == "int8") return io::DType::BF16;  // int8: all but the LM's matrices
  if (want == "f16") return io::DType::F16;
  throw Error("--dtype '" + want + "': expected f32, bf16, f16 or int8");
}

// The matrices --dtype int8 quantizes: every projection of every LM layer
// (what a plan's int8 layers quantize), nothing else.
bool lm_matrix(const std::string& name, const Shape& shape) {
  static const std::regex re(R"(llm_backbone\.llm\.model\.layers\.\d+\.(self_attn\.[qkvo]|mlp\.(gate|up|down))_proj\.weight)");
  return shape.size() == 2 && std::regex_match(name, re);
}

// Calls `row` with each row of a 2-D tensor as K floats.
void for_each_row(const SourceTensor& t, int64_t K, const std::function<void(const float*)>& row) {
  const size_t es = io::dtype_size(t.dtype);
  std::vector<uint8_t> bytes;
  std::vector<float> f(static_cast<size_t>(K));
  t.read([&](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      const size_t take = std::min(n, size_t(K) * es - bytes.size());
      bytes.insert(bytes.end(), p, p + take);
      p += take, n -= take;
      if (bytes.size() < size_t(K) * es) return;
      if (io::convert_elements(t.dtype, bytes.data(), io::DType::F32, reinterpret_cast<uint8_t*>(f.data()), size_t(K)))
        throw Error("a row holds NaN or infinite values");
      row(f.data());
      bytes.clear();
    }
  });
}

// One tensor as written: its type, shape and the bytes it streams.
struct OutTensor {
  std::string name;
  io::DType dtype;
  Shape shape;
  std::function<void(const io::SafetensorsWriter::Sink&)> write;
  bool parameters = true;  // counted as the model's parameters (scales are not)
};

// The tensors of the output for `name`: converted, or for an LM matrix under
// --dtype int8 its codes (I8, one scale per row as quantize_int8_rows makes
// them) and the scales ("<name>_scale", F32), each streamed a row at a time.
std::vector<OutTensor> outputs(const std::string& name, const SourceTensor& t, const std::string& dtype) {
  if (dtype == "int8" && lm_matrix(name, t.shape) && io::is_floating(t.dtype)) {
    const int64_t N = t.shape[0], K = t.shape[1];
    // The codes stream first (they are added first, and their name sorts
    // first) and keep the scales they made, so the scales' stream reads the
    // source only if it ever runs on its own.
    auto scales = std::make_shared<std::vector<float>>();
    auto rows = [&t, K, name, scales](bool codes, const io::SafetensorsWriter::Sink& sink) {
      if (!codes && scales->size() == size_t(t.shape[0])) return sink(scales->data(), scales->size() * sizeof(float));
      std::vector<int8_t> q(static_cast<size_t>(K));
      scales->clear();
      try {
        for_each_row(t, K, [&](const float* row) {
          float scale;
          kernels::quantize_int8_rows(row, 1, int(K), q.data(), &scale);
          scales->push_back(scale);
          codes ? sink(q.data(), q.size()) : sink(&scale, sizeof scale);
        });
      } catch (const Error& e) {
        throw Error("tensor '" + name + "': " + e.what());
      }
    };
    return {{name, io::DType::I8, t.shape, [rows](const auto& sink) { rows(true, sink); }},
            {name + "_scale", io::DType::F32, {N}, [rows](const auto& sink) { rows(false, sink); }, false}};
  }
  const io::DType to = target_dtype(dtype, t.dtype);
  return {{name, to, t.shape, [&t, to, name](const auto& sink) { stream_converted(t, to, name, sink); }}};
}

}  // namespace

CogactConvertReport convert_cogact(const CogactConvertOptions& opts, const ConvertProgress& progress) {
  target_dtype(opts.dtype, io::DType::F32);  // a bad --dtype fails before any work
  if (opts.output.empty()) throw Error("no output directory given");
  if (fs::exists(opts.output) && !(fs::is_directory(opts.output) && fs::is_empty(opts.output)))
    throw Error(opts.output + ": exists and is not an empty directory (evla convert never overwrites)");
  if (!opts.tokenizer.empty() && !fs::is_regular_file(opts.tokenizer))
    throw Error(opts.tokenizer + ": no such tokenizer file");
  const json cogact_cfg = opts.config.empty() ? json::object() : read_json_file(opts.config);
  if (!cogact_cfg.is_object()) throw Error(opts.config + ": expected a JSON object");

  CogactConvertReport report;
  Sources all = open_sources(opts.checkpoint);
  // The groups CogACT's loader reads; the EMA head replaces action_model on request.
  Sources src;
  std::set<std::string> skipped;
  const std::string head_group = opts.use_ema ? "ema_diffusion" : "action_model";
  for (auto& [name, t] : all) {
    const std::string g = group_of(name);
    if (g == head_group) src["action_model" + name.substr(g.size())] = std::move(t);
    else if (g == "vision_backbone" || g == "projector" || g == "llm_backbone") src[name] = std::move(t);
    else skipped.insert(g);
  }
  if (opts.use_ema && src.count("action_model.net.x_embedder.linear.weight") == 0)
    throw Error(opts.checkpoint + ": --ema asked, but the checkpoint has no ema_diffusion group");
  report.skipped_groups.assign(skipped.begin(), skipped.end());
  check_layers(src, opts.checkpoint);

  json cfg = infer_config(Shapes(src, opts.checkpoint), cogact_cfg, report.notes);
  if (!opts.stats.empty())
    cfg["action_normalization"] = {{"gripper_index", cfg["action_head"]["action_dim"].get<int>() - 1},
                                   {"datasets", action_statistics(opts.stats, cfg["action_head"]["action_dim"])}};
  for (const std::string& s : opts.sets) apply_set(cfg, s);
  require_head_counts(cfg, cogact_cfg);
  parse_model_config(cfg, "converted config");  // every field checked as a load would

  // Shards of at most shard_bytes (a tensor larger than that gets one alone).
  std::vector<OutTensor> tensors;
  for (const auto& [name, t] : src)
    for (OutTensor& o : outputs(name, t, opts.dtype)) tensors.push_back(std::move(o));
  auto elements = [](const Shape& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  };
  std::vector<std::vector<const OutTensor*>> shards(1);
  uint64_t in_shard = 0;
  for (const OutTensor& o : tensors) {
    const uint64_t bytes = uint64_t(io::dtype_size(o.dtype)) * uint64_t(std::max<int64_t>(1, elements(o.shape)));
    if (in_shard > 0 && in_shard + bytes > opts.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&o);
    in_shard += bytes;
  }

  // Everything goes to a sibling temp directory renamed at the end, so a
  // failure leaves no half-written model.
  fs::path out = fs::absolute(opts.output).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "dir/"
  std::string tmp_name = (out.parent_path() / (out.filename().string() + ".converting.XXXXXX")).string();
  if (!fs::is_directory(out.parent_path())) throw Error(out.parent_path().string() + ": no such directory");
  if (!::mkdtemp(tmp_name.data())) throw Error(tmp_name + ": cannot create: " + std::strerror(errno));
  const fs::path tmp = tmp_name;
  fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);
  try {
    json weight_map = json::object();
    const int64_t total = int64_t(tensors.size());
    for (size_t s = 0; s < shards.size(); ++s) {
      io::SafetensorsWriter w;
      w.set_metadata("format", "pt");
      for (const OutTensor* o : shards[s]) {
        w.add_streamed(o->name, o->dtype, o->shape, [o, &elements, &report, &progress, total](const io::SafetensorsWriter::Sink& sink) {
          o->write(sink);
          const int64_t n = elements(o->shape);
          if (o->parameters) report.params += n;
          report.bytes += uint64_t(n) * io::dtype_size(o->dtype);
          if (progress) progress(o->name, ++report.tensors, total);
        });
        weight_map[o->name] = shard_name(s, shards.size());
      }
      w.write((tmp / shard_name(s, shards.size())).string(), 64);
    }
    if (shards.size() > 1)
      write_file((tmp / "model.safetensors.index.json").string(),
                 json{{"metadata", {{"total_size", report.bytes}}}, {"weight_map", weight_map}}.dump(2) + "\n");
    if (!opts.tokenizer.empty()) write_file((tmp / "tokenizer.model").string(), read_whole_file(opts.tokenizer));
    write_file((tmp / "config.json").string(), cfg.dump(2) + "\n");
    sync_directory(tmp);
    if (fs::exists(out)) fs::remove(out);  // checked empty above
    fs::rename(tmp, out);
    sync_directory(out.parent_path());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  report.config = cfg;
  return report;
}

}  // namespace evla::convert
