// Closed-loop evaluation: statistics, ensembling, and a smoke run of the
// evaluator on a random-weight benchmark-shaped model.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "eval/ensemble.h"
#include "eval/evaluator.h"
#include "eval/on_policy.h"
#include "eval/sticky_gripper.h"
#include "sim/env.h"
#include "eval/stats.h"
#include "model/model_impl.h"

namespace evla::eval {
namespace {

TEST(Stats, WilsonInterval) {
  // Reference values: 8/10 → [0.490, 0.943]; 0/20 → [0, 0.161]; 200/200 → [0.981, 1].
  Interval a = wilson95(8, 10);
  EXPECT_NEAR(a.lo, 0.4902, 1e-3);
  EXPECT_NEAR(a.hi, 0.9433, 1e-3);
  Interval b = wilson95(0, 20);
  EXPECT_NEAR(b.lo, 0.0, 1e-9);
  EXPECT_NEAR(b.hi, 0.1611, 1e-3);
  Interval c = wilson95(200, 200);
  EXPECT_NEAR(c.lo, 0.9812, 1e-3);
  EXPECT_NEAR(c.hi, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(percentile({3, 1, 2}, 0.5), 2);
  EXPECT_DOUBLE_EQ(percentile({1, 2}, 0.9), 1.9);
}

// b − a paired per episode: 4 of 10 episodes flip from failure to success and
// 1 the other way → +0.3; the differences (+1 ×4, −1, 0 ×5) have variance
// (10 · 0.5 − 10 · 0.09) / 9 = 0.4556, so the half-width is 1.96 · √(0.4556/10).
TEST(Stats, PairedDifference) {
  const std::vector<int> a = {0, 0, 0, 0, 1, 1, 1, 0, 1, 0}, b = {1, 1, 1, 1, 0, 1, 1, 0, 1, 0};
  const PairedDifference d = paired_difference(a, b);
  EXPECT_NEAR(d.mean, 0.3, 1e-12);
  const double half = 1.959963984540054 * std::sqrt((5.0 - 10 * 0.09) / 9 / 10);
  EXPECT_NEAR(d.ci95.lo, 0.3 - half, 1e-12);
  EXPECT_NEAR(d.ci95.hi, 0.3 + half, 1e-12);
  EXPECT_EQ(d.discordant, 5);
  const PairedDifference same = paired_difference(a, a);  // identical arms: no difference, no width
  EXPECT_EQ(same.mean, 0.0);
  EXPECT_EQ(same.ci95.lo, 0.0);
  EXPECT_EQ(same.ci95.hi, 0.0);
  EXPECT_EQ(paired_difference({1}, {0}).discordant, 0);  // too few to say anything
}

TEST(Ensemble, AveragesAgreeingPredictionsByAge) {
  // horizon 3, dim 2. Chunk k predicts value k at every step.
  AdaptiveEnsembler e(3, 2, 0.1f);
  const float c0[6] = {1, 1, 2, 2, 3, 3};
  auto a = e.add_and_pick(c0);
  EXPECT_FLOAT_EQ(a[0], 1);  // only one prediction
  const float c1[6] = {5, 5, 6, 6, 7, 7};
  a = e.add_and_pick(c1);
  // step 1 is predicted by c0 row 1 (2,2) and c1 row 0 (5,5); both point the
  // same way (cosine 1) so weights are equal.
  EXPECT_FLOAT_EQ(a[0], 3.5f);
  const float c2[6] = {-1, 1, 0, 0, 0, 0};
  a = e.add_and_pick(c2);
  // c0 row 2 (3,3), c1 row 1 (6,6) are orthogonal to the newest (-1,1): equal
  // weight exp(0); the newest gets exp(0.1).
  const double w = std::exp(0.1);
  EXPECT_NEAR(a[0], (3 + 6 - w) / (2 + w), 1e-5);
}

// The gripper value after the filter, for a sequence of predicted values.
std::vector<float> filtered(int repeat, const std::vector<float>& gripper) {
  StickyGripper f(repeat, 1);
  std::vector<float> out;
  for (float g : gripper) {
    float a[2] = {0.25f, g};
    f.apply(a);
    EXPECT_EQ(a[0], 0.25f);  // only the gripper is touched
    out.push_back(a[1]);
  }
  return out;
}

TEST(StickyGripper, HoldsEachFlipForItsRepeat) {
  // A close, a stray open one step later, then opens: the close holds 3 steps
  // (the step it was made on and 2 more), then the open flips and holds.
  EXPECT_EQ(filtered(3, {0.1f, 0.9f, 0.2f, 0.3f, 0.2f, 0.8f, 0.7f}),
            (std::vector<float>{0.1f, 0.9f, 1, 1, 0.2f, 0, 0}));
  // Agreeing predictions pass unchanged; NaN reads as open, as in the simulator.
  EXPECT_EQ(filtered(3, {0.2f, 0.4f}), (std::vector<float>{0.2f, 0.4f}));
  EXPECT_TRUE(std::isnan(filtered(3, {NAN})[0]));
  // repeat 0 or 1: off.
  const std::vector<float> chatter{0.1f, 0.9f, 0.1f, 0.9f};
  EXPECT_EQ(filtered(0, chatter), chatter);
  EXPECT_EQ(filtered(1, chatter), chatter);
}

std::shared_ptr<const Model> sim_model() {
  static auto m = Model::load(std::string(EVLA_SOURCE_DIR) + "/tests/fixtures/sim_random");
  return m;
}

TEST(Evaluator, SmokeRunIsDeterministicAcrossWorkers) {
  EvalOptions o;
  o.episodes = 6;
  o.tasks = {sim::Task::Pick, sim::Task::OpenDrawer};
  o.progress = false;
  o.execute = 8;
  o.workers = 1;
  EvalReport a = evaluate(sim_model(), Plan{}, o);
  o.workers = 2;
  EvalReport b = evaluate(sim_model(), Plan{}, o);
  ASSERT_EQ(a.episodes.size(), 6u);
  for (size_t i = 0; i < a.episodes.size(); ++i) {
    EXPECT_EQ(a.episodes[i].steps, b.episodes[i].steps);
    EXPECT_EQ(a.episodes[i].success, b.episodes[i].success);
    EXPECT_GT(a.episodes[i].inferences, 0);
  }
  EXPECT_EQ(a.overall.episodes, 6);
  EXPECT_EQ(a.tasks.size(), 2u);
  EXPECT_EQ(a.tasks[0].episodes, 3);
  EXPECT_GT(a.latency_p50_ms, 0);
  EXPECT_GT(a.control_hz, 0);
  EXPECT_TRUE(a.to_json().contains("episodes"));
  EXPECT_NE(a.to_markdown().find("overall"), std::string::npos);
}

// Parallel episodes on an int8 plan: the probe that checks memory and the two
// workers share one planned model, so its weights are derived once.
TEST(Evaluator, WorkersShareOnePlannedModel) {
  auto model = Model::load(std::string(EVLA_SOURCE_DIR) + "/tests/fixtures/sim_random");
  const Plan plan = Plan::from_json(R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [0, 1, 2],
    "intermediate_size": 96, "mlp_channels": {"2": [0, 7, 50]}}})", "int8");
  EvalOptions o;
  o.episodes = 4;
  o.tasks = {sim::Task::Pick};
  o.progress = false;
  o.execute = 8;
  o.workers = 2;
  evaluate(model, plan, o);
  EXPECT_EQ(model->impl().derivations(), 1);
}

TEST(Evaluator, RecordsEpisodesAndEnsembles) {
  const auto dir = std::filesystem::temp_directory_path() / "evla_eval_record";
  std::filesystem::remove_all(dir);
  EvalOptions o;
  o.episodes = 1;
  o.tasks = {sim::Task::CloseDrawer};
  o.progress = false;
  o.ensemble = true;
  o.record_dir = dir.string();
  EvalReport r = evaluate(sim_model(), Plan{}, o);
  EXPECT_EQ(r.inferences, r.episodes[0].steps);  // one action per inference
  int pngs = 0;
  for (auto& f : std::filesystem::directory_iterator(dir)) pngs += f.path().extension() == ".png";
  EXPECT_EQ(pngs, 1);
  std::filesystem::remove_all(dir);
}

TEST(Evaluator, RejectsIncompatibleModels) {
  auto m = Model::load(std::string(EVLA_SOURCE_DIR) + "/tests/fixtures/dual_gqa_cfg");
  EXPECT_THROW(evaluate(m, Plan{}, EvalOptions{}), Error);
  EvalOptions o;
  o.episodes = 0;
  EXPECT_THROW(evaluate(sim_model(), Plan{}, o), Error);
  o.episodes = 1;
  o.sticky_gripper = -1;
  EXPECT_THROW(evaluate(sim_model(), Plan{}, o), Error);
}

// On-policy recording applies the sticky gripper to what it executes: no
// flip of the executed gripper command follows another within the hold.
TEST(OnPolicy, StickyGripperHoldsExecutedFlips) {
  Policy policy(sim_model());
  OnPolicyOptions o;
  o.sticky_gripper = 6;
  int flips = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const sim::Demo d = record_on_policy(policy, {sim::Split::Matching, sim::Task::Pick, seed}, o);
    int last_flip = -1000;
    bool closed = false;
    for (int t = 0; t < d.steps; ++t) {
      const bool c = d.actions[size_t(t) * sim::kActionDim + sim::kGripperIndex] >= 0.5f;
      if (c == closed) continue;
      EXPECT_GE(t - last_flip, 6) << "seed " << seed << " step " << t;
      last_flip = t, closed = c, ++flips;
    }
  }
  EXPECT_GT(flips, 0);  // the random policy does flip, so the check above bites
  o.sticky_gripper = -1;
  EXPECT_THROW(record_on_policy(policy, {sim::Split::Matching, sim::Task::Pick, 0}, o), Error);
}

// On-policy data: the policy drives, every frame carries the expert's chunk
// from that state; deterministic; with the expert always driving it succeeds.
TEST(OnPolicy, LabelsEveryFrameWithTheExpertsTakeOver) {
  Policy policy(sim_model());
  const sim::EpisodeSpec spec{sim::Split::Matching, sim::Task::OpenDrawer, 3};
  OnPolicyOptions o;
  o.chunk = 8;
  const sim::Demo a = record_on_policy(policy, spec, o);
  const sim::Demo b = record_on_policy(policy, spec, o);
  ASSERT_GT(a.steps, 0);
  const size_t px = size_t(sim_model()->image_size()) * sim_model()->image_size() * 3;
  EXPECT_EQ(a.images.size(), size_t(a.steps) * px);
  EXPECT_EQ(a.chunks.size(), size_t(a.steps) * 8 * sim::kActionDim);
  EXPECT_EQ(a.actions, b.actions);
  EXPECT_EQ(a.chunks, b.chunks);
  // Frame 0's label is the expert's chunk from the episode's first scene.
  sim::Env env;
  env.reset(spec);
  const std::vector<float> first = sim::expert_chunk(env.episode(), env.scene(), 8);
  EXPECT_EQ(std::vector<float>(a.chunks.begin(), a.chunks.begin() + 8 * sim::kActionDim), first);
  o.expert_share = 1;
  const sim::Demo e = record_on_policy(policy, spec, o);
  EXPECT_TRUE(e.success);
  EXPECT_EQ(std::vector<float>(e.actions.begin(), e.actions.begin() + 4 * sim::kActionDim),
            std::vector<float>(first.begin(), first.begin() + 4 * sim::kActionDim));
  o.expert_share = 2;
  EXPECT_THROW(record_on_policy(policy, spec, o), Error);
}

}  // namespace
}  // namespace evla::eval
