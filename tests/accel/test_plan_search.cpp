// The plan search: deterministic for a seed, every plan it returns fits the
// model and the speed-up budget, and at equal work it finds plans whose
// actions move less than random search's.
#include <gtest/gtest.h>

#include <cmath>

#include "accel/plan_builder.h"
#include "accel/plan_search.h"
#include "core/rng.h"
#include "evla/error.h"
#include "../model/test_util.h"

namespace evla {
namespace {

std::vector<Observation> frames(const Model& m, int n, uint64_t seed) {
  Rng rng(seed);
  const char* prompts[] = {"pick up the red block", "open the drawer", "put the can in the basket"};
  std::vector<Observation> out;
  for (int i = 0; i < n; ++i) {
    Observation o;
    Image im(m.image_size(), m.image_size());
    for (auto& px : im.rgb) px = uint8_t(rng.next_u64() % 256);
    o.images.assign(size_t(m.num_images()), im);
    o.instruction = prompts[i % 3];
    o.state.assign(size_t(m.state_dim()), 0.1f * float(i % 5));
    o.seed = seed + uint64_t(i);
    out.push_back(o);
  }
  return out;
}

struct Fixture {
  std::shared_ptr<const Model> model;
  std::vector<Observation> calib, validation;
  accel::AnalysisReport report;
  explicit Fixture(const std::string& name) {
    model = Model::load(test::source_path("tests/fixtures/" + name));
    calib = frames(*model, 12, 100);
    validation = frames(*model, 12, 200);
    report = accel::analyze(model, calib, 1);
    // Fixed module times and ratios: what the search finds must not depend
    // on the machine's load while the analysis timed them.
    report.dense_ms = {0.02, 0.002, 0.09, 0.15, 0.262};
    report.int8_llm_ratio = 0.6;
    report.bf16_ratio = {0.8, 1.0, 1.0, 0.9, 1.0};
  }
};

Fixture& sim() {
  static Fixture f("sim_random");
  return f;
}

accel::SearchOptions options(double target, uint64_t seed) {
  accel::SearchOptions o;
  o.target_speedup = target;
  o.budget = 60;
  o.offspring = 8;
  o.survivors = 2;
  o.seed = seed;
  return o;
}

TEST(PlanSearch, DeterministicForASeedAndAnyThreadCount) {
  Fixture& f = sim();
  accel::SearchOptions o = options(2.0, 3);
  const accel::SearchResult a = accel::search_plan(f.report, f.model, f.calib, o, nullptr, f.validation);
  o.threads = 2;
  const accel::SearchResult b = accel::search_plan(f.report, f.model, f.calib, o, nullptr, f.validation);
  EXPECT_EQ(a.best.plan.to_json(), b.best.plan.to_json());
  EXPECT_EQ(a.best.loss, b.best.loss);
  EXPECT_EQ(a.best.validation_loss, b.best.validation_loss);
  ASSERT_EQ(a.front.size(), b.front.size());
  for (size_t i = 0; i < a.front.size(); ++i) EXPECT_EQ(a.front[i].plan.to_json(), b.front[i].plan.to_json());
}

// Every plan on the front (and the chosen one) reaches the budget, fits the
// model, runs to finite actions, and its loss is what the scorer gives it.
void check_plans(Fixture& f, double target) {
  const accel::SearchResult r = accel::search_plan(f.report, f.model, f.calib, options(target, 1), nullptr, f.validation);
  ASSERT_FALSE(r.front.empty());
  EXPECT_LE(r.inferences, int64_t(60) * int64_t(f.calib.size()));
  std::vector<Plan> plans;
  for (const accel::SearchPoint& pt : r.front) plans.push_back(pt.plan);
  plans.push_back(r.best.plan);
  const std::vector<double> loss = accel::calibration_loss(f.model, f.calib, plans);
  for (size_t i = 0; i < plans.size(); ++i) {
    SCOPED_TRACE(accel::plan_summary(plans[i]));
    EXPECT_NO_THROW(f.model->validate(plans[i]));
    EXPECT_GE(accel::estimated_speedup(f.report, *f.model, plans[i]), target);
    Policy p(f.model, PolicyOptions{1});
    p.set_plan(plans[i]);
    for (float v : p.infer(f.calib[0]).actions) ASSERT_TRUE(std::isfinite(v));
    EXPECT_DOUBLE_EQ(loss[i], i + 1 < plans.size() ? r.front[i].loss : r.best.loss);
  }
  for (size_t i = 1; i < r.front.size(); ++i) {  // fastest first, each more accurate than the faster ones
    EXPECT_LE(r.front[i].speedup, r.front[i - 1].speedup);
    EXPECT_LT(r.front[i].loss, r.front[i - 1].loss);
  }
  EXPECT_GE(r.best.validation_loss, 0);
}

TEST(PlanSearch, EveryPlanFitsTheModelAndTheBudget) {
  check_plans(sim(), 1.5);
  check_plans(sim(), 3.0);
}

TEST(PlanSearch, PrunedCheckpointLayersWithoutAttentionOrMlp) {
  static Fixture f("dual_gqa_cfg_pruned");
  check_plans(f, 2.0);
}

// On the shipped policy, whose plan space has structure (on a random-weight
// model every plan moves the actions about as much, and random search is as
// good as any).
TEST(PlanSearch, BeatsRandomSearchAtEqualWork) {
  auto model = Model::load(test::source_path("models/evla-tabletop"));
  const std::vector<Observation> calib = frames(*model, 16, 300);
  accel::AnalysisReport report = accel::AnalysisReport::load(test::source_path("models/evla-tabletop/plans/analysis.json"));
  report.dense_ms = {0.55, 0.16, 2.31, 0.50, 3.52};  // as `evla analyze` measured them on an idle machine
  report.int8_llm_ratio = 0.55;
  report.bf16_ratio = {0.81, 0.84, 1.0, 0.94, 1.0};
  double evo = 0, rnd = 0;
  const int seeds = 3;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    accel::SearchOptions o = options(2.0, seed);
    o.budget = 100;
    o.threads = 2;
    const accel::SearchResult e = accel::search_plan(report, model, calib, o);
    o.random = true;
    const accel::SearchResult r = accel::search_plan(report, model, calib, o);
    EXPECT_LE(e.inferences, r.inferences + int64_t(calib.size()));  // no more work than random search
    evo += std::log(e.best.loss);
    rnd += std::log(r.best.loss);
  }
  EXPECT_LT(evo, rnd) << "geometric mean loss: search " << std::exp(evo / seeds) << ", random " << std::exp(rnd / seeds);
}

TEST(PlanSearch, StartsFromTheGivenPlans) {
  Fixture& f = sim();
  accel::PlanRequest req;
  req.target_speedup = 2.0;
  const Plan ladder = accel::build_plan(f.report, *f.model, req);
  accel::SearchOptions o = options(2.0, 5);
  o.budget = 1;  // nothing but the starting points
  o.start = {ladder};
  const accel::SearchResult r = accel::search_plan(f.report, f.model, f.calib, o);
  EXPECT_LE(r.best.loss, accel::calibration_loss(f.model, f.calib, {ladder})[0]);
}

TEST(PlanSearch, RefusesWhatItCannotDo) {
  Fixture& f = sim();
  EXPECT_THROW(accel::search_plan(f.report, f.model, f.calib, options(1000, 1)), Error);  // unreachable
  accel::SearchOptions o = options(2.0, 1);
  o.budget = 0;
  EXPECT_THROW(accel::search_plan(f.report, f.model, f.calib, o), Error);
  o = options(std::nan(""), 1);
  EXPECT_THROW(accel::search_plan(f.report, f.model, f.calib, o), Error);
  o = options(2.0, 1);
  o.loss_steps = 1000;
  EXPECT_THROW(accel::search_plan(f.report, f.model, f.calib, o), Error);
  EXPECT_THROW(accel::search_plan(f.report, f.model, {}, options(2.0, 1)), Error);
  accel::AnalysisReport other = f.report;
  other.llm.pop_back();
  EXPECT_THROW(accel::search_plan(other, f.model, f.calib, options(2.0, 1)), Error);
}

}  // namespace
}  // namespace evla
