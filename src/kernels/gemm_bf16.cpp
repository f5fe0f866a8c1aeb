// BF16 matrix products on bfloat16 weights used where they lie (row-major
// [N, K], as the checkpoint stores them): activations are rounded to bfloat16
// once per call, and AVX-512 BF16's vdpbf16ps multiplies pairs of them with
// pairs of weights, summing in fp32. Each instruction does 32 multiply-adds,
// twice an fp32 FMA's 16, which is the whole point on a compute-bound CPU.
//
// The weights cannot be repacked (that would copy a 13 GB model), but the
// activations can: a call packs x once into lines of 16 rows, one 64-byte
// line per pair of k holding each row's two values. The micro-kernel then
// keeps a block of up to 64 rows (4 lines) × 6 outputs in 24 registers and,
// per pair of k, broadcasts each of the 6 outputs' two weights straight from
// its row of W and multiplies it into the 4 lines: 24 vdpbf16ps per 6
// broadcasts and 4 loads, with no horizontal sums (each lane is one row's
// output). Broadcasts take an FP pipe on Zen 4, so few of them per product
// matters (and vdpbf16ps's embedded {1to16} broadcast measured slower still):
// the loop alone runs at 99 % of the instruction's peak, the whole product
// at about 72 % (the line loads come from L2).
// Blocks of 64 rows of x stay in L2 while the weight rows stream past once
// per block; each output is one register lane summed over all of k in order,
// so the bits do not depend on the thread count.
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

constexpr int kLane = 16;      // rows per line
constexpr int kLines = 4;      // lines per block of rows
constexpr int kOutputs = 6;    // outputs per micro-kernel call
constexpr int kBlockRows = kLane * kLines;

// x rounded to bfloat16 (round to nearest even) and packed: line l, pair p is
// xp[(l·pairs + p)·16 + i] = (x[16l+i][2p], x[16l+i][2p+1]); rows past M and
// the k past K are zeros.
EVLA_BF16 void pack_rows(const float* x, int ldx, int M, int K, int pairs, uint32_t* xp) {
  const int lines = (M + kLane - 1) / kLane;
  for (int l = 0; l < lines; ++l)
    for (int i = 0; i < kLane; ++i) {
      const int m = l * kLane + i;
      uint32_t* dst = xp + size_t(l) * pairs * kLane + i;
      if (m >= M) {
        for (int p = 0; p < pairs; ++p) dst[size_t(p) * kLane] = 0;
        continue;
      }
      const float* src = x + size_t(m) * ldx;
      int p = 0;
      for (; 2 * p + 32 <= K; p += 16) {  // 32 values → 16 pairs, scattered to their lines
        const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 2 * p + 16), _mm512_loadu_ps(src + 2 * p));
        alignas(64) uint32_t tmp[16];
        _mm512_store_si512(tmp, v);
        for (int j = 0; j < 16; ++j) dst[size_t(p + j) * kLane] = tmp[j];
      }
      for (; p < pairs; ++p) {
        const uint32_t lo = bf16_round(src[2 * p]), hi = 2 * p + 1 < K ? bf16_round(src[2 * p + 1]) : 0;
        dst[size_t(p) * kLane] = lo | (hi << 16);
      }
    }
}

// The two weights of output row w at pair p as one broadcast dword; a last,
// odd k pairs with zero and reads nothing past the row.
inline uint32_t weight_pair(const uint16_t* w, int K, int p) {
  if (2 * p + 1 < K) {
    uint32_t v;
    std::memcpy(&v, w + 2 * p, sizeof v);
    return v;
  }
  return w[2 * p];
}

// y[r][c] = bias[c] + Σ_k x[r][k]·W[c][k] for the rows of `L` lines (m_rows of
// them real) and NR outputs; xp at the block's first line, W at the first
// output's row, y at (first row, first output).
template <int L, int NR>
EVLA_BF16 void micro(const uint32_t* xp, int pairs, const uint16_t* W, int K, int m_rows, const float* bias,
                     float* y, int ldy) {
  __m512 acc[L][NR];
#pragma GCC unroll 8
  for (int h = 0; h < L; ++h)
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) acc[h][c] = _mm512_setzero_ps();
  const size_t line = size_t(pairs) * kLane;
  const int full = K / 2;
  const char* w = reinterpret_cast<const char*>(W);
  const size_t row_bytes = size_t(K) * 2;
  for (int p = 0; p < full; ++p) {
    __m512bh b[NR];
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
      int32_t v;
      std::memcpy(&v, w + c * row_bytes + 4 * size_t(p), sizeof v);
      b[c] = (__m512bh)_mm512_set1_epi32(v);
    }
#pragma GCC unroll 8
    for (int h = 0; h < L; ++h) {
      const __m512bh a = (__m512bh)_mm512_loadu_si512(xp + h * line + size_t(p) * kLane);
#pragma GCC unroll 8
      for (int c = 0; c < NR; ++c) acc[h][c] = _mm512_dpbf16_ps(acc[h][c], a, b[c]);
    }
  }
  if (full * 2 < K) {  // the odd k
#pragma GCC unroll 8
    for (int h = 0; h < L; ++h) {
      const __m512bh a = (__m512bh)_mm512_loadu_si512(xp + h * line + size_t(full) * kLane);
#pragma GCC unroll 8
      for (int c = 0; c < NR; ++c)
        acc[h][c] = _mm512_dpbf16_ps(acc[h][c], a,
                                     (__m512bh)_mm512_set1_epi32(int32_t(weight_pair(W + c * size_t(K), K, full))));
    }
  }
  alignas(64) float out[kLane];
#pragma GCC unroll 8
  for (int h = 0; h < L; ++h)
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
      _mm512_store_ps(out, acc[h][c]);
      const float b0 = bias ? bias[c] : 0.0f;
      const int rows = std::min(kLane, m_rows - h * kLane);
      for (int i = 0; i < rows; ++i) y[size_t(h * kLane + i) * ldy + c] = out[i] + b0;
    }
}

using MicroFn = void (*)(const uint32_t*, int, const uint16_t*, int, int, const float*, float*, int);

template <int L, int... NR>
constexpr std::array<MicroFn, sizeof...(NR)> micro_row(std::integer_sequence<int, NR...>) {
  return {&micro<L, NR + 1>...};
}

// kMicro[lines − 1][outputs − 1]: the body and the edges of the output.
const std::array<std::array<MicroFn, kOutputs>, kLines> kMicro = {
    micro_row<1>(std::make_integer_sequence<int, kOutputs>{}), micro_row<2>(std::make_integer_sequence<int, kOutputs>{}),
    micro_row<3>(std::make_integer_sequence<int, kOutputs>{}), micro_row<4>(std::make_integer_sequence<int, kOutputs>{})};

// Outputs [n0, n1) of every row, a block of 64 rows at a time.
void columns(const uint32_t* xp, int pairs, int M, int K, const uint16_t* W, const float* bias, int n0, int n1,
             float* y, int ldy) {
  for (int m = 0; m < M; m += kBlockRows) {
    const int rows = std::min(kBlockRows, M - m), lines = (rows + kLane - 1) / kLane;
    const uint32_t* block = xp + size_t(m / kLane) * pairs * kLane;
    for (int n = n0; n < n1; n += kOutputs) {
      const int nr = std::min(kOutputs, n1 - n);
      kMicro[size_t(lines - 1)][size_t(nr - 1)](block, pairs, W + size_t(n) * K, K, rows, bias ? bias + n : nullptr,
                                                y + size_t(m) * ldy + n, ldy);
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
  thread_local std::vector<uint32_t> xp_store;
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
  const int pairs = (K + 1) / 2, lines = (M + kLane - 1) / kLane;
  xp_store.resize(size_t(lines) * pairs * kLane);
  uint32_t* xp = xp_store.data();
  const int64_t tiles = (N + kOutputs - 1) / kOutputs;
  auto run = [&](int64_t t0, int64_t t1) {
    columns(xp, pairs, M, K, W, bias, int(t0) * kOutputs, std::min(N, int(t1) * kOutputs), y, ldy);
  };
  if (pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21)) {
    pack_rows(x, ldx, M, K, pairs, xp);
    return run(0, tiles);
  }
  pool.parallel_for(lines, 1, [&](int64_t l0, int64_t l1) {
    const int m0 = int(l0) * kLane, m1 = std::min(M, int(l1) * kLane);
    pack_rows(x + size_t(m0) * ldx, ldx, m1 - m0, K, pairs, xp + size_t(l0) * pairs * kLane);
  });
  pool.parallel_for(tiles, 8, run);
}

}  // namespace evla::kernels
