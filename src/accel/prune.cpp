#include "accel/prune.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/schedule.h"
#include "core/output_file.h"
#include "model/model_impl.h"

namespace evla::accel {

namespace fs = std::filesystem;

namespace {

struct LayerFate {
  bool keep = true, attn = true, mlp = true;
  int new_index = -1;
  const std::vector<int>* channels = nullptr;  // MLP channels kept, or null for all
};

// Rows `channels` of a [F, D] tensor, or columns of a [D, F] one, in the stored dtype.
std::vector<uint8_t> slice(const io::TensorInfo& t, const std::vector<int>& channels, bool columns) {
  const size_t es = io::dtype_size(t.dtype);
  const size_t R = size_t(t.shape[0]), C = size_t(t.shape[1]), K = channels.size();
  std::vector<uint8_t> out(K * (columns ? R : C) * es);
  if (!columns) {
    for (size_t i = 0; i < K; ++i) std::memcpy(&out[i * C * es], t.data + size_t(channels[i]) * C * es, C * es);
  } else {
    for (size_t r = 0; r < R; ++r)
      for (size_t i = 0; i < K; ++i)
        std::memcpy(&out[(r * K + i) * es], t.data + (r * C + size_t(channels[i])) * es, es);
  }
  return out;
}

}  // namespace

PruneResult prune_model(const Model& model, const Plan& plan, const std::string& out_dir) {
  const ModelImpl& im = model.impl();
  // The input is never written: an output that is the model directory or lies
  // inside it is refused before anything is written.
  {
    std::error_code ec;
    const fs::path in = fs::weakly_canonical(im.dir, ec), out = fs::weakly_canonical(out_dir, ec);
    const auto [i, o] = std::mismatch(in.begin(), in.end(), out.begin(), out.end());
    if (!in.empty() && i == in.end())
      throw Error("prune: the output directory " + out_dir + " is " +
                  (o == out.end() ? "the input model directory" : "inside the input model directory " + im.dir) +
                  "; choose another");
  }
  model.validate(plan);
  const LlamaConfig& lc = im.cfg.llm;
  const int L = lc.num_layers;
  std::vector<LayerFate> fate(static_cast<size_t>(L));
  int kept = 0;
  for (int l = 0; l < L; ++l) {
    LayerFate& f = fate[size_t(l)];
    const LayerPlan lp = plan.llm.empty() ? LayerPlan{} : plan.llm[size_t(l)];
    f.attn = lc.layers[size_t(l)].attn && lp.attn;
    f.mlp = lc.layers[size_t(l)].mlp && lp.mlp;
    f.keep = f.attn || f.mlp;
    if (f.keep) f.new_index = kept++;
    if (f.mlp && !lp.mlp_channels.empty()) f.channels = &plan.llm[size_t(l)].mlp_channels;
  }
  if (kept == 0) throw Error("prune: the plan drops every language-model layer");

  const std::string layer_prefix = (lc.prefix.empty() ? "" : lc.prefix + ".") + "model.layers.";
  const io::TensorStore& src = im.weights->tensors();
  // An int8 checkpoint's per-row scales would have to follow the rows and
  // channels kept; prune the bf16 or f32 model and convert that instead.
  for (const std::string& name : src.names())
    if (src.get(name).dtype == io::DType::I8)
      throw Error("prune: '" + name + "' is stored as int8; prune the model before converting it with --dtype int8");
  io::SafetensorsWriter w;
  PruneResult res;
  res.layers_before = L;
  res.layers_after = kept;
  for (const std::string& name : src.names()) {
    const io::TensorInfo& t = src.get(name);
    res.params_before += t.numel();
    if (name.rfind(layer_prefix, 0) != 0) {
      w.add(name, t.dtype, t.shape, t.data, t.nbytes);
      res.params_after += t.numel();
      continue;
    }
    const std::string rest = name.substr(layer_prefix.size());
    const size_t dot = rest.find('.');
    const int l = std::stoi(rest.substr(0, dot));
    const std::string leaf = rest.substr(dot + 1);
    const LayerFate& f = fate.at(size_t(l));
    const bool attn_part = leaf.rfind("self_attn.", 0) == 0 || leaf.rfind("input_layernorm.", 0) == 0;
    if (!f.keep || (attn_part && !f.attn) || (!attn_part && !f.mlp)) continue;
    const std::string new_name = layer_prefix + std::to_string(f.new_index) + "." + leaf;
    const bool gate_up = leaf == "mlp.gate_proj.weight" || leaf == "mlp.up_proj.weight";
    const bool down = leaf == "mlp.down_proj.weight";
    if (f.channels && (gate_up || down)) {
      std::vector<uint8_t> bytes = slice(t, *f.channels, down);
      std::vector<int64_t> shape = t.shape;
      shape[down ? 1 : 0] = int64_t(f.channels->size());
      w.add(new_name, t.dtype, shape, bytes.data(), bytes.size());
      res.params_after += int64_t(bytes.size() / io::dtype_size(t.dtype));
    } else {
      w.add(new_name, t.dtype, t.shape, t.data, t.nbytes);
      res.params_after += t.numel();
    }
  }

  nlohmann::json cfg = im.cfg.raw;
  cfg["name"] = im.cfg.name + "-pruned";
  cfg["llm"]["num_hidden_layers"] = kept;
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < L; ++l) {
    const LayerFate& f = fate[size_t(l)];
    if (!f.keep) continue;
    const int F = f.channels ? int(f.channels->size()) : lc.layers[size_t(l)].intermediate_size;
    layers.push_back({{"attention", f.attn}, {"mlp", f.mlp}, {"intermediate_size", F}});
  }
  cfg["llm"]["layers"] = layers;

  fs::create_directories(out_dir);
  w.set_metadata("pruned_from", im.cfg.name);
  w.write((fs::path(out_dir) / "model.safetensors").string());
  write_file((fs::path(out_dir) / "config.json").string(), cfg.dump(2) + "\n");
  const fs::path tok = fs::path(im.dir) / im.cfg.prompt.tokenizer;
  if (fs::exists(tok)) {
    std::ifstream in(tok, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) throw Error(tok.string() + ": cannot read");
    write_file((fs::path(out_dir) / im.cfg.prompt.tokenizer).string(), bytes.str());
  }

  // What weights cannot express: token selection (its layer renumbered),
  // caching, and precision (per module, and per layer renumbered; int8 codes
  // and BF16 copies are made when the plan is applied).
  Plan residual;
  residual.name = plan.name + "-residual";
  residual.tokens = plan.tokens;
  residual.precision = plan.precision;
  bool any_precision = false;
  for (const LayerPlan& lp : plan.llm) any_precision |= lp.weights != WeightType::Stored;
  if (any_precision)
    for (int l = 0; l < L; ++l)
      if (fate[size_t(l)].keep) {
        residual.llm.emplace_back();
        residual.llm.back().weights = plan.llm[size_t(l)].weights;
      }
  if (plan.tokens.enabled) {
    int before = 0;
    for (int l = 0; l < plan.tokens.after_layer; ++l) before += fate[size_t(l)].keep;
    residual.tokens.after_layer = before;
  }
  residual.cache = plan.cache;
  const fs::path residual_path = fs::path(out_dir) / "plan.json";
  if (!residual.is_dense()) {
    write_file(residual_path.string(), residual.to_json() + "\n");
    res.residual_plan = true;
  } else {
    fs::remove(residual_path);
  }
  return res;
}

}  // namespace evla::accel
