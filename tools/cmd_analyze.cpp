// evla analyze: redundancy analysis over a calibration set → JSON report + SVG.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "accel/analysis.h"
#include "commands.h"
#include "core/progress.h"
#include "eval/calibration.h"
#include "core/output_file.h"

namespace evla::cli {

void add_analyze_command(CLI::App& app) {
  struct Opts {
    std::string model, demos, out = "analysis.json", svg;
    int samples = 200, threads = 0;
    eval::CalibrationOptions calib;  // bound to the options below
  };
  auto o = std::make_shared<Opts>();
  eval::CalibrationOptions& c = o->calib;
  CLI::App* cmd = app.add_subcommand("analyze", "Measure layer, token and denoising-step redundancy on a calibration set");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--demos", o->demos, "Calibrate on recorded demonstrations (shard directory) instead of fresh expert episodes");
  add_parsed(cmd, "--split", c.split, sim::parse_split, "Benchmark split for expert episodes", "matching");
  add_parsed(cmd, "--tasks", c.tasks, sim::parse_task_list, "Comma list of tasks (default: all)");
  cmd->add_option("--episodes", c.episodes, "Expert episodes to sample")->check(kEpisodeCount)->capture_default_str();
  cmd->add_option("--every", c.every, "Keep every k-th frame")->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--samples", o->samples, "At most this many observations")->check(CLI::Range(1, 1000000))->capture_default_str();
  cmd->add_option("--seed", c.seed, "First expert episode seed")->check(kSeed)->capture_default_str();
  cmd->add_option("--out,-o", o->out, "Report JSON")->capture_default_str();
  cmd->add_option("--svg", o->svg, "Layer-profile picture (default: report path with .svg)");
  cmd->add_option("--threads,-t", o->threads, "Threads")->check(kThreadCount);
  cmd->callback([o] {
    std::string svg = o->svg;
    if (svg.empty()) svg = (o->out.size() > 5 && o->out.ends_with(".json") ? o->out.substr(0, o->out.size() - 5) : o->out) + ".svg";
    check_output_path(o->out);
    check_output_path(svg);
    auto model = Model::load(o->model);
    std::vector<Observation> calib;
    if (!o->demos.empty()) {
      calib = eval::calibration_from_demos(o->demos, o->samples, o->calib.every, model->state_dim() > 0);
    } else {
      eval::CalibrationOptions& c = o->calib;
      c.image_size = model->image_size();
      c.with_state = model->state_dim() > 0;
      calib = eval::calibration_from_sim(c);
      if (int(calib.size()) > o->samples) calib.resize(size_t(o->samples));
    }
    Progress progress("analyze " + model->name(), int64_t(calib.size()));
    const accel::AnalysisReport r = accel::analyze(model, calib, o->threads, &progress);
    progress.finish();
    write_file(o->out, r.to_json().dump(1) + "\n");
    write_file(svg, accel::analysis_svg(r));
    fmt::print("{} calibration samples → {} and {}\n\n", r.samples, o->out, svg);
    fmt::print("| LM layer | block 1−cos | attention 1−cos | MLP 1−cos |\n|---:|---:|---:|---:|\n");
    for (size_t l = 0; l < r.llm.size(); ++l)
      fmt::print("| {} | {:.5f} | {:.5f} | {:.5f} |\n", l, r.llm[l].block, r.llm[l].attn, r.llm[l].mlp);
    fmt::print("\nleast important blocks first: {}\n", fmt::join(r.least_important_blocks(), ", "));
    fmt::print("dense time per module (ms): vision {:.2f}, projector {:.2f}, llm {:.2f}, action head {:.2f}\n",
               r.dense_ms.vision_ms, r.dense_ms.projector_ms, r.dense_ms.llm_ms, r.dense_ms.action_head_ms);
    fmt::print("LM with every layer int8: {:.2f}× its fp32 time\n", r.int8_llm_ratio);
    fmt::print("BF16 products: vision {:.2f}×, projector {:.2f}×, action head {:.2f}× their dense time\n",
               r.bf16_ratio.vision_ms, r.bf16_ratio.projector_ms, r.bf16_ratio.action_head_ms);
  });
}

EVLA_COMMAND(70, add_analyze_command);

}  // namespace evla::cli
