// evla plan: build an acceleration plan from an analysis report.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <thread>
#include <sstream>
#include <vector>

#include "accel/plan_builder.h"
#include "accel/plan_search.h"
#include "commands.h"
#include "core/output_file.h"
#include "core/progress.h"
#include "eval/calibration.h"
#include "eval/evaluator.h"
#include "eval/stats.h"
#include "model/model_impl.h"

namespace evla::cli {

namespace {

struct PlanOpts {
  std::string analysis, model, out = "plan.json", choice = "importance", method = "efficientvla", queries = "text", blocks;
  std::string token_after = "2", builder = "search", front, score;
  int measure = 0, validate_episodes = 0, calib_episodes = 32, calib_every = 4, calib_samples = 128;
  uint64_t calib_seed = 900000;
  accel::PlanRequest req;
  accel::SearchOptions search = [] {  // scored in parallel on every core (up to 8) unless -t says otherwise
    accel::SearchOptions so;
    so.threads = int(std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
    return so;
  }();
};

// The search's calibration frames: expert episodes, evenly subsampled.
std::vector<Observation> calibration_frames(const PlanOpts& o, const Model& model, uint64_t seed) {
  eval::CalibrationOptions c;
  c.episodes = o.calib_episodes;
  c.every = o.calib_every;
  c.seed = seed;
  c.image_size = model.image_size();
  c.with_state = model.state_dim() > 0;
  const std::vector<Observation> every = eval::calibration_from_sim(c);
  std::vector<Observation> frames;  // evenly through all episodes, not the first few whole
  const size_t n = std::min(every.size(), size_t(o.calib_samples));
  for (size_t i = 0; i < n; ++i) frames.push_back(every[i * every.size() / n]);
  return frames;
}

// --measure: a plan's speed-up on this machine, one thread: the median over
// N observations of dense's latency over the plan's on the same
// observation, interleaved (after two untimed inferences each). The
// observations are the calibration frames where the model fits the
// benchmark (the prompt lengths and images it will see), else the synthetic
// observation.
std::function<double(const Plan&)> speed_meter(const PlanOpts& o, std::shared_ptr<const Model> model) {
  std::vector<Observation> obs;
  try {
    eval::check_compatible(*model);
    obs = calibration_frames(o, *model, o.calib_seed);
  } catch (const Error&) {
    obs = {synthetic_observation(*model)};
  }
  return [model, obs, n = o.measure](const Plan& plan) {
    Policy dense(model, PolicyOptions{1}), policy(model, PolicyOptions{1});
    policy.set_plan(plan);
    for (int i = 0; i < 2; ++i) dense.infer(obs[0]), policy.infer(obs[0]);
    std::vector<double> ratio;
    for (int i = 0; i < n; ++i) {
      const Observation& x = obs[size_t(i) % obs.size()];
      const double d = dense.infer(x).timing.total_ms;
      ratio.push_back(d / std::max(1e-9, policy.infer(x).timing.total_ms));
    }
    std::nth_element(ratio.begin(), ratio.begin() + ratio.size() / 2, ratio.end());
    return ratio[ratio.size() / 2];
  };
}

// --score: the search's loss and the estimated speed-up of given plans.
void score_plans(const PlanOpts& o, std::shared_ptr<const Model> model, const accel::AnalysisReport& a) {
  std::vector<Plan> plans;
  const std::vector<std::string> files = split_csv(o.score, "--score");
  for (const std::string& f : files) plans.push_back(Plan::load(f));
  const std::vector<Observation> frames = calibration_frames(o, *model, o.calib_seed);
  const std::vector<double> loss = accel::calibration_loss(model, frames, plans, o.search.loss_steps, o.search.threads);
  const auto meter = o.measure > 0 ? speed_meter(o, model) : nullptr;
  fmt::print("{} calibration frames\n\n| plan | estimated speed-up | measured | action NMSE | what it changes |\n"
             "|---|---:|---:|---:|---|\n", frames.size());
  for (size_t i = 0; i < plans.size(); ++i)
    fmt::print("| {} | {:.2f}× | {} | {:.3e} | {} |\n", files[i], accel::estimated_speedup(a, *model, plans[i]),
               meter ? fmt::format("{:.2f}×", meter(plans[i])) : "", loss[i], accel::plan_summary(plans[i]));
}

// --validate-episodes: the search's finalists in closed loop on episodes
// of their own seeds (after the calibration and validation episodes, never
// the reporting ones), every one on the same episodes. The finalist of
// lowest validation loss stays the choice unless another beats it with
// evidence: a paired difference whose 95 % interval lies above zero (a
// thousand episodes cannot tell apart plans a point or two apart, and the
// most successful of eight is lucky more often than better).
void choose_in_closed_loop(const PlanOpts& o, std::shared_ptr<const Model> model, accel::SearchResult& result) {
  eval::check_compatible(*model);
  eval::EvalOptions e;
  e.episodes = o.validate_episodes;
  e.seed = o.calib_seed + 100000;
  e.workers = o.search.threads;
  e.progress = false;
  fmt::print("\nclosed loop, {} matching episodes from seed {}:\n\n"
             "| success | vs the first (paired, 95 % CI) | action NMSE (validation) | plan |\n|---:|---:|---:|---|\n",
             e.episodes, e.seed);
  std::vector<int> first;
  double gain = 0;
  const std::vector<accel::SearchPoint> finalists = result.finalists;
  for (size_t k = 0; k < finalists.size(); ++k) {
    const eval::EvalReport r = eval::evaluate(model, finalists[k].plan, e);
    std::vector<int> won;
    for (const eval::EpisodeResult& ep : r.episodes) won.push_back(ep.success);
    if (k == 0) first = won;
    const eval::PairedDifference d = eval::paired_difference(first, won);
    fmt::print("| {:.1f} % | {:+.1f} ({:+.1f} … {:+.1f}) | {:.3e} | {} |\n", 100 * r.overall.rate, 100 * d.mean,
               100 * d.ci95.lo, 100 * d.ci95.hi, finalists[k].validation_loss, accel::plan_summary(finalists[k].plan));
    if (k == 0 || (d.ci95.lo > 0 && d.mean > gain)) result.best = finalists[k], gain = d.mean;
  }
}

// --target-speedup by search: the plan with the least action error on
// calibration frames at the estimated target (`r` passed check_request).
// With `measure`, the finalists are timed; where none measures the target,
// or the choice has much to spare, the search runs again at a corrected
// estimated target (three rounds at most).
Plan search_for_target(const PlanOpts& o, const accel::PlanRequest& r, std::shared_ptr<const Model> model,
                       const accel::AnalysisReport& a, const std::function<double(const Plan&)>& measure,
                       double& last_measured) {
  const std::vector<Observation> frames = calibration_frames(o, *model, o.calib_seed);
  // Validation episodes follow the calibration ones, never overlapping them.
  const std::vector<Observation> validation = calibration_frames(o, *model, o.calib_seed + uint64_t(o.calib_episodes));
  accel::SearchOptions so = o.search;
  so.random = o.builder == "random";
  so.target_speedup = r.target_speedup;
  try {  // the ladder's plan is a starting point
    accel::PlanRequest ladder = r;
    ladder.measure = nullptr;
    so.start.push_back(accel::build_plan(a, *model, ladder));
  } catch (const Error&) {  // no rung reaches the target: the search starts without it
  }
  accel::SearchResult result, chosen;
  bool found = false;
  for (int round = 0;; ++round) {
    Progress progress(fmt::format("{} at {:.2f}×", o.builder, so.target_speedup), int64_t(so.budget) * int64_t(frames.size()));
    result = accel::search_plan(a, model, frames, so, &progress, validation);
    progress.finish();
    fmt::print("{} plans scored on {} calibration frames ({} inferences); the front:\n\n", result.scored,
               frames.size(), result.inferences);
    fmt::print("| estimated speed-up | action NMSE | plan |\n|---:|---:|---|\n");
    for (const accel::SearchPoint& pt : result.front)
      fmt::print("| {:.2f}× | {:.3e} | {} |\n", pt.speedup, pt.loss, accel::plan_summary(pt.plan));
    fmt::print("\nchosen (the lowest action NMSE on {} validation frames of the {} lowest above): {:.2f}× "
               "estimated, action NMSE {:.3e}, on validation {:.3e}: {}\n",
               validation.size(), so.finalists, result.best.speedup, result.best.loss, result.best.validation_loss,
               accel::plan_summary(result.best.plan));
    if (o.validate_episodes > 0) choose_in_closed_loop(o, model, result);
    if (!measure) {
      chosen = result;
      break;
    }
    // The choice first, then the other finalists in their order: the first
    // that measures the target is taken (one plan a little short of it is
    // no reason to search again at a higher estimate, which finds plans
    // that lose more).
    std::vector<accel::SearchPoint> order = {result.best};
    for (const accel::SearchPoint& f : result.finalists)
      if (f.plan.to_json() != result.best.plan.to_json()) order.push_back(f);
    double m = 0;
    for (const accel::SearchPoint& f : order) {
      m = measure(f.plan);
      fmt::print("measured {:.2f}×: {}\n", m, accel::plan_summary(f.plan));
      if (m >= r.target_speedup) {
        result.best = f;
        break;
      }
    }
    // Where no finalist measures the target, the estimate is off by the
    // ratio measured: the next round searches at the estimated target that
    // ratio says measures it; where the choice has more than 3 % to spare,
    // lower (a plan with slack is less accurate than it may be).
    if (m >= r.target_speedup && (!found || result.best.validation_loss < chosen.best.validation_loss)) {
      chosen = result, last_measured = m, found = true;
    }
    if ((m >= r.target_speedup && m < 1.03 * r.target_speedup) || round == 2) break;
    so.target_speedup *= r.target_speedup / m * (m < r.target_speedup ? 1.01 : 1.0);
  }
  if (measure && !found)
    throw Error(fmt::format("no plan the search chose measured the {:.2f}× target in three rounds", r.target_speedup));
  result = chosen;
  if (!o.front.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const accel::SearchPoint& pt : result.front)
      j.push_back({{"estimated_speedup", pt.speedup}, {"action_nmse", pt.loss},
                   {"summary", accel::plan_summary(pt.plan)}, {"plan", nlohmann::json::parse(pt.plan.to_json())}});
    write_file(o.front, j.dump(1) + "\n");
  }
  Plan p = result.best.plan;
  p.name = r.name.empty() ? fmt::format("{}-{:.2f}x", o.builder, r.target_speedup) : r.name;
  return p;
}

}  // namespace

void add_plan_command(CLI::App& app) {
  using Opts = PlanOpts;
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
  cmd->add_flag("--token-merge", r.token_merge,
                "Merge each visual token not kept into the most similar kept one (averaged, as ToMe) instead of "
                "dropping it");
  cmd->add_option("--cache-interval", r.cache_interval, "Recompute the action head every N steps")->capture_default_str();
  cmd->add_option("--cache-start", r.cache_start, "Steps up to and including this one always recompute")->capture_default_str();
  cmd->add_option("--cache-blocks", o->blocks, "Comma list of DiT blocks that reuse (default: all)");
  cmd->add_option("--target-speedup", r.target_speedup, "Choose the plan to reach this estimated speed-up (see --builder)");
  cmd->add_option("--builder", o->builder,
                  "With --target-speedup: search (evolutionary search for the plan whose actions move least "
                  "from dense on calibration frames), random (random plans, the same budget: the search's "
                  "baseline) or ladder (fixed rungs: int8, head cache, then tokens and layers)")
      ->check(CLI::IsMember({"search", "random", "ladder"}))->capture_default_str();
  cmd->add_option("--measure", o->measure,
                  "With --target-speedup: time plans against dense on this machine (median of N inferences "
                  "each, one thread, interleaved). The ladder climbs until the measured speed-up reaches the "
                  "target; the search searches again with a higher estimated target until it does")
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--search-budget", o->search.budget,
                  "Search work: calibration-frame inferences, in multiples of the calibration set")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--search-seed", o->search.seed, "Seed of the search")->check(kSeed)->capture_default_str();
  cmd->add_option("--loss-steps", o->search.loss_steps,
                  "Leading actions of each chunk in the search's loss (0: the actions executed per inference)")
      ->capture_default_str();
  cmd->add_option("--validate-episodes", o->validate_episodes,
                  "Search: also run the finalists in closed loop on this many benchmark episodes (seeds after the "
                  "calibration ones); one replaces the choice by action NMSE on validation frames only where its "
                  "paired difference to it is above zero with 95 % confidence")
      ->check(CLI::Range(0, kMaxEpisodes))->capture_default_str();
  cmd->add_option("--score", o->score,
                  "Comma list of plan files: print each one's estimated speed-up and the search's loss "
                  "(action NMSE against dense on the calibration frames), and write nothing");
  cmd->add_option("--front", o->front, "Write the search's loss-versus-speed-up front (JSON)");
  cmd->add_option("--calibration-episodes", o->calib_episodes, "Search: expert episodes to calibrate on")
      ->check(kEpisodeCount)->capture_default_str();
  cmd->add_option("--calibration-every", o->calib_every, "Search: keep every k-th frame")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--calibration-samples", o->calib_samples, "Search: at most this many calibration frames")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--calibration-seed", o->calib_seed, "Search: first expert episode seed")
      ->check(kSeed)->capture_default_str();
  cmd->add_option("--threads,-t", o->search.threads, "Search: plans scored in parallel")->check(kThreadCount);
  cmd->add_option("--seed", r.seed, "Seed of the random baselines")->check(kSeed);
  cmd->callback([o] {
    if (!o->score.empty()) {
      auto model = Model::load(o->model);
      score_plans(*o, model, accel::AnalysisReport::load(o->analysis));
      return;
    }
    check_output_path(o->out);
    if (!o->front.empty()) check_output_path(o->front);
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
    if (o->measure > 0 && r.target_speedup == 0) throw CLI::ValidationError("--measure", "needs --target-speedup");
    std::function<double(const Plan&)> measured;
    if (o->measure > 0) measured = speed_meter(*o, model);
    double last_measured = 0;
    Plan p;
    if (r.target_speedup > 0 && o->builder != "ladder") {
      p = search_for_target(*o, r, model, a, measured, last_measured);
    } else {
      if (o->measure > 0) r.measure = [&](const Plan& candidate) { return last_measured = measured(candidate); };
      p = accel::build_plan(a, *model, r);
    }
    write_file(o->out, p.to_json() + "\n");
    const FlopCount d = model->flops(), q = model->flops(p);
    fmt::print("plan '{}' → {}\n", p.name, o->out);
    fmt::print("FLOPs {:.3f} → {:.3f} GFLOP ({:.1f}%), estimated speed-up {:.2f}×\n", d.total() / 1e9,
               q.total() / 1e9, 100 * q.total() / d.total(), accel::estimated_speedup(a, *model, p));
    if (o->measure > 0)  // the chosen plan is the last one measured
      fmt::print("measured speed-up {:.2f}× (one thread, median over {} observations of dense's time over the "
                 "plan's, interleaved)\n", last_measured, o->measure);
  });
}

EVLA_COMMAND(80, add_plan_command);

}  // namespace evla::cli
