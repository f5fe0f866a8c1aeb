// evla info: architecture, parameters and analytic FLOPs per module.
#include <fmt/format.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "evla/evla.h"
#include "io/safetensors.h"
#include "model/model_impl.h"

namespace evla::cli {

namespace {

// NaN or infinite weights make NaN actions; inference refuses those, this
// names the tensor that holds them.
void check_weights_finite(const io::TensorStore& store) {
  for (const std::string& name : store.names()) {
    const io::TensorInfo& t = store.get(name);
    if (t.dtype != io::DType::F32 && t.dtype != io::DType::F16 && t.dtype != io::DType::BF16) continue;
    const std::vector<float> v = io::to_f32(t);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]) && bad++ == 0) first = i;
    if (bad)
      throw Error(fmt::format("{}: tensor '{}' holds {} non-finite value(s), the first at element {} ({})",
                              store.source(), name, bad, first, v[first]));
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  struct Opts {
    std::string model, plan;
    bool json = false, check_weights = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, FLOPs per module");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plan, "Also show FLOPs under this acceleration plan");
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_flag("--check-weights", o->check_weights,
                "Read every weight and fail, naming the tensor, on a NaN or infinite value");
  cmd->callback([o] {
    LoadOptions lo;
    lo.tokenizer_optional = true;  // describing needs no tokenizer
    auto model = Model::load(o->model, lo);
    if (o->check_weights) check_weights_finite(model->impl().weights->tensors());
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
