// Searching the plan space for the plan that moves the actions least at a
// given speed-up (EvoPress-style evolution). A candidate is a genome: what
// each LM layer keeps (all, no attention, no MLP, nothing), its MLP channel
// sparsity and its precision; the visual-token budget, the layer after which
// tokens are selected, how and by whose attention; the action head's cache
// interval and first reusing step; BF16 products for the modules around the
// LM. Its cost is the analysis' estimated speed-up; its loss the NMSE of its
// actions against dense on calibration observations with the same diffusion
// seeds, over the actions a robot executes, per action dimension and averaged
// over them ("action NMSE" below). Offspring of the best plans so far are
// mutated, repaired into the speed-up budget, screened on a few frames and
// the survivors scored on all of them.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "accel/analysis.h"
#include "evla/evla.h"

namespace evla {
class Progress;
}

namespace evla::accel {

struct SearchOptions {
  double target_speedup = 2.0;  // estimated speed-up every returned plan reaches
  // Work, in calibration-frame inferences over all candidates, as a multiple
  // of the calibration set: 300 means as many inferences as scoring 300
  // plans on every frame.
  int budget = 300;
  int offspring = 16;           // mutated candidates per generation
  int survivors = 4;            // of them, scored on every frame
  uint64_t seed = 0;
  int threads = 1;              // candidates evaluated in parallel, one thread each
  int loss_steps = 0;           // leading actions of each chunk in the loss (0: the model's executed steps)
  bool random = false;          // baseline: random feasible plans, the same budget
  // With validation frames: the plans of lowest search loss re-scored on
  // them, and the best there chosen (the search's own minimum is biased low
  // by the frames it was chosen on).
  int finalists = 8;
  // Plans to start from beside the built-in precision-first one (moved into
  // the budget where they miss it); the random baseline scores them too.
  std::vector<Plan> start;
};

struct SearchPoint {
  Plan plan;
  double speedup = 1;           // estimated
  double loss = 0;              // action NMSE vs dense on the calibration set
  double validation_loss = -1;  // on the validation frames; < 0: not scored there
};

struct SearchResult {
  SearchPoint best;                // lowest validation loss of the finalists, else lowest loss
  // The plans of lowest loss, one per structure (which sub-layers run, the
  // token budget, the cache interval), by validation loss where scored there
  // (best first): candidates for a closed-loop check.
  std::vector<SearchPoint> finalists;
  std::vector<SearchPoint> front;  // every scored plan no other beats on both loss and speed-up, fastest first
  int64_t inferences = 0;          // calibration-frame inferences spent
  int scored = 0;                  // plans scored on every frame
};

// The search's loss of each plan: action NMSE against dense on `calibration`
// over the leading `loss_steps` actions of each chunk (0: the executed ones).
std::vector<double> calibration_loss(std::shared_ptr<const Model> model, const std::vector<Observation>& calibration,
                                     const std::vector<Plan>& plans, int loss_steps = 0, int threads = 1);

// One line on what a plan changes ("2 blocks dropped; 12 layers int8; …").
std::string plan_summary(const Plan& p);

// Deterministic for a seed (loss sums run in a fixed order; each candidate
// on one thread). Throws evla::Error when no plan reaches the target.
SearchResult search_plan(const AnalysisReport& a, std::shared_ptr<const Model> model,
                         const std::vector<Observation>& calibration, const SearchOptions& o,
                         Progress* progress = nullptr, const std::vector<Observation>& validation = {});

}  // namespace evla::accel
