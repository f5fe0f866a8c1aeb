#include "accel/quantize.h"

#include "kernels/kernels.h"

namespace evla::accel {

void quantize_layer_int8(LlamaLayer& layer, std::deque<std::vector<int8_t>>& codes,
                         std::deque<std::vector<float>>& scales) {
  auto quantize = [&](Linear& L) {
    auto& q = codes.emplace_back(size_t(L.out) * L.in);
    auto& s = scales.emplace_back(size_t(L.out));
    kernels::quantize_int8_rows(L.w, L.out, L.in, q.data(), s.data());
    L.w8 = q.data();
    L.w8_scale = s.data();
  };
  if (layer.has_attn) {
    quantize(layer.qkv);
    quantize(layer.o);
  }
  if (layer.has_mlp) {
    quantize(layer.gate_up);
    quantize(layer.down);
  }
}

}  // namespace evla::accel
