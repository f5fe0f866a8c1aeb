// evla plan: build an acceleration plan from an analysis report.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "accel/plan_builder.h"
#include "commands.h"
#include "model/model_impl.h"
#include "core/output_file.h"

namespace evla::cli {

void add_plan_command(CLI::App& app) {
  struct Opts {
    std::string analysis, model, out = "plan.json", choice = "importance", method = "efficientvla", queries = "text", blocks;
    std::string token_after = "2";
    int measure = 0;
    accel::PlanRequest req;
  };
  auto o = std::make_shared<Opts>();
  auto& r = o->req;
  CLI::App* cmd = app.add_subcommand("plan", "Build an acceleration plan from an analysis report");
  cmd->add_option("--analysis,-a", o->analysis, "Report from `evla analyze`")->required();
  cmd->add_option("--model,-m", o->model, "Model directory (for validation and FLOPs)")->required();
  cmd->add_option("--out,-o", o->out, "Plan file to write")->capture_default_str();
  cmd->add_option("--name", r.name, "Plan name");
  cmd->add_option("--drop-layers", r.drop_blocks, "Whole LM blocks to drop");
  cmd->add_option("--drop-attention", r.drop_attention, "LM attention sub-layers to drop");
  cmd->add_option("--drop-mlp", r.drop_mlp, "LM MLP sub-layers to drop");
  cmd->add_option("--mlp-prune", r.mlp_prune, "Fraction of MLP channels removed in kept layers (score: mean|activation| × ‖down_proj column‖)");
  cmd->add_option("--int8-layers", r.int8_layers, "Kept LM layers that run from int8 weights, least important first (per-row scales; integer kernel where the CPU has AVX2)");
  cmd->add_flag("--bf16-modules", r.bf16_modules, "Vision towers, projector and action head with BF16 products (vdpbf16ps where the CPU has AVX-512 BF16; elsewhere the same numbers, slower)");
  cmd->add_option("--layer-choice", o->choice,
                  "importance (the method: 1 - cos over all tokens), cognition (the same on the cognition token), "
                  "ablation (action change when the block alone is skipped), greedy (joint ablation, a block at "
                  "a time), random or even (baselines)")
      ->check(CLI::IsMember({"importance", "cognition", "ablation", "greedy", "random", "even"}))->capture_default_str();
  cmd->add_option("--tokens", r.tokens, "Visual tokens kept (K_final); 0 keeps all");
  cmd->add_option("--token-key", r.token_key, "K_key: top-relevance tokens")->capture_default_str();
  cmd->add_option("--token-alpha", r.token_alpha, "Share of the remaining budget chosen by relevance")->capture_default_str();
  cmd->add_option("--token-after", o->token_after,
                  "Layers that see every token (the selection ranks by the last of them), or auto: the layer "
                  "whose selection moved the actions least in the analysis")
      ->capture_default_str();
  cmd->add_option("--token-method", o->method, "efficientvla, fastv or random")
      ->check(CLI::IsMember({"efficientvla", "fastv", "random"}))->capture_default_str();
  cmd->add_option("--token-queries", o->queries,
                  "Whose attention ranks visual tokens: text (every prompt token, the method) or cognition "
                  "(the cognition token alone)")
      ->check(CLI::IsMember({"text", "cognition"}))->capture_default_str();
  cmd->add_option("--cache-interval", r.cache_interval, "Recompute the action head every N steps")->capture_default_str();
  cmd->add_option("--cache-start", r.cache_start, "Steps up to and including this one always recompute")->capture_default_str();
  cmd->add_option("--cache-blocks", o->blocks, "Comma list of DiT blocks that reuse (default: all)");
  cmd->add_option("--target-speedup", r.target_speedup, "Choose the numbers to reach this estimated speed-up");
  cmd->add_option("--measure", o->measure,
                  "With --target-speedup: time each candidate plan against dense on this machine (median of N "
                  "inferences each, one thread) and climb until the measured speed-up reaches the target")
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--seed", r.seed, "Seed of the random baselines")->check(kSeed);
  cmd->callback([o] {
    check_output_path(o->out);
    auto model = Model::load(o->model);
    auto a = accel::AnalysisReport::load(o->analysis);
    // A copy: the measuring lambda below must not be stored in (and keep alive) the options.
    accel::PlanRequest r = o->req;
    r.layers = o->choice == "random" ? accel::LayerChoice::Random
               : o->choice == "even" ? accel::LayerChoice::Even
               : o->choice == "cognition" ? accel::LayerChoice::CognitionImportance
               : o->choice == "ablation" ? accel::LayerChoice::Ablation
               : o->choice == "greedy" ? accel::LayerChoice::Greedy
                                          : accel::LayerChoice::Importance;
    r.token_method = o->method == "fastv" ? TokenMethod::FastV
                     : o->method == "random" ? TokenMethod::Random
                                             : TokenMethod::EfficientVla;
    r.token_queries = o->queries == "cognition" ? TokenQueries::Cognition : TokenQueries::Text;
    if (o->token_after == "auto") {
      r.token_after_layer = 0;
    } else {
      const std::vector<int> v = parse_ints(o->token_after, "--token-after");
      if (v.size() != 1 || v[0] < 1)
        throw CLI::ValidationError("--token-after", "a layer count of at least 1, or auto; got '" + o->token_after + "'");
      r.token_after_layer = v[0];
    }
    if (!o->blocks.empty())
      r.cache_blocks = parse_ints(o->blocks, "--cache-blocks");
    accel::check_request(r, model->impl().cfg);
    // --measure: each rung's speed-up as the median latency of N inferences
    // on the synthetic observation (after two untimed), dense timed once.
    double dense_ms = 0, last_measured = 0;
    if (o->measure > 0) {
      if (r.target_speedup == 0) throw CLI::ValidationError("--measure", "needs --target-speedup");
      auto median_ms = [n = o->measure, obs = synthetic_observation(*model)](Policy& policy) {
        for (int i = 0; i < 2; ++i) policy.infer(obs);
        std::vector<double> ms;
        for (int i = 0; i < n; ++i) ms.push_back(policy.infer(obs).timing.total_ms);
        std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
        return ms[ms.size() / 2];
      };
      Policy dense(model, PolicyOptions{1});
      dense_ms = median_ms(dense);
      r.measure = [&, median_ms](const Plan& candidate) {
        Policy policy(model, PolicyOptions{1});
        policy.set_plan(candidate);
        return last_measured = dense_ms / median_ms(policy);
      };
    }
    Plan p = accel::build_plan(a, *model, r);
    write_file(o->out, p.to_json() + "\n");
    const FlopCount d = model->flops(), q = model->flops(p);
    fmt::print("plan '{}' → {}\n", p.name, o->out);
    fmt::print("FLOPs {:.3f} → {:.3f} GFLOP ({:.1f}%), estimated speed-up {:.2f}×\n", d.total() / 1e9,
               q.total() / 1e9, 100 * q.total() / d.total(), accel::estimated_speedup(a, *model, p));
    if (r.measure)  // the chosen plan is the last one measured
      fmt::print("measured speed-up {:.2f}× (one thread, median of {} inferences; dense {:.2f} ms)\n",
                 last_measured, o->measure, dense_ms);
  });
}

EVLA_COMMAND(80, add_plan_command);

}  // namespace evla::cli
