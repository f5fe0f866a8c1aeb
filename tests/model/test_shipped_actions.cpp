// The shipped policy's actions under every shipped plan, against the ones
// stored in tests/fixtures/shipped_actions.json: a refactoring that changes
// what a plan computes, by a single bit, fails here. The stored bits belong
// to a kernel selection (kernels::selection(): which fp32, BF16 and int8
// kernels run, and the OpenBLAS core): where this process's selection is
// stored the actions must be bit-identical. Elsewhere the sums run in
// another order: plans without int8 layers must agree with every stored
// selection to NMSE ≤ 1e-6 (the stored ones differ by 3e-15), and int8 plans
// with the selections that run the same int8 kernel to NMSE ≤ 1e-5; another
// int8 kernel quantizes activations otherwise, which can flip a token
// selection or an adaptive cache decision (5-8 % apart between the weight-only
// and integer kernels), so those are not compared. EVLA_KERNELS=avx2 and
// =blas give two more selections on one machine.
//
// After an intended change, rewrite this selection's entry with
//   EVLA_WRITE_SHIPPED_ACTIONS=1 build/test_model --gtest_filter='ShippedActions.*'
// (and with EVLA_KERNELS=avx2, =blas), and say why in the commit.
#include <gtest/gtest.h>

#include <bit>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/output_file.h"
#include "evla/evla.h"
#include "kernels/kernels.h"
#include "test_util.h"

namespace evla {
namespace {

namespace fs = std::filesystem;

Observation observation(const Model& m, uint64_t seed) {
  Observation obs;
  for (int k = 0; k < m.num_images(); ++k) {
    Image img(m.image_size(), m.image_size());
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i * 37 + 11 * k + i / 997) % 251);
    obs.images.push_back(img);
  }
  obs.instruction = "pick up the red cube";
  obs.state.assign(size_t(m.state_dim()), 0.25f);
  obs.seed = seed;
  return obs;
}

// Every shipped plan (and dense), by name.
std::map<std::string, Plan> shipped_plans() {
  std::map<std::string, Plan> plans{{"dense", Plan{}}};
  for (const auto& e : fs::directory_iterator(test::source_path("models/evla-tabletop/plans")))
    if (e.path().extension() == ".json" && e.path().stem() != "analysis")
      plans[e.path().stem().string()] = Plan::load(e.path().string());
  return plans;
}

std::vector<std::string> to_bits(const std::vector<float>& v) {
  std::vector<std::string> out;
  for (float f : v) out.push_back(fmt::format("{:08x}", std::bit_cast<uint32_t>(f)));
  return out;
}

std::vector<float> from_bits(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& s : j) out.push_back(std::bit_cast<float>(uint32_t(std::stoul(s.get<std::string>(), nullptr, 16))));
  return out;
}

TEST(ShippedActions, EveryShippedPlanComputesWhatItDidWhenStored) {
  const std::string path = test::source_path("tests/fixtures/shipped_actions.json");
  auto model = Model::load(test::source_path("models/evla-tabletop"));
  std::map<std::string, std::vector<float>> now;
  std::set<std::string> int8_plans;
  for (const auto& [name, plan] : shipped_plans()) {
    if (model->flops(plan).llm_int8 > 0) int8_plans.insert(name);
    Policy p(model, PolicyOptions{1});
    p.set_plan(plan);
    std::vector<float> a;
    for (uint64_t seed : {3, 11}) {
      const std::vector<float> chunk = p.infer(observation(*model, seed)).actions;
      a.insert(a.end(), chunk.begin(), chunk.end());
    }
    now[name] = a;
  }
  const std::string selection = kernels::selection();
  nlohmann::json stored = nlohmann::json::object();
  if (fs::exists(path)) stored = nlohmann::json::parse(std::ifstream(path));

  if (std::getenv("EVLA_WRITE_SHIPPED_ACTIONS")) {
    for (const auto& [name, a] : now) stored[selection][name] = to_bits(a);
    write_file(path, stored.dump(1) + "\n");
    GTEST_SKIP() << "wrote the entry of \"" << selection << "\" to " << path;
  }
  ASSERT_FALSE(stored.empty()) << path << " holds no stored actions";
  const auto int8_kernel = [](const std::string& sel) {
    const size_t from = sel.find("; int8 "), to = sel.find("; OpenBLAS");
    return from == std::string::npos || to < from ? sel : sel.substr(from, to - from);
  };
  for (const auto& [sel, plans] : stored.items()) {
    const bool exact = sel == selection;
    const bool same_int8 = int8_kernel(sel) == int8_kernel(selection);
    ASSERT_EQ(plans.size(), now.size()) << "the shipped plans changed since " << path << " was written";
    for (const auto& [name, a] : now) {
      ASSERT_TRUE(plans.contains(name)) << name << " is not stored for " << sel;
      const std::vector<float> want = from_bits(plans[name]);
      ASSERT_EQ(want.size(), a.size()) << name;
      if (exact) {
        EXPECT_EQ(to_bits(a), to_bits(want)) << name << " under " << sel;
      } else if (!int8_plans.count(name)) {
        EXPECT_LE(test::nmse(a.data(), want.data(), a.size()), 1e-6) << name << " against " << sel;
      } else if (same_int8) {
        EXPECT_LE(test::nmse(a.data(), want.data(), a.size()), 1e-5) << name << " against " << sel;
      }
    }
  }
  if (!stored.contains(selection))
    std::printf("note: %s stores no bits for this selection (%s); compared within the tolerances above\n",
                path.c_str(), selection.c_str());
}

}  // namespace
}  // namespace evla
