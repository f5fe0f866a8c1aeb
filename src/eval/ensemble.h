// CogACT's adaptive action ensembling: the action executed at a step is a
// weighted mean of what every recent chunk predicted for that step, weighted
// by exp(α · cosine similarity to the newest prediction).
#pragma once
#include <deque>
#include <vector>

namespace evla::eval {

class AdaptiveEnsembler {
 public:
  AdaptiveEnsembler(int horizon, int dim, float alpha) : horizon_(horizon), dim_(dim), alpha_(alpha) {}
  void reset() { chunks_.clear(); }
  // Adds the chunk predicted now (horizon × dim) and returns the action to
  // execute now.
  std::vector<float> add_and_pick(const float* chunk);

 private:
  int horizon_, dim_;
  float alpha_;
  std::deque<std::vector<float>> chunks_;  // newest last; chunk k predicted k steps ago… see .cpp
};

}  // namespace evla::eval
