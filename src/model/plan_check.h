// Checks that a plan fits a model; every error names the plan field.
#pragma once
#include "evla/plan.h"
#include "model/config.h"

namespace evla {

void check_plan(const Plan& plan, const ModelConfig& cfg);

}  // namespace evla
