#include "model/mlp_compact.h"

#include <cstring>

namespace evla {

LlamaLayer compact_mlp(const LlamaLayer& layer, const std::vector<int>& channels, DerivedArrays& arrays) {
  LlamaLayer out = layer;
  const int D = layer.gate.in, F = layer.gate.out, K = int(channels.size());
  // A 16-bit layer stays 16-bit: the kept rows and columns are copied as they are.
  auto rows = [&](const Linear& src) {
    Linear L{nullptr, nullptr, D, K};
    if (src.w16) {
      auto buf = arrays.next<uint16_t>(size_t(K) * D);
      if (buf.fill)
        for (int i = 0; i < K; ++i)
          std::memcpy(buf.fill + size_t(i) * D, src.w16 + size_t(channels[i]) * D, sizeof(uint16_t) * D);
      L.w16 = buf.data, L.w16_bf16 = src.w16_bf16, L.bf16_dot = src.bf16_dot;
    } else {
      auto buf = arrays.next<float>(size_t(K) * D);
      if (buf.fill)
        for (int i = 0; i < K; ++i) weight_rows(src, channels[i], 1, buf.fill + size_t(i) * D);
      L.w = buf.data;
    }
    return L;
  };
  out.gate = rows(layer.gate);
  out.up = rows(layer.up);
  out.down = Linear{nullptr, nullptr, K, D};
  if (layer.down.w16) {
    auto down = arrays.next<uint16_t>(size_t(D) * K);
    if (down.fill)
      for (int r = 0; r < D; ++r)
        for (int i = 0; i < K; ++i) down.fill[size_t(r) * K + i] = layer.down.w16[size_t(r) * F + channels[i]];
    out.down.w16 = down.data, out.down.w16_bf16 = layer.down.w16_bf16, out.down.bf16_dot = layer.down.bf16_dot;
  } else {
    auto down = arrays.next<float>(size_t(D) * K);
    if (down.fill) {
      std::vector<float> row(static_cast<size_t>(F));
      for (int r = 0; r < D; ++r) {
        weight_rows(layer.down, r, 1, row.data());
        for (int i = 0; i < K; ++i) down.fill[size_t(r) * K + i] = row[size_t(channels[i])];
      }
    }
    out.down.w = down.data;
  }
  // The fused gate|up matrix the forward pass runs: the two compacted blocks
  // stacked (16-bit ones run part by part instead, see apply_fused).
  if (out.gate.w16) {
    out.gate_up = Linear{nullptr, nullptr, D, 2 * K};
  } else {
    auto stacked = arrays.next<float>(size_t(2 * K) * D);
    if (stacked.fill) {
      std::memcpy(stacked.fill, out.gate.w, sizeof(float) * size_t(K) * D);
      std::memcpy(stacked.fill + size_t(K) * D, out.up.w, sizeof(float) * size_t(K) * D);
    }
    out.gate_up = Linear{stacked.data, nullptr, D, 2 * K};
    pack_if_faster(out.gate_up, arrays);
  }
  pack_if_faster(out.down, arrays);
  return out;
}

}  // namespace evla
