#include "eval/evaluator.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "core/memory_info.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "eval/ensemble.h"
#include "eval/recorder.h"
#include "eval/sticky_gripper.h"
#include "eval/stats.h"
#include "sim/env.h"

namespace evla::eval {

namespace {

struct WorkerTotals {
  std::vector<double> latencies;
  Timing sum;
  int64_t executed = 0;
};

EpisodeResult run_episode(Policy& policy, const sim::EpisodeSpec& spec, const EvalOptions& o,
                          WorkerTotals& tot, Recorder* rec) {
  const Model& m = policy.model();
  sim::Env env;
  env.reset(spec);
  AdaptiveEnsembler ens(m.action_horizon(), m.action_dim(), o.ensemble_alpha);
  StickyGripper sticky(o.sticky_gripper, sim::kGripperIndex);
  Observation obs;
  obs.instruction = env.instruction();
  obs.unnorm_key = o.unnorm_key;
  obs.images.resize(1);
  EpisodeResult r;
  r.spec = spec;
  while (!env.done()) {
    obs.images[0] = env.render(m.image_size(), m.image_size());
    if (rec) rec->frame(obs.images[0]);
    if (m.state_dim() > 0) obs.state = env.state();
    obs.seed = inference_seed(spec, env.steps());
    ActionChunk chunk = policy.infer(obs);  // not const: the sticky gripper filters its rows in place
    ++r.inferences;
    tot.latencies.push_back(chunk.timing.total_ms);
    tot.sum.vision_ms += chunk.timing.vision_ms;
    tot.sum.projector_ms += chunk.timing.projector_ms;
    tot.sum.llm_ms += chunk.timing.llm_ms;
    tot.sum.action_head_ms += chunk.timing.action_head_ms;
    tot.sum.total_ms += chunk.timing.total_ms;
    if (o.ensemble) {
      std::vector<float> a = ens.add_and_pick(chunk.actions.data());
      sticky.apply(a.data());
      env.step(a.data());
      ++tot.executed;
      continue;
    }
    const int n = std::min(o.execute > 0 ? o.execute : m.action_steps(), chunk.horizon);
    for (int t = 0; t < n && !env.done(); ++t) {
      if (t > 0 && rec) rec->frame(env.render(m.image_size(), m.image_size()));
      float* a = chunk.actions.data() + size_t(t) * chunk.dim;
      sticky.apply(a);
      env.step(a);
      ++tot.executed;
    }
  }
  r.success = env.success();
  r.steps = env.steps();
  if (rec) rec->finish(env.render(m.image_size(), m.image_size()), r.success);
  return r;
}

}  // namespace

void check_compatible(const Model& m) {
  if (m.action_dim() != sim::kActionDim)
    throw Error(fmt::format("model '{}' predicts {} action dimensions; the benchmark takes {}", m.name(),
                            m.action_dim(), sim::kActionDim));
  if (m.state_dim() != 0 && m.state_dim() != sim::kStateDim)
    throw Error(fmt::format("model '{}' takes a state of {} values; the benchmark provides {}", m.name(),
                            m.state_dim(), sim::kStateDim));
  if (m.num_images() != 1)
    throw Error(fmt::format("model '{}' takes {} images; the benchmark has one camera", m.name(), m.num_images()));
}

uint64_t inference_seed(const sim::EpisodeSpec& s, int step) {
  return (s.seed * 1000003ull + uint64_t(s.task) * 7919ull + uint64_t(s.split) * 104729ull) * 4099ull +
         uint64_t(step);
}

// Each worker holds one Policy's per-inference buffers; the plan's derived
// weights are shared. The buffers are measured on one inference of a probe
// before the workers start, so a worker count that would not fit is refused
// before its memory is allocated rather than dying of it midway. The probe
// returned holds the planned model while the workers take it up (they share
// it instead of deriving it again); its own buffers are freed.
static std::optional<Policy> check_worker_memory(const std::shared_ptr<const Model>& model, const Plan& plan,
                                                 const EvalOptions& o, int workers) {
  if (workers < 2 || available_memory_bytes() == 0) return std::nullopt;
  std::optional<Policy> probe(std::in_place, model, PolicyOptions{o.threads_per_policy});
  probe->set_plan(plan);
  probe->infer(example_observation(*model));
  const double each = double(probe->scratch_bytes());
  probe->release_scratch();
  // Available now, with the planned model's weights in place.
  const double avail = double(available_memory_bytes());
  if (avail > 0 && each * workers > 0.9 * avail)
    throw Error(fmt::format("{} workers need about {:.1f} MB of per-inference buffers ({:.1f} MB each, measured on "
                            "one inference) but {:.1f} MB of memory is available; use --workers {} or fewer",
                            workers, each * workers / 1e6, each / 1e6, avail / 1e6,
                            std::max(1, int(0.9 * avail / std::max(each, 1.0)))));
  return probe;
}

EvalReport evaluate(std::shared_ptr<const Model> model, const Plan& plan, const EvalOptions& o) {
  check_compatible(*model);
  model->validate(plan);
  if (o.tasks.empty()) throw Error("evaluation needs at least one task");
  if (o.episodes < 1) throw Error("evaluation needs at least one episode");
  if (o.execute < 0) throw Error("--execute must be at least 1 (0: the model's n_action_steps)");
  if (o.execute > model->action_horizon())
    throw Error("--execute " + std::to_string(o.execute) + " is more than the model's action chunk (" +
                std::to_string(model->action_horizon()) + " steps)");
  if (o.workers < 0 || o.workers > ThreadPool::kMaxThreads)
    throw Error("--workers must be in [1, " + std::to_string(ThreadPool::kMaxThreads) + "]");
  if (o.sticky_gripper < 0) throw Error("--sticky-gripper must be 0 (off) or a number of steps");
  if (o.split != sim::Split::Variants && o.variant_factors != sim::kAllVariantFactors)
    throw Error("variants factors apply to the variants split only");
  if (!(o.variant_factors & sim::kAllVariantFactors)) throw Error("variants split with no factor to vary");
  const int n_tasks = int(o.tasks.size());
  std::vector<sim::EpisodeSpec> specs;
  for (int i = 0; i < o.episodes; ++i)
    specs.push_back({o.split, o.tasks[size_t(i % n_tasks)], o.seed + uint64_t(i / n_tasks), o.variant_factors});

  const int workers = std::max(1, std::min<int>(o.workers > 0 ? o.workers : int(std::thread::hardware_concurrency()),
                                                o.episodes));
  const std::optional<Policy> probe = check_worker_memory(model, plan, o, workers);
  std::vector<EpisodeResult> results(specs.size());
  std::vector<WorkerTotals> totals(static_cast<size_t>(workers));
  std::atomic<size_t> next{0};
  std::atomic<int> successes{0};
  std::mutex err_mu;
  std::string error;
  std::optional<Progress> progress;  // none with --quiet: even its closing line would print
  if (o.progress) progress.emplace(fmt::format("eval {} {}", model->name(), plan.name), int64_t(specs.size()));
  if (!o.record_dir.empty()) std::filesystem::create_directories(o.record_dir);
  std::vector<std::atomic<int>> recorded(sim::kNumTasks);

  const auto t0 = std::chrono::steady_clock::now();
  auto work = [&](int w) {
    try {
      Policy policy(model, PolicyOptions{o.threads_per_policy});
      policy.set_plan(plan);
      for (size_t i; (i = next.fetch_add(1)) < specs.size();) {
        std::unique_ptr<Recorder> rec;
        if (!o.record_dir.empty() && recorded[size_t(specs[i].task)].fetch_add(1) < o.record_limit)
          rec = std::make_unique<Recorder>(o.record_dir, specs[i], sim::make_episode(specs[i]).instruction);
        results[i] = run_episode(policy, specs[i], o, totals[size_t(w)], rec.get());
        const int s = successes += results[i].success ? 1 : 0;
        if (progress) progress->advance(1, fmt::format("success {}/{}", s, next.load() > specs.size() ? specs.size() : next.load()));
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(err_mu);
      if (error.empty()) error = e.what();
      next = specs.size();
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  if (progress) progress->finish();
  if (!error.empty()) throw Error("evaluation failed: " + error);

  EvalReport rep;
  rep.model = model->name();
  rep.plan = plan.name;
  rep.split = sim::split_name(o.split);
  if (o.split == sim::Split::Variants && o.variant_factors != sim::kAllVariantFactors)
    rep.split += " (" + sim::variant_factors_name(o.variant_factors) + " only)";
  rep.episodes = results;
  rep.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (sim::Task task : o.tasks) {
    TaskResult tr;
    tr.task = sim::task_name(task);
    double steps = 0;
    for (const auto& r : results)
      if (r.spec.task == task) tr.episodes++, tr.successes += r.success, steps += r.steps;
    tr.rate = tr.episodes ? double(tr.successes) / tr.episodes : 0;
    const Interval ci = wilson95(tr.successes, tr.episodes);
    tr.lo = ci.lo, tr.hi = ci.hi;
    tr.mean_steps = tr.episodes ? steps / tr.episodes : 0;
    rep.tasks.push_back(tr);
    rep.overall.episodes += tr.episodes;
    rep.overall.successes += tr.successes;
    rep.overall.mean_steps += steps;
  }
  rep.overall.task = "overall";
  rep.overall.rate = double(rep.overall.successes) / rep.overall.episodes;
  const Interval ci = wilson95(rep.overall.successes, rep.overall.episodes);
  rep.overall.lo = ci.lo, rep.overall.hi = ci.hi;
  rep.overall.mean_steps /= rep.overall.episodes;
  std::vector<double> lat;
  int64_t executed = 0;
  Timing sum;
  for (const auto& t : totals) {
    lat.insert(lat.end(), t.latencies.begin(), t.latencies.end());
    executed += t.executed;
    sum.vision_ms += t.sum.vision_ms, sum.projector_ms += t.sum.projector_ms, sum.llm_ms += t.sum.llm_ms;
    sum.action_head_ms += t.sum.action_head_ms, sum.total_ms += t.sum.total_ms;
  }
  rep.inferences = int64_t(lat.size());
  rep.latency_p50_ms = percentile(lat, 0.5);
  rep.latency_p90_ms = percentile(lat, 0.9);
  const double n = std::max<double>(1, double(lat.size()));
  rep.mean_split = {sum.vision_ms / n, sum.projector_ms / n, sum.llm_ms / n, sum.action_head_ms / n, sum.total_ms / n};
  rep.control_hz = sum.total_ms > 0 ? executed / (sum.total_ms / 1000.0) : 0;
  return rep;
}

nlohmann::json EvalReport::to_json() const {
  auto task_json = [](const TaskResult& t) {
    return nlohmann::json{{"task", t.task}, {"episodes", t.episodes}, {"successes", t.successes},
                          {"success_rate", t.rate}, {"ci95", {t.lo, t.hi}}, {"mean_steps", t.mean_steps}};
  };
  nlohmann::json j{{"model", model}, {"plan", plan}, {"split", split}, {"overall", task_json(overall)},
                   {"inferences", inferences}, {"latency_ms", {{"p50", latency_p50_ms}, {"p90", latency_p90_ms}}},
                   {"mean_ms", {{"vision", mean_split.vision_ms}, {"projector", mean_split.projector_ms},
                                {"llm", mean_split.llm_ms}, {"action_head", mean_split.action_head_ms},
                                {"total", mean_split.total_ms}}},
                   {"control_hz", control_hz}, {"wall_s", wall_s}};
  j["tasks"] = nlohmann::json::array();
  for (const auto& t : tasks) j["tasks"].push_back(task_json(t));
  j["episodes"] = nlohmann::json::array();
  for (const auto& e : episodes)
    j["episodes"].push_back({{"task", sim::task_name(e.spec.task)}, {"seed", e.spec.seed},
                             {"success", e.success}, {"steps", e.steps}, {"inferences", e.inferences}});
  return j;
}

std::string EvalReport::to_markdown() const {
  std::string s = fmt::format("{} · plan {} · split {}\n\n", model, plan, split);
  s += "| task | episodes | success | 95% CI | mean steps |\n|---|---:|---:|---:|---:|\n";
  for (const TaskResult* t : [&] {
         std::vector<const TaskResult*> v;
         for (const auto& x : tasks) v.push_back(&x);
         v.push_back(&overall);
         return v;
       }())
    s += fmt::format("| {} | {} | {:.1f}% | {:.1f}–{:.1f}% | {:.1f} |\n", t->task, t->episodes, 100 * t->rate,
                     100 * t->lo, 100 * t->hi, t->mean_steps);
  s += fmt::format(
      "\ninference p50 {:.1f} ms, p90 {:.1f} ms ({} inferences; mean split: vision {:.1f}, projector {:.1f}, "
      "llm {:.1f}, action head {:.1f} ms); control rate {:.1f} actions/s; wall {:.1f} s\n",
      latency_p50_ms, latency_p90_ms, inferences, mean_split.vision_ms, mean_split.projector_ms,
      mean_split.llm_ms, mean_split.action_head_ms, control_hz, wall_s);
  return s;
}

}  // namespace evla::eval
