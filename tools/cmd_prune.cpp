// evla prune: write a physically smaller checkpoint from a plan.
#include <fmt/format.h>

#include "accel/prune.h"
#include "commands.h"

namespace evla::cli {

void add_prune_command(CLI::App& app) {
  struct Opts {
    std::string model, plan, out;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("prune", "Remove a plan's dropped layers and MLP channels from the weights");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plan, "Acceleration plan")->required();
  cmd->add_option("--out,-o", o->out, "Output model directory")->required();
  cmd->callback([o] {
    auto model = Model::load(o->model);
    const Plan plan = Plan::load(o->plan);
    const auto r = accel::prune_model(*model, plan, o->out);
    fmt::print("{} → {}: LM layers {} → {}, parameters {:.3f} M → {:.3f} M\n", o->model, o->out, r.layers_before,
               r.layers_after, r.params_before / 1e6, r.params_after / 1e6);
    if (r.residual_plan)
      fmt::print("token selection / caching remain a run-time plan: {}/plan.json (pass it with --plan)\n", o->out);
  });
}

EVLA_COMMAND(85, add_prune_command);

}  // namespace evla::cli
