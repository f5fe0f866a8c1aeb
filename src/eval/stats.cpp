#include "eval/stats.h"

#include <algorithm>
#include <cmath>

namespace evla::eval {

Interval wilson95(int s, int n) {
  if (n <= 0) return {0, 1};
  const double z = 1.959963984540054, p = double(s) / n, z2n = z * z / n;
  const double center = (p + z2n / 2) / (1 + z2n);
  const double half = z * std::sqrt(p * (1 - p) / n + z2n / (4.0 * n)) / (1 + z2n);
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

PairedDifference paired_difference(const std::vector<int>& a, const std::vector<int>& b) {
  PairedDifference d;
  const size_t n = a.size();
  if (n < 2 || b.size() != n) return d;
  double sum = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = double(b[i]) - double(a[i]);
    sum += x, sq += x * x;
    d.discordant += a[i] != b[i];
  }
  d.mean = sum / double(n);
  const double var = std::max(0.0, (sq - double(n) * d.mean * d.mean) / double(n - 1));
  const double half = 1.959963984540054 * std::sqrt(var / double(n));
  d.ci95 = {d.mean - half, d.mean + half};
  return d;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = std::clamp(p, 0.0, 1.0) * double(v.size() - 1);
  const size_t lo = size_t(idx), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - double(lo));
}

}  // namespace evla::eval
