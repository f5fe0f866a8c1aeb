// Acceleration plans: parsing, validation against a model, and the run-time
// behaviour each part promises.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/token_select.h"
#include "model/model_impl.h"
#include "test_util.h"

namespace evla {
namespace {

std::shared_ptr<const Model> fixture_model() {
  static auto m = Model::load(test::source_path("tests/fixtures/dual_gqa_cfg"));
  return m;
}

Observation fixture_obs() {
  Observation obs;
  obs.images.push_back(load_image(test::source_path("models/evla-tiny-random/example.png")));
  obs.instruction = "pick up the red block";
  obs.seed = 3;
  return obs;
}

void expect_rejected(const std::string& json, const std::string& needle) {
  try {
    Plan p = Plan::from_json(json, "plan.json");
    fixture_model()->validate(p);
    FAIL() << "accepted: " << json;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' lacks '" << needle << "'";
  }
}

TEST(Plan, InvalidPlansAreRejectedWithTheirReason) {
  expect_rejected("{", "not valid JSON");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 1e906}})", "not valid JSON");  // found by fuzzing
  expect_rejected(R"({"name": "x"})", "evla_plan");
  expect_rejected(R"({"evla_plan": 2})", "unsupported plan version");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [3]}})", "layer 3 does not exist");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [1, 1]}})", "listed twice");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "bf16_layers": [1], "int8_layers": [1]}})",
                  "int8_layers: a layer here already has another precision");
  expect_rejected(R"({"evla_plan": 1, "precision": {"vision": "int8"}})", "unknown precision 'int8' (stored, fp32, bf16)");
  expect_rejected(R"({"evla_plan": 1, "precision": {"llm": "fp16"}})", "unknown precision 'fp16' (stored, fp32, bf16, int8)");
  expect_rejected(R"({"evla_plan": 1, "precision": {"head": "bf16"}})", "head");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 1, "threshold": 0.1}})",
                  "cache.threshold: an adaptive cache needs interval ≥ 2");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 3, "threshold": -1}})", "cache.threshold: must be in [0, 1e6]");
  // Every JSON input is parsed under one depth limit and one key rule.
  expect_rejected(R"({"evla_plan": 1, "name": )" + std::string(100000, '[') + std::string(100000, ']') + "}",
                  "plan.json nests deeper than 32 levels");
  expect_rejected(R"({"evla_plan": 1, "name": "a", "name": "b"})", "plan.json names 'name' twice");
  // A typo ran dense with exit 0: unknown keys are named with the nearest known one.
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_block": [1]}})",
                  "plan.json: llm.drop_block: unknown key (did you mean 'drop_blocks'?)");
  expect_rejected(R"({"evla_plan": 1, "token": {"keep": 8}})", "plan.json: token: unknown key (did you mean 'tokens'?)");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 8, "alhpa": 0.5}})", "tokens.alhpa: unknown key (did you mean 'alpha'?)");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 2, "strat": 1}})", "cache.strat: unknown key (did you mean 'start'?)");
  // Dropping every layer ignored the prompt.
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [0, 1, 2]}})",
                  "llm: drops every language-model layer");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [0, 1], "drop_attention": [2], "drop_mlp": [2]}})",
                  "llm: drops every language-model layer");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [0, 4]}})", "layer 4 does not exist");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 5}})", "describes 5 layers but the model has 3");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 999}})", "tokens.keep");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 8, "key": 9}})", "key");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 8, "after_layer": 3}})", "tokens.after_layer");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 8, "method": "magic"}})", "unknown method");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 8, "queries": "image"}})", "unknown queries");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 0}})", "cache.interval");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 2, "blocks": [7]}})", "block 7 does not exist");
  expect_rejected(R"({"evla_plan": 1, "cache": {"interval": 2, "start": 10}})", "cache.start");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_attention": [0]}, "tokens": {"keep": 8, "after_layer": 1}})",
                  "dropped");
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "intermediate_size": 128, "mlp_channels": {"0": [5, 3]}}})",
                  "strictly increasing");
  // A plan-wide intermediate_size of 1 makes mlp_keep 1; the list is still checked against the
  // model's own layer width, because the runtime and `evla prune` use any list they find.
  expect_rejected(R"({"evla_plan": 1, "llm": {"num_layers": 3, "intermediate_size": 1, "mlp_channels": {"0": [100000]}}})",
                  "channel indices below");
  expect_rejected(R"({"evla_plan": 4294967297})", "evla_plan: integer out of range");
  expect_rejected(R"({"evla_plan": 1, "tokens": {"keep": 4294967304}})", "tokens.keep: integer out of range");
}

TEST(Plan, RoundTripsThroughJson) {
  const std::string text = R"({"evla_plan": 1, "name": "all",
    "llm": {"num_layers": 3, "drop_blocks": [1], "drop_mlp": [2], "int8_layers": [0, 2], "intermediate_size": 128, "mlp_channels": {"0": [0, 2, 4]}},
    "tokens": {"keep": 6, "key": 2, "alpha": 0.25, "after_layer": 1, "method": "fastv", "queries": "cognition"},
    "cache": {"interval": 3, "start": 1, "blocks": [0], "threshold": 0.25}})";
  Plan p = Plan::from_json(text, "t");
  const Plan mixed = Plan::from_json(R"({"evla_plan": 1, "precision": {"vision": "bf16", "llm": "int8"},
    "llm": {"num_layers": 3, "fp32_layers": [0], "bf16_layers": [2]}})", "m");
  EXPECT_EQ(Plan::from_json(mixed.to_json(), "m2").to_json(), mixed.to_json());
  EXPECT_EQ(mixed.precision.vision, WeightType::BF16);
  EXPECT_EQ(mixed.precision.action_head, WeightType::Stored);
  EXPECT_EQ(mixed.layer_precision(0), WeightType::F32);
  EXPECT_EQ(mixed.layer_precision(1), WeightType::Int8);  // the LM's default
  EXPECT_EQ(mixed.layer_precision(2), WeightType::BF16);
  EXPECT_FALSE(mixed.is_dense());
  Plan q = Plan::from_json(p.to_json(), "t2");
  EXPECT_EQ(q.to_json(), p.to_json());
  EXPECT_FALSE(q.llm[1].attn);
  EXPECT_FALSE(q.llm[1].mlp);
  EXPECT_TRUE(q.llm[2].attn);
  EXPECT_FALSE(q.llm[2].mlp);
  EXPECT_EQ(q.llm[0].mlp_channels, (std::vector<int>{0, 2, 4}));
  EXPECT_NEAR(q.llm[0].mlp_keep, 3.0f / 128, 1e-7);
  EXPECT_EQ(q.llm[0].weights, WeightType::Int8);
  EXPECT_EQ(q.llm[1].weights, WeightType::Stored);
  EXPECT_EQ(q.tokens.method, TokenMethod::FastV);
  EXPECT_EQ(q.tokens.queries, TokenQueries::Cognition);
  EXPECT_EQ(q.cache.interval, 3);
  EXPECT_FLOAT_EQ(q.cache.threshold, 0.25f);
  EXPECT_TRUE(Plan{}.is_dense());
  EXPECT_FALSE(p.is_dense());
}

TEST(Plan, CacheIntervalOneIsBitIdenticalToDense) {
  Policy dense(fixture_model(), PolicyOptions{2}), cached(fixture_model(), PolicyOptions{2});
  Plan p;
  p.cache.interval = 1;
  p.cache.start = 3;
  cached.set_plan(p);
  const auto a = dense.infer(fixture_obs()), b = cached.infer(fixture_obs());
  EXPECT_EQ(0, std::memcmp(a.actions.data(), b.actions.data(), a.actions.size() * sizeof(float)));
}

// The adaptive cache between its two limits: a threshold nothing stays
// under refreshes every step (dense's bits), one everything stays under
// reuses as the fixed interval does (its bits); in between it reuses some
// steps, and a second inference on the same policy decides the same way.
TEST(Plan, AdaptiveCacheSpansDenseToFixedInterval) {
  auto run = [](float threshold, int interval) {
    Policy pol(fixture_model(), PolicyOptions{1});
    Plan p;
    p.cache.interval = interval;
    p.cache.threshold = threshold;
    pol.set_plan(p);
    const ActionChunk first = pol.infer(fixture_obs());
    EXPECT_EQ(pol.infer(fixture_obs()).actions, first.actions) << "threshold " << threshold;
    return first.actions;
  };
  const auto dense = run(0, 1), fixed = run(0, 3);
  EXPECT_EQ(run(1e-12f, 3), dense);
  EXPECT_EQ(run(1e6f, 3), fixed);
  EXPECT_NE(dense, fixed);
  // The input changes by about 5-20 % a step here: a threshold of 0.1
  // reuses some steps but not every one the fixed interval does.
  const auto some = run(0.1f, 3);
  EXPECT_NE(some, dense);
  EXPECT_NE(some, fixed);
  // An adaptive plan's FLOPs are counted as if every step refreshed.
  Plan adaptive;
  adaptive.cache.interval = 3;
  adaptive.cache.threshold = 0.5f;
  EXPECT_EQ(fixture_model()->flops(adaptive).action_head, fixture_model()->flops(Plan{}).action_head);
}

TEST(Plan, EveryPartChangesTheComputationAndFlops) {
  auto model = fixture_model();
  const double dense = model->flops().total();
  Plan tokens = Plan::from_json(R"({"evla_plan": 1, "tokens": {"keep": 4, "key": 2, "after_layer": 1}})", "t");
  Plan cache = Plan::from_json(R"({"evla_plan": 1, "cache": {"interval": 5}})", "c");
  Plan layers = Plan::from_json(R"({"evla_plan": 1, "llm": {"num_layers": 3, "drop_blocks": [2]}})", "l");
  Policy base(model, PolicyOptions{1});
  const auto ref = base.infer(fixture_obs());
  for (const Plan* p : {&tokens, &cache, &layers}) {
    EXPECT_LT(model->flops(*p).total(), dense);
    Policy pol(model, PolicyOptions{1});
    pol.set_plan(*p);
    const auto out = pol.infer(fixture_obs());
    EXPECT_NE(0, std::memcmp(ref.actions.data(), out.actions.data(), ref.actions.size() * sizeof(float)));
  }
}

// Int8 layers: close to fp32 but not identical, and only the layers named
// change (the residual stream entering the first int8 layer is bit-identical).
TEST(Plan, Int8LayersAreCloseToFp32) {
  struct Inputs : Observer {  // every layer's input
    std::vector<std::vector<float>> x;
    bool wants(Stage s) const override { return s == Stage::LlmHidden; }
    void on(const StageOutput& o) override {
      if (o.index < 3) x.emplace_back(o.data, o.data + size_t(o.rows) * o.cols);
    }
  };
  auto run = [&](const std::string& json, Inputs* obs) {
    Policy pol(fixture_model(), PolicyOptions{1});
    pol.set_plan(Plan::from_json(json, "p"));
    return pol.infer(fixture_obs(), obs);
  };
  Inputs dense_in, int8_in;
  const auto dense = run(R"({"evla_plan": 1})", &dense_in);
  const auto q = run(R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [1, 2]}})", &int8_in);
  ASSERT_EQ(dense_in.x.size(), 3u);
  EXPECT_EQ(dense_in.x[1], int8_in.x[1]);  // layer 0 ran in fp32 in both
  EXPECT_NE(dense_in.x[2], int8_in.x[2]);
  double num = 0, den = 0;
  for (size_t i = 0; i < dense_in.x[2].size(); ++i) {
    num += std::pow(double(int8_in.x[2][i]) - dense_in.x[2][i], 2);
    den += std::pow(double(dense_in.x[2][i]), 2);
  }
  // Weight-only int8 lands near 5e-5 here; the integer kernel's 7-bit
  // activations (AVX2 machines) near 2e-4.
  EXPECT_LT(num / den, 1e-3) << "layer 1 output, int8 vs fp32";
  EXPECT_GT(num / den, 0.0);
  for (size_t i = 0; i < dense.actions.size(); ++i) EXPECT_NEAR(dense.actions[i], q.actions[i], 0.05);
}

// BF16 layers of an fp32 model: bfloat16 copies, products with rounded
// activations, so a layer's output moves by about the rounding (2⁻⁹ relative
// per element), far less than int8's.
TEST(Plan, Bf16LayersAreCloseToFp32) {
  auto run = [&](const std::string& json) {
    Policy pol(fixture_model(), PolicyOptions{1});
    pol.set_plan(Plan::from_json(json, "p"));
    pol.infer(fixture_obs());
    return std::pair{pol.cognition(), pol.state().planned->derived->count_of<uint16_t>()};
  };
  const auto [dense, none] = run(R"({"evla_plan": 1})");
  const auto [one, copies] = run(R"({"evla_plan": 1, "llm": {"num_layers": 3, "bf16_layers": [1]}})");
  const auto [all, all_copies] = run(R"({"evla_plan": 1, "precision": {"vision": "bf16", "projector": "bf16",
                                          "llm": "bf16", "action_head": "bf16"}})");
  EXPECT_EQ(none, 0u);
  EXPECT_EQ(copies, 4u);  // q|k|v, o, gate|up, down
  EXPECT_GT(all_copies, 12u);
  for (const auto* v : {&one, &all}) {
    const double e = test::nmse(v->data(), dense.data(), dense.size());
    EXPECT_GT(e, 0.0);
    EXPECT_LT(e, 1e-4);
  }
}

TEST(Plan, TokenSelectionKeepsPositionsOfChosenTokens) {
  // Layer observer sees T shrink after the selection layer, positions kept.
  struct Sizes : Observer {
    std::vector<int> T;
    bool wants(Stage s) const override { return s == Stage::LlmHidden; }
    void on(const StageOutput& o) override {
      if (o.index < 3) T.push_back(o.rows);
    }
  } sizes;
  Policy pol(fixture_model(), PolicyOptions{1});
  pol.set_plan(Plan::from_json(R"({"evla_plan": 1, "tokens": {"keep": 5, "key": 2, "after_layer": 2}})", "t"));
  pol.infer(fixture_obs(), &sizes);
  ASSERT_EQ(sizes.T.size(), 3u);
  EXPECT_EQ(sizes.T[0], sizes.T[1]);
  EXPECT_EQ(sizes.T[0] - sizes.T[2], 16 - 5);
  const auto& pos = pol.state().positions;
  EXPECT_EQ(int(pos.size()), sizes.T[2]);
  for (size_t i = 1; i < pos.size(); ++i) EXPECT_LT(pos[i - 1], pos[i]);
  EXPECT_EQ(pos.back(), sizes.T[0] - 1);  // the cognition token keeps its position
}

// Token merging by hand: rows 1 and 3 join the kept row they point along
// (0 and 2); row 4 points between them and goes to the first; kept rows
// become the means, dropped rows are left as they were.
TEST(TokenSelect, MergingAveragesIntoTheMostSimilarKeptToken) {
  float x[5 * 2] = {1, 0,  2, 0.1f,  0, 1,  0.2f, 3,  1, 1};
  merge_dropped_tokens({0, 2}, x, 5, 2, 2);
  EXPECT_FLOAT_EQ(x[0], (1 + 2 + 1) / 3.f);
  EXPECT_FLOAT_EQ(x[1], (0 + 0.1f + 1) / 3.f);
  EXPECT_FLOAT_EQ(x[4], (0 + 0.2f) / 2.f);
  EXPECT_FLOAT_EQ(x[5], (1 + 3) / 2.f);
  EXPECT_FLOAT_EQ(x[2], 2);  // dropped rows unchanged
  EXPECT_FLOAT_EQ(x[7], 3);
}

TEST(TokenSelect, RelevanceFromTextOrCognitionQueries) {
  // T = 5: BOS, 2 visual tokens, 2 prompt tokens (the last is the cognition
  // token); 2 query heads sharing 1 key head of width 1, so each score is q·k.
  const float q[5 * 2] = {0, 0, 0, 0, 0, 0, 1, -1, 2, 0.5f};
  const float k[5] = {0.f, 1.f, -1.f, 0.5f, 0.f};
  const QkView a{q, k, 2, 1, 5, 2, 1, 1, 1.f};
  // Reference: head-averaged causal softmax of one query row over keys 0..i.
  auto row = [&](int i, int j) {
    double r = 0;
    for (int h = 0; h < 2; ++h) {
      double sum = 0;
      for (int m = 0; m <= i; ++m) sum += std::exp(double(q[i * 2 + h]) * k[m]);
      r += std::exp(double(q[i * 2 + h]) * k[j]) / sum / 2;
    }
    return r;
  };
  float rel[2];
  text_to_visual_attention(a, 1, 2, TokenQueries::Text, rel);
  for (int j = 0; j < 2; ++j) EXPECT_NEAR(rel[j], row(3, 1 + j) + row(4, 1 + j), 1e-6);
  text_to_visual_attention(a, 1, 2, TokenQueries::Cognition, rel);
  for (int j = 0; j < 2; ++j) EXPECT_NEAR(rel[j], row(4, 1 + j), 1e-6);
}

TEST(TokenSelect, HandMadeScores) {
  // 8 visual tokens in 2-D feature space; relevance picks keys, the rest by rule.
  const float rel[8] = {0.9f, 0.1f, 0.8f, 0.2f, 0.05f, 0.3f, 0.0f, 0.15f};
  const float feat[16] = {1, 0,   1, 0.1f,  0.9f, 0,  1, 0.05f,
                          0, 1,   1, 0.2f,  -1, 0,    0.95f, 0};
  TokenPlan p;
  p.keep = 4;
  p.key = 2;       // tokens 0 and 2
  p.alpha = 0.5f;  // 1 more by relevance: token 5 (0.3)
  // the last slot: most different from keys {0, 2} among the rest -> token 6 (-1, 0)
  EXPECT_EQ(select_visual_tokens(p, rel, feat, 8, 2, 2), (std::vector<int>{0, 2, 5, 6}));
  p.method = TokenMethod::FastV;  // top-4 by relevance
  EXPECT_EQ(select_visual_tokens(p, rel, feat, 8, 2, 2), (std::vector<int>{0, 2, 3, 5}));
  p.method = TokenMethod::Random;
  auto r = select_visual_tokens(p, rel, feat, 8, 2, 2);
  EXPECT_EQ(r.size(), 4u);
  EXPECT_TRUE(std::is_sorted(r.begin(), r.end()));
}


// A plan is compiled once per model: Policies on the same plan share its
// derived weights (one copy, the same addresses), another plan gets its own,
// and a plan no Policy holds any more is built again when asked for.
TEST(Plan, PoliciesOnOnePlanShareItsDerivedWeights) {
  const std::string int8_mlp = R"({"evla_plan": 1, "llm": {"num_layers": 3, "int8_layers": [1, 2],
                                   "intermediate_size": 128, "mlp_channels": {"0": [0, 5, 9, 64, 127]}}})";
  Policy a(fixture_model(), PolicyOptions{1}), b(fixture_model(), PolicyOptions{1});
  a.set_plan(Plan::from_json(int8_mlp, "p"));
  b.set_plan(Plan::from_json(int8_mlp, "p"));
  const PlannedModel* pa = a.state().planned.get();
  ASSERT_EQ(pa, b.state().planned.get());
  ASSERT_GT(pa->derived->count_of<int8_t>(), 0u);
  ASSERT_GT(pa->derived->count_of<float>(), 0u);
  EXPECT_EQ(a.infer(fixture_obs()).actions, b.infer(fixture_obs()).actions);

  Policy dense(fixture_model(), PolicyOptions{1});
  EXPECT_NE(dense.state().planned.get(), pa);
  // Memory accounting sees the plan's derived arrays and the buffers an inference grew.
  EXPECT_GT(a.memory().weights, 0);
  EXPECT_GT(a.memory().derived, dense.memory().derived);
  EXPECT_GT(a.memory().scratch, 0);
  EXPECT_EQ(dense.memory().scratch, 0);  // no inference yet
  EXPECT_EQ(dense.state().planned->derived->count(), 0u);  // nothing derived for a dense plan

  // b moves to the dense plan: a still holds the int8 one, unchanged.
  b.set_plan(Plan{});
  EXPECT_EQ(b.state().planned.get(), dense.state().planned.get());
  EXPECT_EQ(a.state().planned.get(), pa);
  std::weak_ptr<const PlannedModel> gone = a.state().planned;
  a.set_plan(Plan{});
  EXPECT_TRUE(gone.expired());  // the last holder let go: its weights are freed
}

}  // namespace
}  // namespace evla
