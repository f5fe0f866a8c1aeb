// Plan files: versioned JSON, human-editable (layer lists rather than one
// record per layer). Model-independent checks happen here; Schedule::resolve() does
// the ones that need the model.
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "evla/error.h"
#include "evla/plan.h"

namespace evla {

using nlohmann::json;

bool PrecisionPlan::is_stored() const {
  for (WeightType t : {vision, projector, llm, action_head})
    if (t != WeightType::Stored) return false;
  return true;
}

WeightType Plan::layer_precision(int l) const {
  const WeightType own = l >= 0 && size_t(l) < llm.size() ? llm[size_t(l)].weights : WeightType::Stored;
  return own != WeightType::Stored ? own : precision.llm;
}

bool Plan::is_dense() const {
  for (const auto& l : llm)
    if (!l.attn || !l.mlp || l.mlp_keep < 1.f || l.weights != WeightType::Stored) return false;
  return !tokens.enabled && cache.interval <= 1 && precision.is_stored();
}

static const char* precision_name(WeightType t) {
  switch (t) {
    case WeightType::F32: return "fp32";
    case WeightType::BF16: return "bf16";
    case WeightType::Int8: return "int8";
    default: return "stored";
  }
}

Plan Plan::load(const std::string& path) {
  return from_json(read_json_text(path), path);
}

static TokenMethod parse_method(const JsonReader& r, const std::string& m) {
  if (m == "efficientvla") return TokenMethod::EfficientVla;
  if (m == "fastv") return TokenMethod::FastV;
  if (m == "random") return TokenMethod::Random;
  r.fail("method", "unknown method '" + m + "' (efficientvla, fastv, random)");
}

static TokenQueries parse_queries(const JsonReader& r, const std::string& q) {
  if (q == "text") return TokenQueries::Text;
  if (q == "cognition") return TokenQueries::Cognition;
  r.fail("queries", "unknown queries '" + q + "' (text, cognition)");
}

static const char* method_name(TokenMethod m) {
  switch (m) {
    case TokenMethod::FastV: return "fastv";
    case TokenMethod::Random: return "random";
    default: return "efficientvla";
  }
}

Plan Plan::from_json(const std::string& text, const std::string& source) {
  const json j = parse_json(text, source);
  JsonReader r(j, source);
  r.only_keys({"evla_plan", "name", "llm", "tokens", "cache", "precision"});
  Plan p;
  p.version = r.int32("evla_plan");
  if (p.version != 1) r.fail("evla_plan", "unsupported plan version " + std::to_string(p.version));
  p.name = r.string("name", "unnamed");

  if (r.has("llm")) {
    JsonReader l = r.child("llm");
    l.only_keys({"num_layers", "drop_blocks", "drop_attention", "drop_mlp", "fp32_layers", "bf16_layers",
                 "int8_layers", "mlp_channels",
                 "intermediate_size"});
    const int64_t n = l.integer("num_layers");
    if (n < 1 || n > 4096) l.fail("num_layers", "must be in [1, 4096]");
    p.llm.assign(size_t(n), LayerPlan{});
    auto layer_list = [&](const char* key, auto apply) {
      if (!l.has(key)) return;
      std::set<int64_t> seen;
      for (int64_t i : l.integers(key)) {
        if (i < 0 || i >= n)
          l.fail(key, "layer " + std::to_string(i) + " does not exist (num_layers = " +
                          std::to_string(n) + ")");
        if (!seen.insert(i).second) l.fail(key, "layer " + std::to_string(i) + " listed twice");
        apply(p.llm[size_t(i)]);
      }
    };
    layer_list("drop_blocks", [](LayerPlan& lp) { lp.attn = lp.mlp = false; });
    layer_list("drop_attention", [](LayerPlan& lp) { lp.attn = false; });
    layer_list("drop_mlp", [](LayerPlan& lp) { lp.mlp = false; });
    // One precision per layer: a layer in two of these lists is an error.
    for (auto [key, type] : {std::pair{"fp32_layers", WeightType::F32}, std::pair{"bf16_layers", WeightType::BF16},
                             std::pair{"int8_layers", WeightType::Int8}})
      layer_list(key, [&l, key = key, type = type](LayerPlan& lp) {
        if (lp.weights != WeightType::Stored) l.fail(key, "a layer here already has another precision");
        lp.weights = type;
      });
    if (l.has("mlp_channels")) {
      const json& mc = l.node().at("mlp_channels");
      if (!mc.is_object()) l.fail("mlp_channels", "expected an object {layer: [channels]}");
      JsonReader m = l.child("mlp_channels");
      for (auto it = mc.begin(); it != mc.end(); ++it) {
        int64_t layer = -1;
        try {
          size_t used = 0;
          layer = std::stoll(it.key(), &used);
          if (used != it.key().size()) layer = -1;
        } catch (...) {
        }
        if (layer < 0 || layer >= n) m.fail(it.key(), "not a layer index below " + std::to_string(n));
        LayerPlan& lp = p.llm[size_t(layer)];
        for (int64_t c : m.integers(it.key())) {
          if (c < 0 || c > (1 << 30)) m.fail(it.key(), "channel index out of range");
          lp.mlp_channels.push_back(int(c));
        }
      }
      if (!l.has("intermediate_size"))
        l.fail("intermediate_size", "required with mlp_channels");
      const int64_t F = l.integer("intermediate_size");
      if (F < 1) l.fail("intermediate_size", "must be positive");
      for (auto& lp : p.llm)
        if (!lp.mlp_channels.empty()) lp.mlp_keep = float(lp.mlp_channels.size()) / float(F);
    }
  }

  if (r.has("precision")) {
    JsonReader pr = r.child("precision");
    pr.only_keys({"vision", "projector", "llm", "action_head"});
    auto read = [&](const char* key, WeightType& t, bool int8_allowed) {
      if (!pr.has(key)) return;
      const std::string v = pr.string(key);
      if (v == "stored") t = WeightType::Stored;
      else if (v == "fp32") t = WeightType::F32;
      else if (v == "bf16") t = WeightType::BF16;
      else if (v == "int8" && int8_allowed) t = WeightType::Int8;
      else pr.fail(key, "unknown precision '" + v + "' (stored, fp32, bf16" + (int8_allowed ? ", int8)" : ")"));
    };
    read("vision", p.precision.vision, false);
    read("projector", p.precision.projector, false);
    read("llm", p.precision.llm, true);
    read("action_head", p.precision.action_head, false);
  }

  if (r.has("tokens")) {
    JsonReader t = r.child("tokens");
    t.only_keys({"keep", "key", "alpha", "after_layer", "method", "seed", "queries", "merge"});
    p.tokens.enabled = true;
    p.tokens.keep = t.int32("keep");
    p.tokens.key = t.int32("key", 4);
    p.tokens.alpha = float(t.number("alpha", 0.5));
    p.tokens.after_layer = t.int32("after_layer", 2);
    p.tokens.method = parse_method(t, t.string("method", "efficientvla"));
    p.tokens.seed = uint64_t(t.integer("seed", 0));
    p.tokens.queries = parse_queries(t, t.string("queries", "text"));
    p.tokens.merge = t.boolean("merge", false);
    if (p.tokens.keep < 1) t.fail("keep", "must be ≥ 1");
    if (p.tokens.key < 0 || p.tokens.key > p.tokens.keep) t.fail("key", "must be in [0, keep]");
    if (!(p.tokens.alpha >= 0 && p.tokens.alpha <= 1)) t.fail("alpha", "must be in [0, 1]");
    if (p.tokens.after_layer < 1) t.fail("after_layer", "must be ≥ 1");
  }

  if (r.has("cache")) {
    JsonReader c = r.child("cache");
    c.only_keys({"interval", "start", "blocks", "threshold"});
    p.cache.interval = c.int32("interval");
    p.cache.start = c.int32("start", 0);
    if (p.cache.interval < 1) c.fail("interval", "must be ≥ 1, got " + std::to_string(p.cache.interval));
    if (p.cache.start < 0) c.fail("start", "must be ≥ 0");
    p.cache.threshold = float(c.number("threshold", 0.0));
    if (!(p.cache.threshold >= 0 && p.cache.threshold <= 1e6)) c.fail("threshold", "must be in [0, 1e6]");
    if (p.cache.threshold > 0 && p.cache.interval < 2)
      c.fail("threshold", "an adaptive cache needs interval ≥ 2 (the most steps between refreshes)");
    if (c.has("blocks"))
      for (int64_t b : c.integers("blocks")) {
        if (b < 0 || b > 4096) c.fail("blocks", "block index out of range");
        p.cache.blocks.push_back(int(b));
      }
  }
  return p;
}

std::string Plan::to_json() const {
  json j;
  j["evla_plan"] = version;
  j["name"] = name;
  if (!llm.empty()) {
    json l;
    l["num_layers"] = llm.size();
    std::vector<int> blocks, attn, mlp, fp32, bf16, int8;
    json channels = json::object();
    int F = 0;
    for (size_t i = 0; i < llm.size(); ++i) {
      const LayerPlan& lp = llm[i];
      if (!lp.attn && !lp.mlp) blocks.push_back(int(i));
      else if (!lp.attn) attn.push_back(int(i));
      else if (!lp.mlp) mlp.push_back(int(i));
      if (lp.weights == WeightType::F32) fp32.push_back(int(i));
      if (lp.weights == WeightType::BF16) bf16.push_back(int(i));
      if (lp.weights == WeightType::Int8) int8.push_back(int(i));
      if (!lp.mlp_channels.empty()) {
        channels[std::to_string(i)] = lp.mlp_channels;
        F = int(std::lround(lp.mlp_channels.size() / lp.mlp_keep));
      }
    }
    l["drop_blocks"] = blocks;
    l["drop_attention"] = attn;
    l["drop_mlp"] = mlp;
    if (!fp32.empty()) l["fp32_layers"] = fp32;
    if (!bf16.empty()) l["bf16_layers"] = bf16;
    if (!int8.empty()) l["int8_layers"] = int8;
    if (!channels.empty()) {
      l["intermediate_size"] = F;
      l["mlp_channels"] = "@channels@";  // written compactly below, one line per layer
    }
    j["llm"] = l;
  }
  if (!precision.is_stored()) {
    json pr = json::object();
    for (auto [key, t] : {std::pair{"vision", precision.vision}, std::pair{"projector", precision.projector},
                          std::pair{"llm", precision.llm}, std::pair{"action_head", precision.action_head}})
      if (t != WeightType::Stored) pr[key] = precision_name(t);
    j["precision"] = pr;
  }
  if (tokens.enabled)
    j["tokens"] = {{"keep", tokens.keep},          {"key", tokens.key},
                   {"alpha", tokens.alpha},        {"after_layer", tokens.after_layer},
                   {"method", method_name(tokens.method)}, {"seed", tokens.seed}};
  if (tokens.enabled && tokens.queries == TokenQueries::Cognition) j["tokens"]["queries"] = "cognition";
  if (tokens.enabled && tokens.merge) j["tokens"]["merge"] = true;
  if (cache.interval > 1)
    j["cache"] = {{"interval", cache.interval}, {"start", cache.start}, {"blocks", cache.blocks}};
  if (cache.interval > 1 && cache.threshold > 0) j["cache"]["threshold"] = cache.threshold;
  std::string text = j.dump(2);
  const size_t at = text.find("\"@channels@\"");
  if (at != std::string::npos) {
    std::string ch = "{";
    for (size_t i = 0; i < llm.size(); ++i)
      if (!llm[i].mlp_channels.empty())
        ch += std::string(ch.size() > 1 ? "," : "") + "\n      \"" + std::to_string(i) + "\": " +
              json(llm[i].mlp_channels).dump();
    text.replace(at, 12, ch + "\n    }");
  }
  return text;
}

}  // namespace evla
