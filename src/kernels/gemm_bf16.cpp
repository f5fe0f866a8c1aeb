// BF16 matrix products on bfloat16 weights used where they lie (row-major
// [N, K], as the checkpoint stores them): activations are rounded to bfloat16
// once per call, and AVX-512 BF16's vdpbf16ps multiplies pairs of them with
// pairs of weights, summing in fp32. Each instruction does 32 multiply-adds,
// twice an fp32 FMA's 16, which is the whole point on a compute-bound CPU.
//
// The weights cannot be repacked (that would copy a 13 GB model), so the
// micro-kernel works in dot-product form: a 4 × 6 tile of outputs keeps 24
// accumulators of 16 lanes each while it streams 4 activation rows and 6
// weight rows along k, and folds each accumulator's lanes into its output
// once per k-chunk. k is split into chunks whose activation block stays in
// L2 (and the six weight rows of the tile in L1) while every row of x passes.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

#define EVLA_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

namespace evla::kernels {

namespace {

constexpr int kTileRows = 4;  // activation rows per tile
constexpr int kTileCols = 6;  // weight rows (outputs) per tile
constexpr int kStep = 32;     // bfloat16 values per vector

int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Sums of four vectors' lanes: {Σa, Σb, Σc, Σd}.
EVLA_BF16 inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// One step of 32 k: acc[r][c] += xb[r][k..k+32) · w[c][k..k+32), weights
// masked (the activations are zero-padded, the weight rows are not).
template <int MR, int NR>
EVLA_BF16 __attribute__((always_inline)) inline void step(__m512 (&acc)[MR][NR], const uint16_t* xb, size_t ldxb,
                                                          const uint16_t* w, size_t K, int k, __mmask32 mask) {
  __m512bh xv[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) xv[r] = (__m512bh)_mm512_loadu_si512(xb + r * ldxb + k);
#pragma GCC unroll 8
  for (int c = 0; c < NR; ++c) {
    const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + c * K + k);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv[r], wv);
  }
}

// y[r][c] += Σ_{k in [k0, k1)} xb[r][k] · w[c][k] for r < MR, c < NR. xb rows
// are zero-padded to a multiple of kStep; w rows (stride K) are not, so the
// last step's weight loads are masked and never read past a row.
template <int MR, int NR>
EVLA_BF16 void tile(const uint16_t* xb, size_t ldxb, const uint16_t* w, size_t K, int k0, int k1, float* y,
                    int ldy) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
  int k = k0;
  for (; k + kStep <= k1; k += kStep) step(acc, xb, ldxb, w, K, k, ~__mmask32(0));
  if (k < k1) step(acc, xb, ldxb, w, K, k, __mmask32((1u << (k1 - k)) - 1));
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* out = y + size_t(r) * ldy;
    int c = 0;
    if constexpr (NR >= 4) {
      _mm_storeu_ps(out, _mm_add_ps(_mm_loadu_ps(out), sum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3])));
      c = 4;
    }
#pragma GCC unroll 8
    for (; c < NR; ++c) out[c] += _mm512_reduce_add_ps(acc[r][c]);
  }
}

using TileFn = void (*)(const uint16_t*, size_t, const uint16_t*, size_t, int, int, float*, int);

template <int MR, int... NR>
constexpr std::array<TileFn, sizeof...(NR)> tile_row(std::integer_sequence<int, NR...>) {
  return {&tile<MR, NR + 1>...};
}

// kTiles[MR - 1][NR - 1]: the tile for the edges of the output as well as its body.
const std::array<std::array<TileFn, kTileCols>, kTileRows> kTiles = {
    tile_row<1>(std::make_integer_sequence<int, kTileCols>{}), tile_row<2>(std::make_integer_sequence<int, kTileCols>{}),
    tile_row<3>(std::make_integer_sequence<int, kTileCols>{}), tile_row<4>(std::make_integer_sequence<int, kTileCols>{})};

// Rows of x rounded to bfloat16 (round to nearest even), zero-padded to ldxb.
EVLA_BF16 void round_rows_bf16(const float* x, int ldx, int M, int K, uint16_t* xb, int ldxb) {
  for (int m = 0; m < M; ++m) {
    const float* src = x + size_t(m) * ldx;
    uint16_t* dst = xb + size_t(m) * ldxb;
    int k = 0;
    for (; k + 16 <= K; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + k)));
    for (; k < K; ++k) dst[k] = bf16_round(src[k]);
    std::fill(dst + K, dst + ldxb, uint16_t(0));
  }
}

// Outputs [n0, n1) of every row, accumulated onto y.
void columns(const uint16_t* xb, int ldxb, int M, int K, int KC, const uint16_t* W, int n0, int n1, float* y,
             int ldy) {
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int k1 = std::min(K, k0 + KC);
    for (int n = n0; n < n1; n += kTileCols) {
      const int nr = std::min(kTileCols, n1 - n);
      const uint16_t* w = W + size_t(n) * K;
      for (int m = 0; m < M; m += kTileRows) {
        const int mr = std::min(kTileRows, M - m);
        kTiles[size_t(mr - 1)][size_t(nr - 1)](xb + size_t(m) * ldxb, size_t(ldxb), w, size_t(K), k0, k1,
                                               y + size_t(m) * ldy + n, ldy);
      }
    }
  }
}

}  // namespace

uint16_t bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

bool cpu_has_avx512bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  return has;
}

bool prefer_bf16_dot() { return cpu_has_avx512bf16() && !blas_only(); }

void linear_bf16(ThreadPool& pool, const float* x, int ldx, int M, int K, const uint16_t* W, const float* bias,
                 int N, float* y, int ldy) {
  // The caller's scratch, grown once; workers reach it through the pointer.
  thread_local std::vector<uint16_t> xb_store;
  thread_local std::vector<float> xr_store;
  if (!prefer_bf16_dot()) {
    // The same numbers without the instruction: activations rounded to
    // bfloat16 and widened back, then multiplied exactly (sums in fp32).
    xr_store.resize(size_t(M) * K);
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < K; ++k) {
        const uint32_t u = uint32_t(bf16_round(x[size_t(m) * ldx + k])) << 16;
        std::memcpy(&xr_store[size_t(m) * K + k], &u, sizeof u);
      }
    return linear_16bit(pool, xr_store.data(), K, M, K, W, true, bias, N, y, ldy);
  }
  const int ldxb = round_up(K, kStep);
  xb_store.resize(size_t(M) * ldxb);
  uint16_t* xb = xb_store.data();
  round_rows_bf16(x, ldx, M, K, xb, ldxb);
  for (int m = 0; m < M; ++m) {
    float* row = y + size_t(m) * ldy;
    bias ? std::copy_n(bias, N, row) : std::fill_n(row, N, 0.0f);
  }
  // k-chunks sized so the activation block (M × KC bfloat16) fills about half
  // of a 1 MB L2; fixed by the shape alone, so the sums (and the bits) do not
  // depend on the thread count.
  const int KC = std::clamp((1 << 18) / std::max(M, 1) / kStep * kStep, 256, ldxb);
  const int64_t tiles = (N + kTileCols - 1) / kTileCols;
  auto run = [&](int64_t t0, int64_t t1) {
    columns(xb, ldxb, M, K, KC, W, int(t0) * kTileCols, std::min(N, int(t1) * kTileCols), y, ldy);
  };
  if (pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21)) return run(0, tiles);
  pool.parallel_for(tiles, 4, run);
}

}  // namespace evla::kernels
