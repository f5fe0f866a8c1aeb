// AVX2/FMA versions of the activation functions. Compiled for AVX2 through
// function attributes so the rest of the binary stays baseline x86-64; only
// called when cpu_has_avx2().
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/vec_math.h"

#define EVLA_AVX2 __attribute__((target("avx2,fma")))

namespace evla::kernels {

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("f16c");
  return has;
}

namespace avx2 {
namespace {

// e^x for x in float range (clamped), Cephes-style: 2^n · p(r), |r| ≤ ln2/2.
EVLA_AVX2 inline __m256 exp256(__m256 x) {
  // Bound first, x second: max/min return their second operand when one is
  // NaN, so NaN goes on through the polynomial instead of becoming e^−87.
  x = _mm256_min_ps(_mm256_set1_ps(88.37626f), _mm256_max_ps(_mm256_set1_ps(-87.33654f), x));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// x / (1 + e^(−s·x)) with s folded into `arg`.
EVLA_AVX2 inline __m256 x_sigmoid(__m256 x, __m256 arg) {
  const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), arg));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

EVLA_AVX2 inline __m256 erf256(__m256 z) {
  const __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0f));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  const __m256 r = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
  return _mm256_or_ps(r, sign);
}

}  // namespace

EVLA_AVX2 void exp_inplace(float* x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}

EVLA_AVX2 void softmax(float* x, size_t n) {
  if (n == 0) return;
  size_t i = 0;
  // max skips NaN here as the reference's std::max does; the exp below
  // carries it into every output.
  __m256 vmax = _mm256_set1_ps(x[0]);
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(_mm256_loadu_ps(x + i), vmax);
  alignas(32) float m8[8];
  _mm256_store_ps(m8, vmax);
  float mx = m8[0];
  for (int j = 1; j < 8; ++j) mx = std::max(mx, m8[j]);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vsum = _mm256_setzero_ps();
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  alignas(32) float s8[8];
  _mm256_store_ps(s8, vsum);
  double sum = 0;  // eight partial sums, then the tail
  for (int j = 0; j < 8; ++j) sum += s8[j];
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  const __m256 inv = _mm256_set1_ps(float(1.0 / sum));
  i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= float(1.0 / sum);
}

EVLA_AVX2 void gelu_erf(float* x, size_t n) {
  size_t i = 0;
  const __m256 half = _mm256_set1_ps(0.5f), k = _mm256_set1_ps(0.70710678118654752f), one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = erf256(_mm256_mul_ps(v, k));
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
  }
  ref::gelu_erf(x + i, n - i);
}

// 0.5·x·(1 + tanh(u)) = x·sigmoid(2u), u = √(2/π)(x + 0.044715x³): no cancellation.
EVLA_AVX2 void gelu_tanh(float* x, size_t n) {
  size_t i = 0;
  const __m256 c2 = _mm256_set1_ps(2.0f * 0.7978845608028654f), k = _mm256_set1_ps(0.044715f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(k, v), _mm256_mul_ps(v, v), v);
    _mm256_storeu_ps(x + i, x_sigmoid(v, _mm256_mul_ps(c2, inner)));
  }
  ref::gelu_tanh(x + i, n - i);
}

EVLA_AVX2 void silu(float* x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(x + i, x_sigmoid(v, v));
  }
  ref::silu(x + i, n - i);
}

EVLA_AVX2 void swiglu(float* gate, const float* up, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(x_sigmoid(g, g), _mm256_loadu_ps(up + i)));
  }
  ref::swiglu(gate + i, up + i, n - i);
}

namespace {

// Σ (x[i] - shift)^p for p = 1 or 2, in double: two 4-lane accumulators.
template <int P>
EVLA_AVX2 double row_sum(const float* x, int n, double shift) {
  __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();
  const __m256d s = _mm256_set1_pd(shift);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), s);
    __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), s);
    if constexpr (P == 2) {
      a = _mm256_fmadd_pd(lo, lo, a);
      b = _mm256_fmadd_pd(hi, hi, b);
    } else {
      a = _mm256_add_pd(a, lo);
      b = _mm256_add_pd(b, hi);
    }
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(a, b));
  double r = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < n; ++i) {
    const double d = x[i] - shift;
    r += P == 2 ? d * d : d;
  }
  return r;
}

}  // namespace

EVLA_AVX2 void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps,
                          float* y) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + size_t(m) * D;
    float* yr = y + size_t(m) * D;
    const double mean = row_sum<1>(xr, D, 0.0) / D;
    const double var = row_sum<2>(xr, D, mean) / D;
    const float inv = float(1.0 / std::sqrt(var + eps)), mu = float(mean);
    const __m256 vinv = _mm256_set1_ps(inv), vmu = _mm256_set1_ps(mu);
    int d = 0;
    for (; d + 8 <= D; d += 8) {
      __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + d), vmu), vinv);
      if (gamma) v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + d));
      if (beta) v = _mm256_add_ps(v, _mm256_loadu_ps(beta + d));
      _mm256_storeu_ps(yr + d, v);
    }
    for (; d < D; ++d) {
      float v = (xr[d] - mu) * inv;
      if (gamma) v *= gamma[d];
      if (beta) v += beta[d];
      yr[d] = v;
    }
  }
}

EVLA_AVX2 void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + size_t(m) * D;
    float* yr = y + size_t(m) * D;
    const float inv = float(1.0 / std::sqrt(row_sum<2>(xr, D, 0.0) / D + eps));
    const __m256 vinv = _mm256_set1_ps(inv);
    int d = 0;
    for (; d + 8 <= D; d += 8)
      _mm256_storeu_ps(yr + d, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + d), vinv), _mm256_loadu_ps(weight + d)));
    for (; d < D; ++d) yr[d] = xr[d] * inv * weight[d];
  }
}

EVLA_AVX2 void dequant_int8(const int8_t* q, float scale, float* out, size_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s));
  }
  ref::dequant_int8(q + i, scale, out + i, n - i);
}

EVLA_AVX2 void decode_bf16(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  ref::decode_bf16(in + i, out + i, n - i);
}

__attribute__((target("avx2,fma,f16c"))) void decode_f16(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  ref::decode_f16(in + i, out + i, n - i);
}

}  // namespace avx2
}  // namespace evla::kernels
