#include "model/weights.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "evla/error.h"
#include "kernels/kernels.h"

namespace evla {

const io::TensorInfo& WeightStore::tensor(const std::string& name, const std::vector<int64_t>& shape) {
  const io::TensorInfo& t = store_.get(name, shape);
  loaded_params_ += t.numel();
  return t;
}

const float* WeightStore::f32(const std::string& name, const std::vector<int64_t>& shape) {
  return f32(tensor(name, shape));
}

const float* WeightStore::f32(const io::TensorInfo& t) {
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % alignof(float) == 0;
  if (t.dtype == io::DType::F32 && aligned) return reinterpret_cast<const float*>(t.data);
  return derived("f32:" + t.name, size_t(t.numel()), [&t](float* dst) { io::to_f32(t, dst); });
}

float* WeightStore::allocate(size_t n) {
  // Not zero-filled: that would cost as much as the packing that follows.
  return static_cast<float*>(owned_.allocate(n * sizeof(float)));
}

const float* WeightStore::derived(const std::string& key, size_t n, const std::function<void(float*)>& fill) {
  if (cache_)
    if (const float* p = cache_->find(key, n)) return p;
  float* p = allocate(n);
  fill(p);
  if (cache_) cache_->add(key, p, n);
  return p;
}

void WeightStore::use_cache(const std::string& dir) { cache_ = std::make_unique<WeightCache>(dir, store_); }

void WeightStore::save_cache() {
  if (cache_) cache_->save();
}

const std::string& WeightStore::cache_status() const {
  static const std::string off = "off";
  return cache_ ? cache_->status() : off;
}

WeightLoader WeightLoader::pp(const std::string& part) const {
  return WeightLoader(*store_, name(part));
}

std::string WeightLoader::name(const std::string& leaf) const {
  if (prefix_.empty()) return leaf;
  if (leaf.empty()) return prefix_;
  return prefix_ + "." + leaf;
}

const float* WeightLoader::get(const std::string& leaf, const std::vector<int64_t>& shape) const {
  return store_->f32(name(leaf), shape);
}

void apply_linear(ThreadPool& pool, const Linear& L, const float* x, int ldx, int M, float* y, int ldy) {
  if (L.w8_packed)
    kernels::linear_int8_dynamic(pool, x, ldx, M, L.in, L.w8_packed, L.w8_scale, L.b, L.out, y, ldy);
  else if (L.w8 && kernels::prefer_int8_rows())
    kernels::linear_int8_rows(pool, x, ldx, M, L.in, L.w8, L.w8_scale, L.b, L.out, y, ldy);
  else if (L.w8)
    kernels::linear_int8(pool, x, ldx, M, L.in, L.w8, L.w8_scale, L.b, L.out, y, ldy);
  else if (L.w16 && L.bf16_dot)
    kernels::linear_bf16(pool, x, ldx, M, L.in, L.w16, L.b, L.out, y, ldy);
  else if (L.packed)
    kernels::linear_packed(pool, x, ldx, M, L.in, L.packed, L.b, L.out, y, ldy);
  else if (L.w16)
    kernels::linear_16bit(pool, x, ldx, M, L.in, L.w16, L.w16_bf16, L.b, L.out, y, ldy);
  else
    kernels::linear_strided(pool, x, ldx, M, L.in, L.w, L.b, L.out, y, ldy);
}

void apply_fused(ThreadPool& pool, const Linear& fused, std::initializer_list<const Linear*> parts,
                 const float* x, int ldx, int M, float* y, int ldy) {
  if (!fused.empty()) return apply_linear(pool, fused, x, ldx, M, y, ldy);
  for (const Linear* p : parts) {
    apply_linear(pool, *p, x, ldx, M, y, ldy);
    y += p->out;
  }
}

void weight_rows(const Linear& L, int r0, int n, float* dst) {
  if (L.w)
    std::copy_n(L.w + size_t(r0) * L.in, size_t(n) * L.in, dst);
  else if (L.w16)
    kernels::decode_16bit(L.w16 + size_t(r0) * L.in, L.w16_bf16, dst, size_t(n) * L.in);
  else if (L.w8 && L.w8_scale)  // dequantized: the values the int8 layer stands for
    for (int r = 0; r < n; ++r)
      for (int k = 0; k < L.in; ++k)
        dst[size_t(r) * L.in + k] = L.w8_scale[r0 + r] * float(L.w8[size_t(r0 + r) * L.in + k]);
  else
    throw Error("weight_rows: the layer keeps no fp32, 16-bit or plain int8 matrix");
}

namespace {

// The packed copy, from w or by widening w16.
void pack_into(const Linear& L, float* p) {
  if (L.w) return kernels::pack_weights(L.w, L.out, L.in, p);
  std::vector<float> rows(size_t(L.out) * L.in);
  weight_rows(L, 0, L.out, rows.data());
  kernels::pack_weights(rows.data(), L.out, L.in, p);
}

}  // namespace

void pack_if_faster(Linear& L, DerivedArrays& arrays) {
  if (L.bf16_dot || !kernels::prefer_packed(L.out, L.in)) return;
  auto p = arrays.next<float>(kernels::packed_floats(L.out, L.in));
  if (p.fill) pack_into(L, p.fill);
  L.packed = p.data;
}

Linear WeightLoader::linear(const std::string& leaf, int out, int in, bool bias, bool pack) const {
  const std::string base = leaf.empty() ? "" : leaf + ".";
  return matrix(base + "weight", {out, in}, bias ? base + "bias" : "", pack);
}

Linear WeightLoader::matrix(const std::string& leaf, const std::vector<int64_t>& shape, const std::string& bias,
                            bool pack) const {
  Linear l;
  l.out = int(shape.at(0));
  l.in = 1;
  for (size_t i = 1; i < shape.size(); ++i) l.in *= int(shape[i]);
  const int out = l.out, in = l.in;
  const io::TensorInfo& t = store_->tensor(name(leaf), shape);
  if (t.dtype == io::DType::I8) {  // an int8 checkpoint's matrix: codes and one scale per row, used in place
    l.w8 = reinterpret_cast<const int8_t*>(t.data);
    l.w8_scale = get(leaf + "_scale", {out});
  } else if ((t.dtype == io::DType::BF16 || t.dtype == io::DType::F16) &&
      reinterpret_cast<uintptr_t>(t.data) % alignof(uint16_t) == 0) {
    l.w16 = reinterpret_cast<const uint16_t*>(t.data);  // used in place: no fp32 copy
    l.w16_bf16 = l.bf16_dot = t.dtype == io::DType::BF16;
  } else {
    l.w = store_->f32(t);
  }
  if (!bias.empty()) l.b = get(bias, {out});
  if (pack && !l.bf16_dot && !l.w8 && kernels::prefer_packed(out, in))
    l.packed = store_->derived("packed:" + name(leaf), kernels::packed_floats(out, in),
                               [&l](float* p) { pack_into(l, p); });
  return l;
}

namespace {

// BF16 products for the matrix stacked from `parts` (which may be `fused` itself).
void to_bf16(Linear& fused, std::initializer_list<Linear*> parts, DerivedArrays& arrays) {
  bool in_place = true;
  for (const Linear* p : parts) in_place &= p->w16 && p->w16_bf16;
  if (in_place) {  // bfloat16 already: run the parts themselves (apply_fused)
    for (Linear* p : parts) p->bf16_dot = true;
    if (parts.size() > 1) fused = Linear{nullptr, nullptr, fused.in, fused.out};
    return;
  }
  // One bfloat16 matrix of the parts' rows stacked, rounded a block at a time.
  const int K = fused.in;
  auto w = arrays.next<uint16_t>(size_t(fused.out) * K);
  if (w.fill) {
    std::vector<float> rows;
    size_t at = 0;
    for (const Linear* p : parts)
      for (int r = 0; r < p->out; r += 256) {
        const int n = std::min(256, p->out - r);
        rows.resize(size_t(n) * K);
        weight_rows(*p, r, n, rows.data());
        for (float v : rows) w.fill[at++] = kernels::bf16_round(v);
      }
  }
  const float* bias = parts.size() == 1 ? fused.b : nullptr;  // fused matrices carry none
  fused = Linear{nullptr, bias, K, fused.out};
  fused.w16 = w.data;
  fused.bf16_dot = true;
}

void to_fp32(std::initializer_list<Linear*> parts) {
  for (Linear* p : parts) {
    if (p->w8 && !p->w && !p->w16)
      throw Error("fp32 products of a layer stored as int8: its fp32 weights are not in the checkpoint "
                  "(convert it with another --dtype)");
    p->bf16_dot = false;
  }
}

}  // namespace

void set_precision(Linear& fused, std::initializer_list<Linear*> parts, WeightType precision, DerivedArrays& arrays) {
  switch (precision) {
    case WeightType::Stored: return;
    case WeightType::F32: return to_fp32(parts);
    case WeightType::BF16: return to_bf16(fused, parts, arrays);
    case WeightType::Int8: throw std::invalid_argument("set_precision: int8 is for LM layers (quantize_layer_int8)");
  }
}

}  // namespace evla
