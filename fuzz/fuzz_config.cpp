// Fuzzes the JSON front doors: model config.json and acceleration plans.
// Any input must either parse or raise evla::Error — never crash. A plan that
// parses is also validated against a real model's config, the check that
// stands between a plan file and the kernels.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/schedule.h"
#include "core/json_reader.h"
#include "evla/error.h"
#include "evla/plan.h"
#include "model/config.h"

namespace {
const evla::ModelConfig& fixture_config() {
  static const evla::ModelConfig cfg =
      evla::parse_model_config(evla::read_json_file(EVLA_FIXTURE_CONFIG), EVLA_FIXTURE_CONFIG);
  return cfg;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    evla::Plan p = evla::Plan::from_json(text, "fuzz-plan");
    (void)evla::Plan::from_json(p.to_json(), "fuzz-plan-roundtrip");
    evla::check_plan(p, fixture_config());
  } catch (const evla::Error&) {
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
  try {
    evla::parse_model_config(j, "fuzz-config");
  } catch (const evla::Error&) {
  }
  return 0;
}
