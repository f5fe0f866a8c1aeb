#include "model/projector.h"

#include <algorithm>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace evla {

Projector::Projector(const ProjectorConfig& cfg, int in_dim, int out_dim, WeightStore& store) {
  WeightLoader w(store, cfg.prefix);
  std::vector<int> dims{in_dim};
  dims.insert(dims.end(), cfg.hidden_dims.begin(), cfg.hidden_dims.end());
  dims.push_back(out_dim);
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    layers_.push_back(w.pp(int(2 * i)).linear("", dims[i + 1], dims[i]));
}

double Projector::flops(int T) const {
  double f = 0;
  for (const auto& l : layers_) f += 2.0 * T * l.in * l.out;
  return f;
}

void Projector::forward(const float* x, int T, float* y, std::vector<float>& scratch,
                        ThreadPool& pool) const {
  // Ping-pong between two halves of scratch; the last layer writes y.
  size_t widest = 0;
  for (const auto& l : layers_) widest = std::max<size_t>(widest, l.out);
  scratch.resize(2 * widest * T);
  const float* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Linear& l = layers_[i];
    const bool last = i + 1 == layers_.size();
    float* out = last ? y : scratch.data() + (i % 2) * widest * T;
    apply_linear(pool, l, in, l.in, T, out, l.out);
    if (!last) kernels::gelu_erf(out, size_t(T) * l.out);
    in = out;
  }
}

Projector Projector::with_precision(WeightType precision, DerivedArrays& arrays) const {
  Projector p = *this;
  for (Linear& L : p.layers_) set_precision(L, precision, arrays);
  return p;
}

}  // namespace evla
