// evla bench: whole-inference latency per configuration, llama-bench style.
// Sweeps plans × thread counts; prints min / p50 / p90, the split across
// modules, analytic FLOPs, achieved GFLOP/s and peak memory.
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "evla/evla.h"
#include "kernels/kernels.h"
#include "kernels/roofline.h"

namespace evla::cli {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
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

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Opts {
    std::string model, plans, threads = "2", output = "md", image, prompt;
    int reps = 10, warmup = 2;
    bool roofline = false;
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
  cmd->add_flag("--roofline", o->roofline, "Also measure this machine's GEMM ceilings (fp32, BF16, int8) and memory bandwidth, and report runs as a fraction of the fp32 one");
  cmd->callback([o] {
    for (const int t : parse_ints(o->threads, "--threads"))
      if (t < 1 || t > kMaxThreads)
        throw Error("--threads: " + std::to_string(t) + " is not in [1, " + std::to_string(kMaxThreads) + "]");
    // Cold start: load (map + validate + pack, or map the derived-weight
    // cache) and the first policy's first inference, which also sizes its
    // buffers; compared below with the warm p50.
    const auto t_load = std::chrono::steady_clock::now();
    auto model = Model::load(o->model);
    const double load_ms = ms_since(t_load);
    double first_ms = -1;
    Observation obs = synthetic_observation(*model);
    if (!o->image.empty()) obs.images.assign(size_t(model->num_images()), load_image(o->image));
    if (!o->prompt.empty()) obs.instruction = o->prompt;
    std::vector<std::string> plans = o->plans.empty() ? std::vector<std::string>{"dense"} : split_csv(o->plans, "--plan");
    auto rows = nlohmann::json::array();
    const bool tty = isatty(2);  // progress only for a person watching
    // Every (plan, threads) configuration gets its own policy; repetitions
    // then go round-robin over them, so drifting machine load (other
    // processes, frequency changes) hits all configurations alike.
    struct Config {
      Plan plan;
      int threads;
      std::unique_ptr<Policy> policy;
      std::vector<double> total, vis, proj, llm, head;
    };
    std::vector<Config> configs;
    for (const std::string& plan_path : plans)
      for (const int t : parse_ints(o->threads, "--threads")) {
        Config c{plan_path == "dense" ? Plan{} : Plan::load(plan_path), t,
                 nullptr, {}, {}, {}, {}, {}};
        const auto t_first = std::chrono::steady_clock::now();
        c.policy = std::make_unique<Policy>(model, PolicyOptions{c.threads});
        c.policy->set_plan(c.plan);
        if (first_ms < 0) {  // policy creation + first inference
          c.policy->infer(obs);
          first_ms = ms_since(t_first);
        }
        for (int i = 0; i < o->warmup; ++i) c.policy->infer(obs);
        configs.push_back(std::move(c));
      }
    for (int i = 0; i < o->reps; ++i) {
      obs.seed = uint64_t(i);
      for (Config& c : configs) {
        const Timing tm = c.policy->infer(obs).timing;
        c.total.push_back(tm.total_ms);
        c.vis.push_back(tm.vision_ms);
        c.proj.push_back(tm.projector_ms);
        c.llm.push_back(tm.llm_ms);
        c.head.push_back(tm.action_head_ms);
      }
      if (tty) std::fprintf(stderr, "\rrepetition %d/%d", i + 1, o->reps);
    }
    if (tty) std::fprintf(stderr, "\r\033[K");
    // Measured after the runs, so its large buffers do not inflate their peak memory.
    const double rss = peak_rss_mb();
    std::map<int, kernels::Roofline> roof;
    if (o->roofline)
      for (const int n : parse_ints(o->threads, "--threads")) {
        roof[n] = kernels::measure_roofline(n);
        fmt::print(stderr, "roofline, {} thread(s): GEMM fp32 {:.1f}, BF16 {:.1f}, int8 {:.1f} GFLOP/s; memory {:.1f} GB/s\n",
                   n, roof[n].gemm_gflops, roof[n].bf16_gemm_gflops, roof[n].int8_gemm_gflops, roof[n].bandwidth_gbs);
      }
    const double warm_p50 = percentile(configs.front().total, 0.5);
    fmt::print(stderr, "cold start ({}, {} thread(s)): load {:.1f} ms + first inference {:.1f} ms = {:.2f}x the warm p50 "
               "({:.1f} ms); weight cache: {}; plan cache: {}\n", configs.front().plan.name, configs.front().threads,
               load_ms, first_ms, (load_ms + first_ms) / warm_p50, warm_p50, model->weight_cache_status(),
               configs.front().policy->plan_cache_status());
    fmt::print(stderr, "kernels: {}\n", kernels::selection());
    for (const Config& c : configs) {
      const FlopCount fl = model->flops(c.plan);
      const double p50 = percentile(c.total, 0.5);
      rows.push_back({{"model", model->name()}, {"plan", c.plan.name}, {"threads", c.threads},
                      {"reps", o->reps}, {"min_ms", percentile(c.total, 0)}, {"p50_ms", p50},
                      {"p90_ms", percentile(c.total, 0.9)}, {"vision_ms", percentile(c.vis, 0.5)},
                      {"projector_ms", percentile(c.proj, 0.5)}, {"llm_ms", percentile(c.llm, 0.5)},
                      {"action_head_ms", percentile(c.head, 0.5)}, {"gflops", fl.total() / 1e9},
                      {"gflops_per_s", fl.total() / 1e6 / p50}, {"peak_rss_mb", rss}});
      const MemoryUse mem = c.policy->memory();
      rows.back()["weights_mb"] = double(mem.weights) / 1048576.0;
      rows.back()["derived_mb"] = double(mem.derived) / 1048576.0;
      rows.back()["scratch_mb"] = double(mem.scratch) / 1048576.0;
      if (&c == &configs.front()) {
        rows.back()["cold_load_ms"] = load_ms;
        rows.back()["cold_first_inference_ms"] = first_ms;
        rows.back()["weight_cache"] = model->weight_cache_status();
        rows.back()["plan_cache"] = c.policy->plan_cache_status();
      }
      if (roof.count(c.threads)) {
        rows.back()["pct_of_gemm_peak"] = 100.0 * fl.total() / 1e6 / p50 / roof[c.threads].gemm_gflops;
        rows.back()["roofline_gemm_gflops"] = roof[c.threads].gemm_gflops;
        rows.back()["roofline_bf16_gemm_gflops"] = roof[c.threads].bf16_gemm_gflops;
        rows.back()["roofline_int8_gemm_gflops"] = roof[c.threads].int8_gemm_gflops;
        rows.back()["roofline_bandwidth_gbs"] = roof[c.threads].bandwidth_gbs;
      }
    }
    if (o->output == "json") {
      fmt::print("{}\n", rows.dump(2));
      return;
    }
    std::vector<const char*> cols = {"plan", "threads", "min_ms", "p50_ms", "p90_ms", "vision_ms", "projector_ms",
                                     "llm_ms", "action_head_ms", "gflops", "gflops_per_s", "derived_mb", "scratch_mb",
                                     "peak_rss_mb"};
    if (o->roofline) cols.push_back("pct_of_gemm_peak");
    auto cell = [](const nlohmann::json& v) {
      return v.is_string() ? v.get<std::string>()
             : v.is_number_integer() ? std::to_string(v.get<int64_t>())
                                     : fmt::format("{:.3f}", v.get<double>());
    };
    const bool md = o->output == "md";
    std::string sep = md ? " | " : ",";
    if (md) fmt::print("| ");
    for (size_t i = 0; i < cols.size(); ++i) fmt::print("{}{}", cols[i], i + 1 < cols.size() ? sep : "");
    fmt::print("{}\n", md ? " |" : "");
    if (md) {
      fmt::print("|");
      for (size_t i = 0; i < cols.size(); ++i) fmt::print("{}|", i < 2 ? "---" : "---:");
      fmt::print("\n");
    }
    for (const auto& r : rows) {
      if (md) fmt::print("| ");
      for (size_t i = 0; i < cols.size(); ++i) fmt::print("{}{}", cell(r[cols[i]]), i + 1 < cols.size() ? sep : "");
      fmt::print("{}\n", md ? " |" : "");
    }
  });
}

EVLA_COMMAND(40, add_bench_command);

}  // namespace evla::cli
