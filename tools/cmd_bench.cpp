// evla bench: whole-inference latency per configuration, llama-bench style.
// Sweeps plans × thread counts; prints min / p50 / p90, the split across
// modules, analytic FLOPs, achieved GFLOP/s and peak memory.
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "evla/evla.h"

namespace evla::cli {

namespace {

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double idx = p * (v.size() - 1);
  const size_t lo = size_t(idx);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - lo);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// A synthetic observation: a smooth colour pattern, the model's image count
// and state size.
Observation synthetic_observation(const Model& m) {
  Observation obs;
  const int S = m.image_size();
  for (int k = 0; k < m.num_images(); ++k) {
    Image img(S, S);
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        uint8_t* p = img.pixel(x, y);
        p[0] = uint8_t(255 * x / S);
        p[1] = uint8_t(255 * y / S);
        p[2] = uint8_t((x * y + 40 * k) % 256);
      }
    obs.images.push_back(std::move(img));
  }
  obs.instruction = "pick up the red block";
  obs.state.assign(size_t(m.state_dim()), 0.1f);
  return obs;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Opts {
    std::string model, plans, threads = "2", output = "md", image, prompt;
    int reps = 10, warmup = 2;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("bench", "Time whole inferences per plan and thread count");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plans, "Comma list of plan files ('dense' for none); default dense");
  cmd->add_option("--threads,-t", o->threads, "Comma list of thread counts")->capture_default_str();
  cmd->add_option("--reps,-r", o->reps, "Timed repetitions")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed runs first")->check(CLI::Range(0, 1000))->capture_default_str();
  cmd->add_option("--image", o->image, "Use this image instead of a synthetic one");
  cmd->add_option("--prompt", o->prompt, "Instruction");
  cmd->add_option("-o,--output", o->output, "md, json or csv")->check(CLI::IsMember({"md", "json", "csv"}))->capture_default_str();
  cmd->callback([o] {
    auto model = Model::load(o->model);
    Observation obs = synthetic_observation(*model);
    if (!o->image.empty()) obs.images.assign(size_t(model->num_images()), load_image(o->image));
    if (!o->prompt.empty()) obs.instruction = o->prompt;
    std::vector<std::string> plans = o->plans.empty() ? std::vector<std::string>{"dense"} : split_csv(o->plans);
    auto rows = nlohmann::json::array();
    const bool tty = isatty(2);  // progress only for a person watching
    for (const std::string& plan_path : plans) {
      Plan plan = plan_path == "dense" ? Plan{} : Plan::load(plan_path);
      const FlopCount fl = model->flops(plan);
      for (const std::string& t : split_csv(o->threads)) {
        const int threads = int(parse_floats(t, "--threads").at(0));
        Policy policy(model, PolicyOptions{threads});
        policy.set_plan(plan);
        for (int i = 0; i < o->warmup; ++i) policy.infer(obs);
        std::vector<double> total, vis, proj, llm, head;
        for (int i = 0; i < o->reps; ++i) {
          obs.seed = uint64_t(i);
          const Timing tm = policy.infer(obs).timing;
          total.push_back(tm.total_ms);
          vis.push_back(tm.vision_ms);
          proj.push_back(tm.projector_ms);
          llm.push_back(tm.llm_ms);
          head.push_back(tm.action_head_ms);
          if (tty) std::fprintf(stderr, "\r%s t=%d: %d/%d", plan.name.c_str(), threads, i + 1, o->reps);
        }
        if (tty) std::fprintf(stderr, "\r\033[K");
        const double p50 = percentile(total, 0.5);
        rows.push_back({{"model", model->name()}, {"plan", plan.name}, {"threads", threads},
                        {"reps", o->reps}, {"min_ms", percentile(total, 0)}, {"p50_ms", p50},
                        {"p90_ms", percentile(total, 0.9)}, {"vision_ms", percentile(vis, 0.5)},
                        {"projector_ms", percentile(proj, 0.5)}, {"llm_ms", percentile(llm, 0.5)},
                        {"action_head_ms", percentile(head, 0.5)}, {"gflops", fl.total() / 1e9},
                        {"gflops_per_s", fl.total() / 1e6 / p50}, {"peak_rss_mb", peak_rss_mb()}});
      }
    }
    if (o->output == "json") {
      fmt::print("{}\n", rows.dump(2));
      return;
    }
    const char* cols[] = {"plan", "threads", "min_ms", "p50_ms", "p90_ms", "vision_ms", "projector_ms",
                          "llm_ms", "action_head_ms", "gflops", "gflops_per_s", "peak_rss_mb"};
    auto cell = [](const nlohmann::json& v) {
      return v.is_string() ? v.get<std::string>()
             : v.is_number_integer() ? std::to_string(v.get<int64_t>())
                                     : fmt::format("{:.3f}", v.get<double>());
    };
    const bool md = o->output == "md";
    std::string sep = md ? " | " : ",";
    if (md) fmt::print("| ");
    for (size_t i = 0; i < std::size(cols); ++i) fmt::print("{}{}", cols[i], i + 1 < std::size(cols) ? sep : "");
    fmt::print("{}\n", md ? " |" : "");
    if (md) {
      fmt::print("|");
      for (size_t i = 0; i < std::size(cols); ++i) fmt::print("{}|", i < 2 ? "---" : "---:");
      fmt::print("\n");
    }
    for (const auto& r : rows) {
      if (md) fmt::print("| ");
      for (size_t i = 0; i < std::size(cols); ++i) fmt::print("{}{}", cell(r[cols[i]]), i + 1 < std::size(cols) ? sep : "");
      fmt::print("{}\n", md ? " |" : "");
    }
  });
}

EVLA_COMMAND(40, add_bench_command);

}  // namespace evla::cli
