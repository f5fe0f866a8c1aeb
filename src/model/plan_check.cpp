#include "model/plan_check.h"

#include <string>

#include "evla/error.h"

namespace evla {

namespace {
[[noreturn]] void bad(const Plan& plan, const std::string& field, const std::string& why) {
  throw Error("plan '" + plan.name + "': " + field + ": " + why);
}
std::string s(long v) { return std::to_string(v); }
}  // namespace

void check_plan(const Plan& plan, const ModelConfig& cfg) {
  const int L = cfg.llm.num_layers;
  if (!plan.llm.empty() && int(plan.llm.size()) != L)
    bad(plan, "llm", "describes " + s(plan.llm.size()) + " layers but the model has " + s(L));
  int kept = 0;
  for (size_t l = 0; l < plan.llm.size(); ++l)
    kept += (plan.llm[l].attn && cfg.llm.layers[l].attn) || (plan.llm[l].mlp && cfg.llm.layers[l].mlp);
  if (!plan.llm.empty() && kept == 0) bad(plan, "llm", "drops every language-model layer (the prompt would be ignored)");
  for (size_t l = 0; l < plan.llm.size(); ++l) {
    const LayerPlan& lp = plan.llm[l];
    const std::string f = "llm.layers[" + s(l) + "]";
    const int F = cfg.llm.layers[l].intermediate_size;
    if (!(lp.mlp_keep > 0.f && lp.mlp_keep <= 1.f))
      bad(plan, f + ".mlp_keep", "must be in (0, 1], got " + std::to_string(lp.mlp_keep));
    if (lp.mlp_keep < 1.f && lp.mlp_channels.empty())
      bad(plan, f + ".mlp_channels", "needed when mlp_keep < 1");
    // Checked whenever listed: the run time and `evla prune` use any list they find.
    if (!lp.mlp_channels.empty()) {
      int prev = -1;
      for (int c : lp.mlp_channels) {
        if (c <= prev || c >= F)
          bad(plan, f + ".mlp_channels",
              "must be strictly increasing channel indices below " + s(F) + ", found " + s(c));
        prev = c;
      }
    }
  }
  const TokenPlan& t = plan.tokens;
  if (t.enabled) {
    const int nv = cfg.vision.num_images * cfg.vision.tokens_per_image();
    if (t.after_layer < 1 || t.after_layer >= L)
      bad(plan, "tokens.after_layer", "must be in [1, " + s(L - 1) + "], got " + s(t.after_layer));
    if (t.keep < 1 || t.keep > nv)
      bad(plan, "tokens.keep", "must be in [1, " + s(nv) + "] (the visual tokens), got " + s(t.keep));
    if (t.key < 0 || t.key > t.keep)
      bad(plan, "tokens.key", "must be in [0, tokens.keep = " + s(t.keep) + "], got " + s(t.key));
    if (!(t.alpha >= 0.f && t.alpha <= 1.f))
      bad(plan, "tokens.alpha", "must be in [0, 1], got " + std::to_string(t.alpha));
    const size_t scorer = size_t(t.after_layer - 1);
    if ((!plan.llm.empty() && !plan.llm[scorer].attn) || !cfg.llm.layers[scorer].attn)
      bad(plan, "tokens.after_layer",
          "token relevance comes from layer " + s(t.after_layer - 1) +
              "'s attention, which is dropped");
  }
  const CachePlan& c = plan.cache;
  const auto& ah = cfg.action_head;
  if (c.interval < 1) bad(plan, "cache.interval", "must be ≥ 1, got " + s(c.interval));
  if (c.interval > ah.steps())
    bad(plan, "cache.interval", "exceeds the " + s(ah.steps()) + " sampling steps");
  if (c.start < 0 || c.start >= ah.steps())
    bad(plan, "cache.start", "must be in [0, " + s(ah.steps() - 1) + "], got " + s(c.start));
  for (int b : c.blocks)
    if (b < 0 || b >= ah.num_layers)
      bad(plan, "cache.blocks", "block " + s(b) + " does not exist (the head has " +
                                    s(ah.num_layers) + ")");
}

}  // namespace evla
