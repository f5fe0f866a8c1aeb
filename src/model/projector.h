// The vision→language projector: Linear, GELU, Linear, … (Prismatic's
// "gelu-mlp" / "fused-gelu-mlp").
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace evla {

class ThreadPool;

class Projector {
 public:
  Projector(const ProjectorConfig& cfg, int in_dim, int out_dim, WeightStore& store);
  // x: [T, in_dim] → y: [T, out_dim]
  void forward(const float* x, int T, float* y, std::vector<float>& scratch, ThreadPool& pool) const;
  double flops(int T) const;
  int in_dim() const { return layers_.front().in; }
  int out_dim() const { return layers_.back().out; }
  // A copy whose matrix products run at `precision` (set_precision); the
  // BF16 matrices it derives go into `arrays`.
  Projector with_precision(WeightType precision, DerivedArrays& arrays) const;

 private:
  std::vector<Linear> layers_;
};

}  // namespace evla
