// Weights as the modules see them: fp32 pointers that stay valid for the
// model's lifetime. F32 tensors are used in place from the memory map;
// F16/BF16 are converted once at load. WeightLoader carries a name prefix
// (like candle's VarBuilder) and checks every shape it hands out.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.h"
#include "evla/plan.h"
#include "io/safetensors.h"
#include "model/derived_arrays.h"
#include "model/weight_cache.h"

namespace evla {

struct Linear {
  const float* w = nullptr;  // [out, in]
  const float* b = nullptr;  // [out] or null
  int in = 0, out = 0;
  // A plan's int8 layer: w ≈ w8_scale[row] · codes (kernels::quantize_int8_rows),
  // the codes either packed for the AVX2 integer kernel (kernels::linear_int8_dynamic)
  // or plain, for the AVX-512 VNNI one (kernels::linear_int8_rows, 8-bit
  // activations) or else the weight-only one. When either is set the forward
  // pass uses it instead of w.
  const int8_t* w8 = nullptr;
  const int8_t* w8_packed = nullptr;
  const float* w8_scale = nullptr;
  // w packed for kernels::linear_packed, set where that kernel is the faster
  // one for this shape (kernels::prefer_packed).
  const float* packed = nullptr;
  // A 16-bit matrix used where it lies in the mapped checkpoint (bfloat16, or
  // IEEE half when !w16_bf16), in place of w: no fp32 copy is made.
  const uint16_t* w16 = nullptr;
  bool w16_bf16 = true;
  // Bfloat16 w16 run as BF16 products (kernels::linear_bf16), as a bfloat16
  // checkpoint does by default; false widens them to fp32 (exact).
  bool bf16_dot = false;

  bool empty() const { return !w && !packed && !w8 && !w8_packed && !w16; }
};

// Rows [r0, r0 + n) of L's matrix as fp32 (from w, w16, or plain int8 codes
// times their scales) into dst (n × in floats).
void weight_rows(const Linear& L, int r0, int n, float* dst);

// The matrix stacked from `parts` (`fused` itself, or the parts of a fused
// matrix) made to run at `precision`; Stored leaves it as loaded.
// BF16: bfloat16 weights are used where they lie; others (fp32, IEEE half)
//   are rounded once into a bfloat16 matrix in `arrays`, which `fused` then holds.
// F32: bfloat16 weights stay where they lie and are widened as the products
//   read them (nothing is copied).
// Int8 is refused (std::invalid_argument): it is quantize_layer_int8's.
void set_precision(Linear& fused, std::initializer_list<Linear*> parts, WeightType precision, DerivedArrays& arrays);
inline void set_precision(Linear& L, WeightType precision, DerivedArrays& arrays) {
  set_precision(L, {&L}, precision, arrays);
}

class ThreadPool;
// y = x · Wᵀ + b through whichever weights `L` carries (fp32 or int8); x and y
// rows have strides ldx and ldy.
void apply_linear(ThreadPool& pool, const Linear& L, const float* x, int ldx, int M, float* y, int ldy);
// y = x · [parts]ᵀ through the fused matrix, or part by part into adjacent
// column blocks of y when the fused one is empty (16-bit layers).
void apply_fused(ThreadPool& pool, const Linear& fused, std::initializer_list<const Linear*> parts,
                 const float* x, int ldx, int M, float* y, int ldy);
// Gives L its packed copy (in `arrays`) when the packed kernel is the faster
// one for L's shape (for matrices a plan derives; the loader's go through
// WeightStore::derived).
void pack_if_faster(Linear& L, DerivedArrays& arrays);

class WeightStore {
 public:
  explicit WeightStore(io::TensorStore store) : store_(std::move(store)) {}
  bool has(const std::string& name) const { return store_.has(name); }
  // fp32 view of a tensor after checking its shape; the error names both shapes.
  const float* f32(const std::string& name, const std::vector<int64_t>& shape);
  // The tensor itself after checking its shape (counted as loaded).
  const io::TensorInfo& tensor(const std::string& name, const std::vector<int64_t>& shape);
  // fp32 view of a tensor got from tensor(): in place for F32, else converted once.
  const float* f32(const io::TensorInfo& t);
  // Owned fp32 storage, not zeroed.
  float* allocate(size_t n);
  // A derived array of n floats (packed, fused, converted) named `key`: from
  // the derived-weight cache when it holds it, else allocated and written by
  // `fill`. The cache is off until use_cache().
  const float* derived(const std::string& key, size_t n, const std::function<void(float*)>& fill);
  // Looks derived arrays up in, and saves them to, the cache in `dir` ("" = none).
  void use_cache(const std::string& dir);
  // Writes the arrays derived since use_cache() to the cache, if any.
  void save_cache();
  const std::string& cache_status() const;
  int64_t loaded_params() const { return loaded_params_; }
  size_t derived_bytes() const { return owned_.mapped_bytes(); }
  const std::string& source() const { return store_.source(); }
  const io::TensorStore& tensors() const { return store_; }

 private:
  io::TensorStore store_;
  Arena owned_;  // uninitialised: every caller fills what it asks for
  std::unique_ptr<WeightCache> cache_;
  int64_t loaded_params_ = 0;
};

class WeightLoader {
 public:
  WeightLoader(WeightStore& store, std::string prefix) : store_(&store), prefix_(std::move(prefix)) {}
  WeightLoader pp(const std::string& part) const;
  WeightLoader pp(int index) const { return pp(std::to_string(index)); }
  std::string name(const std::string& leaf) const;
  bool has(const std::string& leaf) const { return store_->has(name(leaf)); }
  const float* get(const std::string& leaf, const std::vector<int64_t>& shape) const;
  // pack = false for matrices the forward pass only runs fused with others.
  Linear linear(const std::string& leaf, int out, int in, bool bias = true, bool pack = true) const;
  // The same for a weight tensor of any rank read as a matrix of shape[0]
  // rows (e.g. a convolution [D, C, P, P]); `bias` names its bias, "" = none.
  Linear matrix(const std::string& leaf, const std::vector<int64_t>& shape, const std::string& bias,
                bool pack = true) const;
  WeightStore& store() const { return *store_; }

 private:
  WeightStore* store_;
  std::string prefix_;
};

}  // namespace evla
