#include "eval/ensemble.h"

#include <cmath>

namespace evla::eval {

std::vector<float> AdaptiveEnsembler::add_and_pick(const float* chunk) {
  chunks_.emplace_back(chunk, chunk + size_t(horizon_) * dim_);
  if (int(chunks_.size()) > horizon_) chunks_.pop_front();
  // The chunk added `age` steps ago predicts the current step at row `age`.
  const int n = int(chunks_.size());
  const float* newest = chunks_.back().data();
  double nn = 0;
  for (int d = 0; d < dim_; ++d) nn += double(newest[d]) * newest[d];
  std::vector<double> acc(static_cast<size_t>(dim_), 0.0);
  double wsum = 0;
  for (int i = 0; i < n; ++i) {
    const int age = n - 1 - i;
    const float* pred = chunks_[size_t(i)].data() + size_t(age) * dim_;
    double dot = 0, pp = 0;
    for (int d = 0; d < dim_; ++d) {
      dot += double(pred[d]) * newest[d];
      pp += double(pred[d]) * pred[d];
    }
    const double cos = (nn > 0 && pp > 0) ? dot / std::sqrt(nn * pp) : 1.0;
    const double w = std::exp(alpha_ * cos);
    for (int d = 0; d < dim_; ++d) acc[size_t(d)] += w * pred[d];
    wsum += w;
  }
  std::vector<float> out(static_cast<size_t>(dim_));
  for (int d = 0; d < dim_; ++d) out[size_t(d)] = float(acc[size_t(d)] / wsum);
  return out;
}

}  // namespace evla::eval
