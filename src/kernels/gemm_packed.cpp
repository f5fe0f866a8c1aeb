// Linear layers on weights packed once at load, for the small matrices of a
// batch-1 policy (64-512 wide). OpenBLAS re-packs the weight operand on every
// call; at these sizes that copy costs about a fifth of the product (measured
// with perf on evla-tabletop: sgemm_incopy 17% against sgemm_kernel 50%).
//
// Layout: weights in panels of kPanel = 16 output features, each panel K rows
// of 16 floats (W[p·16 + j][k] at Wp[(p·K + k)·16 + j]), the last panel
// zero-padded. The AVX2 micro-kernel keeps a 6 × 16 block of outputs in 12
// registers and streams one panel row and six broadcast inputs per k.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/vec_math.h"

#define EVLA_AVX2 __attribute__((target("avx2,fma")))

namespace evla::kernels {

namespace {

constexpr int kPanel = kPackedPanel;
constexpr int kRows = 6;  // output rows per micro-kernel call

// out[r][0..15] = Σ_k x[r][k] · panel[k][0..15] (+ bias[0..15]) for r < MR,
// out rows ldo apart.
template <int MR>
EVLA_AVX2 void micro_avx2(int K, const float* x, int ldx, const float* panel, const float* bias, float* out,
                          int ldo) {
  __m256 lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + size_t(k) * kPanel);
    const __m256 w1 = _mm256_loadu_ps(panel + size_t(k) * kPanel + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + size_t(r) * ldx + k);
      lo[r] = _mm256_fmadd_ps(xv, w0, lo[r]);
      hi[r] = _mm256_fmadd_ps(xv, w1, hi[r]);
    }
  }
  const __m256 c0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 c1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(out + size_t(r) * ldo, _mm256_add_ps(lo[r], c0));
    _mm256_storeu_ps(out + size_t(r) * ldo + 8, _mm256_add_ps(hi[r], c1));
  }
}

EVLA_AVX2 inline void store_row(float* out, __m256 c0, __m256 c1, __m256 lo, __m256 hi) {
  _mm256_storeu_ps(out, _mm256_add_ps(lo, c0));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(hi, c1));
}

// The full 6-row block with its 12 accumulators as named locals: written as an
// array (above) GCC keeps them on the stack, at a third of the speed.
EVLA_AVX2 void micro6_avx2(int K, const float* x, int ldx, const float* panel, const float* bias, float* out,
                           int ldo) {
  __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0;
  __m256 a3 = a0, b3 = a0, a4 = a0, b4 = a0, a5 = a0, b5 = a0;
  const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * size_t(ldx), *x3 = x + 3 * size_t(ldx);
  const float *x4 = x + 4 * size_t(ldx), *x5 = x + 5 * size_t(ldx);
  for (int k = 0; k < K; ++k, panel += kPanel) {
    const __m256 w0 = _mm256_loadu_ps(panel), w1 = _mm256_loadu_ps(panel + 8);
    __m256 v = _mm256_broadcast_ss(x0 + k);
    a0 = _mm256_fmadd_ps(v, w0, a0), b0 = _mm256_fmadd_ps(v, w1, b0);
    v = _mm256_broadcast_ss(x1 + k);
    a1 = _mm256_fmadd_ps(v, w0, a1), b1 = _mm256_fmadd_ps(v, w1, b1);
    v = _mm256_broadcast_ss(x2 + k);
    a2 = _mm256_fmadd_ps(v, w0, a2), b2 = _mm256_fmadd_ps(v, w1, b2);
    v = _mm256_broadcast_ss(x3 + k);
    a3 = _mm256_fmadd_ps(v, w0, a3), b3 = _mm256_fmadd_ps(v, w1, b3);
    v = _mm256_broadcast_ss(x4 + k);
    a4 = _mm256_fmadd_ps(v, w0, a4), b4 = _mm256_fmadd_ps(v, w1, b4);
    v = _mm256_broadcast_ss(x5 + k);
    a5 = _mm256_fmadd_ps(v, w0, a5), b5 = _mm256_fmadd_ps(v, w1, b5);
  }
  const __m256 c0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 c1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  store_row(out, c0, c1, a0, b0), store_row(out + ldo, c0, c1, a1, b1);
  store_row(out + 2 * size_t(ldo), c0, c1, a2, b2), store_row(out + 3 * size_t(ldo), c0, c1, a3, b3);
  store_row(out + 4 * size_t(ldo), c0, c1, a4, b4), store_row(out + 5 * size_t(ldo), c0, c1, a5, b5);
}

void micro_ref(int MR, int K, const float* x, int ldx, const float* panel, const float* bias, float* out,
               int ldo) {
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < kPanel; ++j) {
      float acc = 0;
      for (int k = 0; k < K; ++k) acc += x[size_t(r) * ldx + k] * panel[size_t(k) * kPanel + j];
      out[size_t(r) * ldo + j] = acc + (bias ? bias[j] : 0.0f);
    }
}

void micro(int MR, int K, const float* x, int ldx, const float* panel, const float* bias, float* out, int ldo) {
  if (!cpu_has_avx2()) return micro_ref(MR, K, x, ldx, panel, bias, out, ldo);
  switch (MR) {
    case 6: return micro6_avx2(K, x, ldx, panel, bias, out, ldo);
    case 5: return micro_avx2<5>(K, x, ldx, panel, bias, out, ldo);
    case 4: return micro_avx2<4>(K, x, ldx, panel, bias, out, ldo);
    case 3: return micro_avx2<3>(K, x, ldx, panel, bias, out, ldo);
    case 2: return micro_avx2<2>(K, x, ldx, panel, bias, out, ldo);
    default: return micro_avx2<1>(K, x, ldx, panel, bias, out, ldo);
  }
}

// Output panels [p0, p1): every row block of x against each panel, which
// stays in L1 while the rows stream past it. Full panels are written straight
// into y; the last, partial one goes through a tile.
void panels(const float* x, int ldx, int M, int K, const float* Wp, const float* bias, int N, int p0, int p1,
            float* y, int ldy) {
  alignas(32) float tile[kRows * kPanel];
  for (int p = p0; p < p1; ++p) {
    const float* panel = Wp + size_t(p) * K * kPanel;
    const int n0 = p * kPanel, nn = std::min(kPanel, N - n0);
    for (int m = 0; m < M; m += kRows) {
      const int mr = std::min(kRows, M - m);
      float* dst = y + size_t(m) * ldy + n0;
      if (nn == kPanel) {
        micro(mr, K, x + size_t(m) * ldx, ldx, panel, bias ? bias + n0 : nullptr, dst, ldy);
        continue;
      }
      micro(mr, K, x + size_t(m) * ldx, ldx, panel, nullptr, tile, kPanel);
      for (int r = 0; r < mr; ++r)
        for (int j = 0; j < nn; ++j) dst[size_t(r) * ldy + j] = tile[r * kPanel + j] + (bias ? bias[n0 + j] : 0.0f);
    }
  }
}

}  // namespace

bool blas_only() {
  static const bool only = [] {
    const char* v = std::getenv("EVLA_KERNELS");
    return v && std::string(v) == "blas";
  }();
  return only;
}

size_t packed_floats(int N, int K) { return size_t((N + kPanel - 1) / kPanel) * kPanel * size_t(K); }

void pack_weights(const float* W, int N, int K, float* Wp) {
  // Panel by panel, k by k: each output line of 16 floats is written whole
  // while the panel's 16 source rows are read as 16 sequential streams.
  static const float zeros[1] = {0.0f};
  for (int n0 = 0; n0 < N; n0 += kPanel) {
    const float* rows[kPanel];
    size_t step[kPanel];
    for (int j = 0; j < kPanel; ++j) {
      const bool real = n0 + j < N;  // padding rows of the last panel read zeros
      rows[j] = real ? W + size_t(n0 + j) * K : zeros;
      step[j] = real ? 1 : 0;
    }
    float* dst = Wp + size_t(n0) * K;
    for (int k = 0; k < K; ++k, dst += kPanel)
      for (int j = 0; j < kPanel; ++j) dst[j] = rows[j][step[j] * size_t(k)];
  }
}

bool prefer_packed(int N, int K) {
  // Measured with bench/kernels (Google Benchmark, docs/performance.md): the
  // packed kernel wins while one panel (16 × K floats) and a block of input
  // rows stay in L1/L2; OpenBLAS's cache blocking wins beyond.
  return !blas_only() && cpu_has_avx2() && K <= kPackedMaxK && int64_t(N) * K <= kPackedMaxWeights;
}

void linear_packed(ThreadPool& pool, const float* x, int ldx, int M, int K, const float* Wp, const float* bias,
                   int N, float* y, int ldy) {
  const int P = (N + kPanel - 1) / kPanel;
  if (pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21))
    return panels(x, ldx, M, K, Wp, bias, N, 0, P, y, ldy);
  pool.parallel_for(P, 1, [&](int64_t p0, int64_t p1) {
    panels(x, ldx, M, K, Wp, bias, N, int(p0), int(p1), y, ldy);
  });
}

}  // namespace evla::kernels
