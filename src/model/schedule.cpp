#include "model/schedule.h"

#include <string>

#include "evla/error.h"

namespace evla {

namespace {
[[noreturn]] void bad(const Plan& plan, const std::string& field, const std::string& why) {
  throw Error("plan '" + plan.name + "': " + field + ": " + why);
}
std::string s(long v) { return std::to_string(v); }
}  // namespace

Schedule Schedule::dense_llm(const LlamaConfig& llm) {
  Schedule sc;
  for (const LlamaLayerShape& shape : llm.layers)
    sc.llm.push_back({shape.attn, shape.mlp, shape.intermediate_size, WeightType::Stored});
  return sc;
}

Schedule Schedule::resolve(const Plan& plan, const ModelConfig& cfg) {
  const int L = cfg.llm.num_layers;
  const int nv = cfg.vision.num_images * cfg.vision.tokens_per_image();
  const auto& ah = cfg.action_head;
  if (!plan.llm.empty() && int(plan.llm.size()) != L)
    bad(plan, "llm", "describes " + s(plan.llm.size()) + " layers but the model has " + s(L));

  Schedule sc;
  sc.llm.resize(size_t(L));
  int running = 0;
  for (int l = 0; l < L; ++l) {
    static const LayerPlan dense;
    const LayerPlan& lp = plan.llm.empty() ? dense : plan.llm[size_t(l)];
    const LlamaLayerShape& shape = cfg.llm.layers[size_t(l)];
    const std::string f = "llm.layers[" + s(l) + "]";
    if (!(lp.mlp_keep > 0.f && lp.mlp_keep <= 1.f))
      bad(plan, f + ".mlp_keep", "must be in (0, 1], got " + std::to_string(lp.mlp_keep));
    if (lp.mlp_keep < 1.f && lp.mlp_channels.empty()) bad(plan, f + ".mlp_channels", "needed when mlp_keep < 1");
    // Checked whenever listed: the run time and `evla prune` use any list they find.
    int prev = -1;
    for (int c : lp.mlp_channels) {
      if (c <= prev || c >= shape.intermediate_size)
        bad(plan, f + ".mlp_channels",
            "must be strictly increasing channel indices below " + s(shape.intermediate_size) + ", found " + s(c));
      prev = c;
    }
    LayerSchedule& ls = sc.llm[size_t(l)];
    ls.attn = lp.attn && shape.attn;  // a pruned checkpoint may lack the sub-layer itself
    ls.mlp = lp.mlp && shape.mlp;
    ls.mlp_width = lp.mlp_channels.empty() ? shape.intermediate_size : int(lp.mlp_channels.size());
    ls.precision = plan.layer_precision(l);
    running += ls.attn || ls.mlp;
  }
  if (running == 0) bad(plan, "llm", "drops every language-model layer (the prompt would be ignored)");

  const TokenPlan& t = plan.tokens;
  if (t.enabled) {
    if (t.after_layer < 1 || t.after_layer >= L)
      bad(plan, "tokens.after_layer", "must be in [1, " + s(L - 1) + "], got " + s(t.after_layer));
    if (t.keep < 1 || t.keep > nv)
      bad(plan, "tokens.keep", "must be in [1, " + s(nv) + "] (the visual tokens), got " + s(t.keep));
    if (t.key < 0 || t.key > t.keep)
      bad(plan, "tokens.key", "must be in [0, tokens.keep = " + s(t.keep) + "], got " + s(t.key));
    if (!(t.alpha >= 0.f && t.alpha <= 1.f))
      bad(plan, "tokens.alpha", "must be in [0, 1], got " + std::to_string(t.alpha));
    if (!sc.llm[size_t(t.after_layer - 1)].attn)
      bad(plan, "tokens.after_layer",
          "token relevance comes from layer " + s(t.after_layer - 1) + "'s attention, which is dropped");
    if (nv > t.keep) sc.select_after = t.after_layer - 1;  // keeping every token selects nothing
  }
  sc.tokens = t;

  const CachePlan& c = plan.cache;
  if (c.interval < 1) bad(plan, "cache.interval", "must be ≥ 1, got " + s(c.interval));
  if (c.interval > ah.steps()) bad(plan, "cache.interval", "exceeds the " + s(ah.steps()) + " sampling steps");
  if (c.start < 0 || c.start >= ah.steps())
    bad(plan, "cache.start", "must be in [0, " + s(ah.steps() - 1) + "], got " + s(c.start));
  for (int b : c.blocks)
    if (b < 0 || b >= ah.num_layers)
      bad(plan, "cache.blocks", "block " + s(b) + " does not exist (the head has " + s(ah.num_layers) + ")");
  sc.cache = c;
  for (int step = 0; step < ah.steps(); ++step)
    sc.head_refresh.push_back(c.interval <= 1 || step <= c.start ||
                              (c.threshold <= 0 && (step - c.start) % c.interval == 0));
  return sc;
}

}  // namespace evla
