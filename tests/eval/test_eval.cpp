// Closed-loop evaluation: statistics, ensembling, and a smoke run of the
// evaluator on a random-weight benchmark-shaped model.
#include <gtest/gtest.h>

#include <filesystem>

#include "eval/ensemble.h"
#include "eval/evaluator.h"
#include "eval/on_policy.h"
#include "sim/env.h"
#include "eval/stats.h"

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
