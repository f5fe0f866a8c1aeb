// Small statistics for reporting results honestly.
#pragma once
#include <vector>

namespace evla::eval {

struct Interval {
  double lo = 0, hi = 0;
};

// 95% Wilson score interval of a success rate (good at small n and near 0/1).
Interval wilson95(int successes, int trials);

// Paired difference of two arms run on the same episodes (b − a, each 0/1):
// the mean and its 95% normal interval from the per-episode differences,
// which is far narrower than comparing two independent intervals when the
// arms mostly agree. a and b must have the same size (≥ 2).
struct PairedDifference {
  double mean = 0;
  Interval ci95;
  int discordant = 0;  // episodes where the arms disagree
};
PairedDifference paired_difference(const std::vector<int>& a, const std::vector<int>& b);

// Linear-interpolated percentile, p in [0, 1]; 0 for an empty sample.
double percentile(std::vector<double> values, double p);

}  // namespace evla::eval
