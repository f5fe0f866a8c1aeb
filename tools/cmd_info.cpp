// evla info: architecture, parameters and analytic FLOPs per module.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "evla/evla.h"

namespace evla::cli {

void add_info_command(CLI::App& app) {
  struct Opts {
    std::string model, plan;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, FLOPs per module");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plan, "Also show FLOPs under this acceleration plan");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] {
    LoadOptions lo;
    lo.tokenizer_optional = true;  // describing needs no tokenizer
    auto model = Model::load(o->model, lo);
    const FlopCount dense = model->flops();
    Plan plan;
    if (!o->plan.empty()) {
      plan = Plan::load(o->plan);
      model->validate(plan);
    }
    const FlopCount planned = model->flops(plan);
    auto row = [](const FlopCount& f) {
      return nlohmann::json{{"vision", f.vision}, {"projector", f.projector}, {"llm", f.llm},
                            {"action_head", f.action_head}, {"total", f.total()}};
    };
    if (o->json) {
      nlohmann::json j{{"name", model->name()}, {"parameters", model->num_params()},
                       {"action_horizon", model->action_horizon()}, {"action_dim", model->action_dim()},
                       {"unnorm_keys", model->unnorm_keys()},
                       {"memory", {{"weights_bytes", model->memory().weights}, {"derived_bytes", model->memory().derived},
                                   {"peak_rss_bytes", model->memory().peak_rss}}},
                       {"flops_dense", row(dense)}};
      if (!o->plan.empty()) j["flops_plan"] = row(planned), j["plan"] = plan.name;
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("{}\n", model->describe());
    fmt::print("derived-weight cache: {}\n", model->weight_cache_status());
    const MemoryUse mem = model->memory();
    fmt::print("memory: weights {:.2f} GB (mapped), derived at load {:.2f} GB, peak resident {:.2f} GB\n",
               double(mem.weights) / 1e9, double(mem.derived) / 1e9, double(mem.peak_rss) / 1e9);
    fmt::print("| module      | GFLOPs dense |{}\n", o->plan.empty() ? "" : " GFLOPs plan |     % |");
    fmt::print("|-------------|-------------:|{}\n", o->plan.empty() ? "" : "------------:|------:|");
    auto line = [&](const char* name, double d, double p) {
      fmt::print("| {:<11} | {:>12.4f} |", name, d / 1e9);
      if (!o->plan.empty()) fmt::print(" {:>11.4f} | {:>5.1f} |", p / 1e9, d > 0 ? 100 * p / d : 0.0);
      fmt::print("\n");
    };
    line("vision", dense.vision, planned.vision);
    line("projector", dense.projector, planned.projector);
    line("llm", dense.llm, planned.llm);
    line("action head", dense.action_head, planned.action_head);
    line("total", dense.total(), planned.total());
  });
}

EVLA_COMMAND(20, add_info_command);

}  // namespace evla::cli
