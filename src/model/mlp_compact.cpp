#include "model/mlp_compact.h"

#include <cstring>

namespace evla {

LlamaLayer compact_mlp(const LlamaLayer& layer, const std::vector<int>& channels,
                       std::deque<std::vector<float>>& storage) {
  LlamaLayer out = layer;
  const int D = layer.gate.in, F = layer.gate.out, K = int(channels.size());
  auto rows = [&](const Linear& src) {
    auto& buf = storage.emplace_back(size_t(K) * D);
    for (int i = 0; i < K; ++i) weight_rows(src, channels[i], 1, &buf[size_t(i) * D]);
    return Linear{buf.data(), nullptr, D, K};
  };
  out.gate = rows(layer.gate);
  out.up = rows(layer.up);
  auto& down = storage.emplace_back(size_t(D) * K);
  std::vector<float> row(static_cast<size_t>(F));
  for (int r = 0; r < D; ++r) {
    weight_rows(layer.down, r, 1, row.data());
    for (int i = 0; i < K; ++i) down[size_t(r) * K + i] = row[size_t(channels[i])];
  }
  out.down = Linear{down.data(), nullptr, K, D};
  // The fused gate|up matrix the forward pass runs: the two compacted blocks stacked.
  out.gate_up = stack_rows({&out.gate, &out.up}, storage.emplace_back());
  auto allocate = [&storage](size_t n) { return storage.emplace_back(n).data(); };
  pack_if_faster(out.gate_up, allocate);
  pack_if_faster(out.down, allocate);
  return out;
}

}  // namespace evla
