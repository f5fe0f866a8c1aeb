// `evla prune`: bakes a plan's layer drops and MLP channel removal into a
// physically smaller checkpoint that loads and runs like any other model.
// What weights cannot hold (token selection, action-head caching) is written
// beside it as the remaining plan.
#pragma once
#include <string>

#include "evla/evla.h"

namespace evla::accel {

struct PruneResult {
  int64_t params_before = 0, params_after = 0;
  int layers_before = 0, layers_after = 0;
  bool residual_plan = false;  // DIR/plan.json written
};

PruneResult prune_model(const Model& model, const Plan& plan, const std::string& out_dir);

}  // namespace evla::accel
