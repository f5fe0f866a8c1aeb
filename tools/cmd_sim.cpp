// evla sim: the tabletop benchmark's simulator. `gen` writes expert
// demonstrations (or, with --policy, on-policy episodes labelled by the
// expert) for training, `render` saves one episode's first frame,
// `expert` measures the scripted expert's success and the simulator's speed.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/output_file.h"
#include "eval/on_policy.h"
#include "sim/dataset.h"
#include "sim/env.h"
#include "sim/expert_eval.h"

namespace evla::cli {

namespace {


const char* kTasksHelp = "Comma list or 'all': pick, move_near, open_drawer, close_drawer, put_in_drawer";

void add_gen(CLI::App& sim_cmd) {
  struct Opts {
    std::string out, policy, plan;
    int execute = 0, sticky = 0;
    float noise = 1, expert_share = 0;
    bool quiet = false;
    sim::DatasetOptions d;  // bound to the options below
    Opts() { d.seed = 1000000; }  // training seeds stay clear of evaluation's, which start at 0
  };
  auto o = std::make_shared<Opts>();
  sim::DatasetOptions& d = o->d;
  CLI::App* cmd = sim_cmd.add_subcommand("gen", "Write expert demonstrations as safetensors shards (docs/dataset.md)");
  cmd->add_option("--out,-o", o->out, "Output directory")->required();
  cmd->add_option("--episodes,-n", d.episodes, "Episodes, cycling through the tasks")->check(kEpisodeCount)->capture_default_str();
  add_parsed(cmd, "--split", d.split, sim::parse_split,
             "matching, variants, or randomized (training looks: random table and wall)", "matching");
  add_parsed(cmd, "--tasks", d.tasks, sim::parse_task_list, kTasksHelp, "all");
  cmd->add_option("--size", d.demo.image_size, "Image size in pixels (square)")->check(CLI::Range(1, kMaxImageSide))->capture_default_str();
  cmd->add_option("--chunk", d.demo.chunk, "Actions per frame's target chunk")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--seed", d.seed, "Episode i uses seed + i")->check(kSeed)->capture_default_str();
  cmd->add_option("--camera-jitter", d.camera_jitter,
                  "With --split randomized: move the camera up to this far (table units, at most 0.025, below "
                  "every variants shift)")
      ->capture_default_str();
  cmd->add_option("--noise", o->noise, "Expert noise level: 0 clean, 1 default, up to 2 (not with --policy: its labels are clean)")
      ->capture_default_str();
  cmd->add_option("--shard-episodes", d.episodes_per_shard, "Episodes per shard")->check(kEpisodeCount)->capture_default_str();
  cmd->add_option("--threads,-t", d.threads, "Episodes recorded in parallel")->check(kThreadCount)->capture_default_str();
  cmd->add_flag("--keep-failed", d.keep_failed,
               "Keep episodes the expert failed (marked success=false; with --policy every episode is kept)");
  cmd->add_option("--policy", o->policy,
                  "On-policy data (DAgger): this model drives, and the expert labels every frame it visits");
  cmd->add_option("--plan", o->plan, "With --policy: its acceleration plan");
  cmd->add_option("--execute", o->execute, "With --policy: actions executed per inference (default: the model's n_action_steps)");
  cmd->add_option("--sticky-gripper", o->sticky, "With --policy: as evla eval --sticky-gripper")
      ->capture_default_str();
  cmd->add_option("--expert-share", o->expert_share,
                  "With --policy: chance per inference that the expert's actions run instead")
      ->capture_default_str();
  cmd->add_flag("--quiet,-q", o->quiet, "No progress");
  cmd->callback([o] {
    sim::DatasetOptions& d = o->d;
    d.demo.noise = sim::ExpertNoise::level(o->noise);
    auto progress = [&](int done, int total) {
      if (!o->quiet) fmt::print(stderr, "\rsim gen: {}/{} episodes", done, total);
    };
    if (o->policy.empty()) {
      if (!o->plan.empty()) throw CLI::ValidationError("--plan", "needs --policy");
      sim::DatasetReport r = sim::write_dataset(o->out, d, progress);
      if (!o->quiet) fmt::print(stderr, "\n");
      fmt::print("{} episodes ({} frames) in {} shards under {}; {} expert failures {}\n", r.episodes, r.frames,
                 r.shards.size(), o->out, r.failed, d.keep_failed ? "kept" : "dropped");
      return;
    }
    d.demo.noise = {};  // the labels come from a clean expert (the shard's metadata says so)
    auto model = Model::load(o->policy);
    if (model->image_size() != d.demo.image_size)
      throw Error(fmt::format("--size {}: the policy '{}' sees {} px frames", d.demo.image_size, model->name(),
                              model->image_size()));
    const eval::OnPolicyOptions on{d.demo.chunk, o->execute, o->expert_share, o->sticky};
    eval::check_on_policy(*model, on);
    const Plan plan = o->plan.empty() ? Plan{} : Plan::load(o->plan);
    std::vector<Policy> policies;  // one per recording thread, one thread each (as evla eval's default)
    for (int w = 0; w < d.threads; ++w) {
      policies.emplace_back(model, PolicyOptions{1});
      policies.back().set_plan(plan);
    }
    auto record = [&](const sim::EpisodeSpec& spec, int worker) {
      return eval::record_on_policy(policies[size_t(worker)], spec, on);
    };
    sim::DatasetReport r = sim::write_dataset(o->out, d, progress, record);
    if (!o->quiet) fmt::print(stderr, "\n");
    fmt::print("{} on-policy episodes of '{}' ({} frames, every one labelled by the expert) in {} shards under {}; "
               "{} not solved by the policy\n",
               r.episodes, model->name(), r.frames, r.shards.size(), o->out, r.failed);
  });
}

void add_render(CLI::App& sim_cmd) {
  struct Opts {
    std::string task = "pick", split = "matching", out;
    uint64_t seed = 0;
    int size = 128, steps = 0;
    float camera_jitter = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = sim_cmd.add_subcommand("render", "Save an episode's frame as PNG and print its instruction");
  cmd->add_option("--out,-o", o->out, "PNG file")->required();
  cmd->add_option("--task", o->task, kTasksHelp)->capture_default_str();
  cmd->add_option("--split", o->split, "matching, variants, or randomized (training looks: random table and wall)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Episode seed")->check(kSeed)->capture_default_str();
  cmd->add_option("--size", o->size, "Image size in pixels (square)")->check(CLI::Range(1, kMaxImageSide))->capture_default_str();
  cmd->add_option("--steps", o->steps, "Let the clean expert act this many steps first")->check(CLI::Range(0, 100000))->capture_default_str();
  cmd->add_option("--camera-jitter", o->camera_jitter,
                  "With --split randomized: the jitter the episode was generated with (sim gen --camera-jitter)")
      ->capture_default_str();
  cmd->callback([o] {
    check_output_path(o->out);
    sim::Env env;
    env.reset({sim::parse_split(o->split), sim::parse_task(o->task), o->seed, sim::kAllVariantFactors,
               o->camera_jitter});
    sim::Expert expert(env.episode());
    float action[sim::kActionDim];
    for (int i = 0; i < o->steps && !env.done(); ++i) {
      expert.act(env.scene(), action);
      env.step(action);
    }
    save_png(o->out, env.render(o->size, o->size));
    fmt::print("{}  (step {}, {})\n", env.instruction(), env.steps(), env.success() ? "solved" : "not solved");
  });
}

void add_expert(CLI::App& sim_cmd) {
  struct Opts {
    float noise = 1;
    bool json = false;
    sim::ExpertEvalOptions e;  // bound to the options below
  };
  auto o = std::make_shared<Opts>();
  sim::ExpertEvalOptions& e = o->e;
  CLI::App* cmd = sim_cmd.add_subcommand("expert", "Scripted expert's success per task, and simulator steps/s");
  add_parsed(cmd, "--split", e.split, sim::parse_split,
             "matching, variants, or randomized (training looks: random table and wall)", "matching");
  add_parsed(cmd, "--tasks", e.tasks, sim::parse_task_list, kTasksHelp, "all");
  cmd->add_option("--episodes,-n", e.episodes, "Episodes per task")->check(kEpisodeCount)->capture_default_str();
  cmd->add_option("--seed", e.seed, "First episode seed")->check(kSeed)->capture_default_str();
  cmd->add_option("--noise", o->noise, "Expert noise level: 0 clean, 1 default, up to 2")->capture_default_str();
  cmd->add_option("--size", e.render_size, "Render every step at this size (0: no rendering)")->check(CLI::Range(0, kMaxImageSide))->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON instead of a table");
  cmd->callback([o] {
    sim::ExpertEvalOptions& e = o->e;
    e.noise = sim::ExpertNoise::level(o->noise);
    const std::string split = sim::split_name(e.split);
    const int size = e.render_size;
    sim::ExpertEvalReport r = sim::evaluate_expert(e);
    if (o->json) {
      nlohmann::json j = {{"split", split}, {"noise", o->noise}, {"render_size", size},
                          {"steps", r.steps}, {"seconds", r.seconds}, {"steps_per_second", r.steps_per_second()}};
      for (const auto& t : r.tasks)
        j["tasks"].push_back({{"task", sim::task_name(t.task)}, {"episodes", t.episodes},
                              {"successes", t.successes}, {"mean_steps", t.mean_steps}});
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("| task | episodes | success | mean steps | max steps |\n|---|---|---|---|---|\n");
    for (const auto& t : r.tasks)
      fmt::print("| {} | {} | {:.1f}% | {:.1f} | {} |\n", sim::task_name(t.task), t.episodes,
                 100.0 * t.successes / t.episodes, t.mean_steps, sim::max_steps(t.task));
    fmt::print("\n{} split, noise {}: {} steps in {:.2f} s = {:.0f} steps/s ({})\n", split, o->noise, r.steps,
               r.seconds, r.steps_per_second(),
               size > 0 ? fmt::format("rendering {0}x{0} every step", size) : std::string("no rendering"));
  });
}

}  // namespace

void add_sim_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("sim", "Tabletop simulator: demonstrations, renders, expert baseline");
  cmd->require_subcommand(1);
  add_gen(*cmd);
  add_render(*cmd);
  add_expert(*cmd);
}

EVLA_COMMAND(50, add_sim_command);

}  // namespace evla::cli
