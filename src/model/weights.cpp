#include "model/weights.h"

#include <algorithm>
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
  else if (L.w8)
    kernels::linear_int8(pool, x, ldx, M, L.in, L.w8, L.w8_scale, L.b, L.out, y, ldy);
  else if (L.packed)
    kernels::linear_packed(pool, x, ldx, M, L.in, L.packed, L.b, L.out, y, ldy);
  else if (L.w16)
    kernels::linear_16bit(pool, x, ldx, M, L.in, L.w16, L.w16_bf16, L.b, L.out, y, ldy);
  else
    kernels::linear_strided(pool, x, ldx, M, L.in, L.w, L.b, L.out, y, ldy);
}

void weight_rows(const Linear& L, int r0, int n, float* dst) {
  if (L.w)
    std::copy_n(L.w + size_t(r0) * L.in, size_t(n) * L.in, dst);
  else if (L.w16)
    kernels::decode_16bit(L.w16 + size_t(r0) * L.in, L.w16_bf16, dst, size_t(n) * L.in);
  else
    throw Error("weight_rows: the layer keeps no fp32 or 16-bit matrix");
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

void pack_if_faster(Linear& L, const std::function<float*(size_t)>& allocate) {
  if (!kernels::prefer_packed(L.out, L.in)) return;
  float* p = allocate(kernels::packed_floats(L.out, L.in));
  pack_into(L, p);
  L.packed = p;
}

Linear WeightLoader::linear(const std::string& leaf, int out, int in, bool bias, bool pack) const {
  Linear l;
  l.in = in;
  l.out = out;
  const std::string base = leaf.empty() ? "" : leaf + ".";
  const io::TensorInfo& t = store_->tensor(name(base + "weight"), {out, in});
  if ((t.dtype == io::DType::BF16 || t.dtype == io::DType::F16) &&
      reinterpret_cast<uintptr_t>(t.data) % alignof(uint16_t) == 0) {
    l.w16 = reinterpret_cast<const uint16_t*>(t.data);  // used in place: no fp32 copy
    l.w16_bf16 = t.dtype == io::DType::BF16;
  } else {
    l.w = store_->f32(t);
  }
  if (bias) l.b = get(base + "bias", {out});
  if (pack && kernels::prefer_packed(out, in))
    l.packed = store_->derived("packed:" + name(base + "weight"), kernels::packed_floats(out, in),
                               [&l](float* p) { pack_into(l, p); });
  return l;
}

}  // namespace evla
