// Small statistics for reporting results honestly.
#pragma once
#include <vector>

namespace evla::eval {

struct Interval {
  double lo = 0, hi = 0;
};

// 95% Wilson score interval of a success rate (good at small n and near 0/1).
Interval wilson95(int successes, int trials);

// Linear-interpolated percentile, p in [0, 1]; 0 for an empty sample.
double percentile(std::vector<double> values, double p);

}  // namespace evla::eval
