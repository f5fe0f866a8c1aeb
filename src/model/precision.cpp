#include "model/precision.h"

#include <algorithm>
#include <initializer_list>
#include <stdexcept>

#include "kernels/kernels.h"

namespace evla {

namespace {

// The layer's matrix products: each fused matrix with its parts, and the
// unfused ones with themselves.
template <typename F>
void for_each_product(LlamaLayer& layer, const F& f) {
  if (layer.has_attn) {
    f(layer.qkv, {&layer.q, &layer.k, &layer.v});
    f(layer.o, {&layer.o});
  }
  if (layer.has_mlp) {
    f(layer.gate_up, {&layer.gate, &layer.up});
    f(layer.down, {&layer.down});
  }
}

}  // namespace

void quantize_layer_int8(LlamaLayer& layer, DerivedArrays& arrays) {
  // Rows are quantized independently, so a fused matrix is quantized part by
  // part straight from the layer's own q, k, v (gate, up) weights.
  // Only the form the forward pass reads is kept: the packed codes where the
  // integer kernel runs, the plain ones otherwise.
  // With AVX-512 VNNI the plain codes are what the kernel reads (it packs
  // panels on the fly); the AVX2 kernel wants them packed once.
  const bool packed = kernels::prefer_int8_dynamic() && !kernels::prefer_int8_rows();
  std::vector<int8_t> plain;
  auto quantize = [&](Linear& L, std::initializer_list<Linear*> parts) {
    bool stored_int8 = true;  // an int8 checkpoint's codes: used in place by the VNNI kernel
    for (const Linear* p : parts) stored_int8 &= p->w8 != nullptr && p->w8_scale != nullptr;
    if (stored_int8 && !packed) {
      if (parts.size() > 1) L = Linear{nullptr, nullptr, L.in, L.out};
      return;
    }
    auto s = arrays.next<float>(size_t(L.out));
    auto c = arrays.next<int8_t>(packed ? kernels::int8_dynamic_packed_bytes(L.out, L.in) : size_t(L.out) * L.in);
    L.w8_scale = s.data;
    (packed ? L.w8_packed : L.w8) = c.data;
    if (!c.fill) return;  // replayed: codes and scales are there already
    if (packed) plain.resize(size_t(L.out) * L.in);
    int8_t* q = packed ? plain.data() : c.fill;
    size_t row = 0;
    std::vector<float> widened;  // rows of a 16-bit part, a block at a time
    for (const Linear* p : parts) {
      if (p->w) {
        kernels::quantize_int8_rows(p->w, p->out, p->in, q + row * L.in, s.fill + row);
      } else {
        const int block = 256;
        widened.resize(size_t(block) * p->in);
        for (int r = 0; r < p->out; r += block) {
          const int n = std::min(block, p->out - r);
          weight_rows(*p, r, n, widened.data());
          kernels::quantize_int8_rows(widened.data(), n, p->in, q + (row + size_t(r)) * L.in, s.fill + row + r);
        }
      }
      row += size_t(p->out);
    }
    if (packed) kernels::pack_int8_dynamic(plain.data(), L.out, L.in, c.fill);
  };
  for_each_product(layer, quantize);
}

void set_layer_precision(LlamaLayer& layer, WeightType precision, DerivedArrays& arrays) {
  if (precision == WeightType::Stored) return;
  if (precision == WeightType::Int8) throw std::invalid_argument("set_layer_precision: int8 is quantize_layer_int8's");
  for_each_product(layer, [&](Linear& fused, std::initializer_list<Linear*> parts) {
    set_precision(fused, parts, precision, arrays);
  });
}

}  // namespace evla
