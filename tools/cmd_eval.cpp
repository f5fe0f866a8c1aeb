// evla eval: closed-loop success and latency on the tabletop benchmark.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "commands.h"
#include "eval/evaluator.h"
#include "eval/stats.h"
#include "core/output_file.h"
#include <nlohmann/json.hpp>

namespace evla::cli {

void add_eval_command(CLI::App& app) {
  struct Opts {
    std::string model, plan, json;
    bool quiet = false;
    eval::EvalOptions eval;  // bound to the options below
  };
  auto o = std::make_shared<Opts>();
  eval::EvalOptions& e = o->eval;
  CLI::App* cmd = app.add_subcommand("eval", "Run the policy closed-loop on benchmark episodes");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plan, "Acceleration plan (JSON); a comma list ('dense' for none) compares them side by side");
  add_parsed(cmd, "--split", e.split, sim::parse_split,
             "matching, variants, or randomized (training looks: random table and wall)", "matching");
  add_parsed(cmd, "--vary", e.variant_factors, sim::parse_variant_factors,
             "variants only: which changes to apply, a comma list of camera, surfaces, light, shades, "
             "distractors (a diagnostic: which change costs the policy its success)", "all");
  add_parsed(cmd, "--tasks", e.tasks, sim::parse_task_list,
             "Comma list (default: all): pick, move_near, open_drawer, close_drawer, put_in_drawer");
  cmd->add_option("--episodes,-n", e.episodes, "Episodes in total, spread over the tasks")->check(kEpisodeCount)->capture_default_str();
  cmd->add_option("--seed", e.seed, "First episode seed")->check(kSeed)->capture_default_str();
  cmd->add_option("--unnorm-key", e.unnorm_key, "Dataset whose action statistics un-normalise the actions");
  cmd->add_option("--execute", e.execute, "Actions executed per inference (default: the model's n_action_steps)");
  cmd->add_flag("--ensemble", e.ensemble, "CogACT adaptive action ensembling (one action per inference)");
  cmd->add_option("--sticky-gripper", e.sticky_gripper,
                  "Hold every gripper flip for this many steps (SIMPLER's Google-robot filter uses 15; 0: off)")
      ->capture_default_str();
  cmd->add_option("--workers", e.workers, "Episodes run in parallel (default: cores)")->check(kThreadCount);
  cmd->add_option("--threads,-t", e.threads_per_policy, "Threads per policy")->check(kThreadCount)->capture_default_str();
  cmd->add_option("--json", o->json, "Also write the full report (every episode) as JSON here");
  cmd->add_option("--record", e.record_dir, "Write PNG strips of episodes to this directory");
  cmd->add_flag("--quiet,-q", o->quiet, "No progress bar");
  cmd->callback([o] {
    if (!o->json.empty()) check_output_path(o->json);
    eval::EvalOptions& opts = o->eval;
    opts.progress = !o->quiet;
    auto model = Model::load(o->model);
    const std::vector<std::string> plan_paths = split_csv(o->plan.empty() ? std::string("dense") : o->plan, "--plan");
    nlohmann::json all = nlohmann::json::array();
    std::vector<eval::EvalReport> reports;
    for (const std::string& path : plan_paths) {
      const Plan plan = path == "dense" ? Plan{} : Plan::load(path);
      reports.push_back(eval::evaluate(model, plan, opts));
      fmt::print("{}\n", reports.back().to_markdown());
      all.push_back(reports.back().to_json());
    }
    if (reports.size() > 1) {
      // Side by side against the first configuration: speed-up, and the success
      // difference paired episode by episode (every plan runs the same seeds).
      auto outcomes = [](const eval::EvalReport& r) {
        std::vector<int> v;
        for (const auto& e : r.episodes) v.push_back(e.success ? 1 : 0);
        return v;
      };
      const std::vector<int> first = outcomes(reports[0]);
      fmt::print("| plan | success | 95% CI | vs {} (paired, 95% CI) | p50 ms | speed-up | control rate |\n"
                 "|---|---:|---:|---:|---:|---:|---:|\n", reports[0].plan);
      for (const auto& r : reports) {
        const eval::PairedDifference d = eval::paired_difference(first, outcomes(r));
        fmt::print("| {} | {:.1f}% | {:.1f}–{:.1f}% | {:+.1f} ({:+.1f} … {:+.1f}) | {:.2f} | {:.2f}× | {:.0f}/s |\n", r.plan,
                   100 * r.overall.rate, 100 * r.overall.lo, 100 * r.overall.hi, 100 * d.mean, 100 * d.ci95.lo,
                   100 * d.ci95.hi, r.latency_p50_ms, reports[0].latency_p50_ms / r.latency_p50_ms, r.control_hz);
      }
    }
    if (!o->json.empty()) {
      write_file(o->json, (reports.size() == 1 ? all[0] : all).dump(2) + "\n");
    }
  });
}

EVLA_COMMAND(30, add_eval_command);

}  // namespace evla::cli
