// Int8 layers in integer arithmetic ("dynamic" quantization): int8 weights
// (one scale per output feature, quantize_int8_rows) times activations
// quantized per row at each call to unsigned 7-bit codes with a zero point,
// multiplied with AVX2's vpmaddubsw (u8 × s8, adjacent pairs summed to int16)
// and vpmaddwd (pairs of those summed to int32), accumulated exactly in int32.
//
// Where the CPU has AVX-512 VNNI (Zen 4, Ice Lake and later), vpdpbusd does
// the u8 × s8 products and their sums into int32 in one instruction over a
// whole 16-feature panel; the codes and the int32 sums are the same, so both
// paths give the same bits (EVLA_KERNELS=avx2 keeps the AVX2 one, for A/B).
//
// Why this and not the alternatives, measured on a Zen 3 (AVX2 only):
// 4 rows × 16 columns × 4 k per step cost 85 multiply-adds per ns in a bare
// instruction loop, against 41 for fp32 FMA and 46 for int16 × int16
// (vpmaddwd + vpaddd per 16 products, plus twice the broadcasts).
// Why 7-bit activations: vpmaddubsw saturates its int16 pair sums, and
// 127 · 127 · 2 < 32767 while 255 · 127 · 2 is not (PyTorch's x86 backend
// reduces the activation range for the same reason).
//
// Per row: lo = min(x, 0), hi = max(x, 0), s = (hi − lo) / 127, zero point
// z = round(−lo / s), q = clamp(round(x / s) + z, 0, 127), so x ≈ s · (q − z).
// Output: y[m, n] = float(Σ_k q·w − z_m · Σ_k w[n, k]) · (s_m · scale[n]) + b.
//
// Layout: weights in panels of 16 output features with k in groups of four
// (what one vpmaddubsw + vpmaddwd lane sums): W[p·16 + j][4i + t] at byte
// ((p·K4 + i)·16 + j)·4 + t, K4 = ⌈K/4⌉, zero-padded; then the column sums
// Σ_k W[n][k] as int32, 16 per panel.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/vec_math.h"

#define EVLA_AVX2 __attribute__((target("avx2,fma")))
#define EVLA_VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

namespace evla::kernels {

namespace {

constexpr int kPanel = kPackedPanel;
constexpr int kRows = 4;
constexpr int kGroup = 4;  // k values per int32 lane

int groups(int K) { return (K + kGroup - 1) / kGroup; }
size_t panel_bytes(int K) { return size_t(groups(K)) * kGroup * kPanel; }

struct RowQuant {
  float scale;
  int zero;
};

// The per-row quantizer (ref::linear_int8_dynamic spells out the same steps).
// A finite row spanning more than FLT_MAX overflows hi − lo; hi/127 − lo/127
// does not. A row holding NaN gets a NaN scale, so its outputs are NaN as they
// would be in fp32 instead of silently finite.
// levels: the largest code, 127 (7-bit) or 255 (8-bit, linear_int8_rows).
RowQuant row_quant(float lo, float hi, bool has_nan, int levels = 127) {
  if (has_nan) return {std::numeric_limits<float>::quiet_NaN(), 0};
  const float L = float(levels);
  float s = (hi - lo) / L;
  if (std::isinf(s)) s = hi / L - lo / L;
  if (!(s > 0)) return {1.0f, 0};  // an all-zero row
  return {s, int(std::clamp(std::lrint(-lo / s), 0L, long(levels)))};
}

EVLA_AVX2 inline __m256i group_of(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// acc += Σ of each lane's four u8 × s8 products (vpmaddubsw, then vpmaddwd by
// ones). In asm so the sum stays in its register: with intrinsics GCC 12
// adds into a fresh one and copies it back, a move per product that made an
// earlier kernel dispatch-bound.
EVLA_AVX2 inline void dot4_into(__m256i& acc, __m256i v, __m256i w, __m256i ones) {
  __m256i t;
  asm("vpmaddubsw %2, %3, %1\n\t"
      "vpmaddwd %4, %1, %1\n\t"
      "vpaddd %1, %0, %0"
      : "+x"(acc), "=&x"(t)
      : "x"(w), "x"(v), "x"(ones));
}

// out[0..15] = float(acc − z · colsum) · (s · scale[0..15]) + bias[0..15],
// rounded as ref::linear_int8_dynamic rounds (one fma).
EVLA_AVX2 inline void store_row(float* out, RowQuant q, const int32_t* colsum, const float* sw, const float* bias,
                                __m256i lo, __m256i hi) {
  const __m256i z = _mm256_set1_epi32(q.zero);
  const __m256 f = _mm256_set1_ps(q.scale);
  const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum));
  const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + 8));
  lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(z, c0));
  hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(z, c1));
  _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(f, _mm256_loadu_ps(sw)),
                                        _mm256_loadu_ps(bias)));
  _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(f, _mm256_loadu_ps(sw + 8)),
                                            _mm256_loadu_ps(bias + 8)));
}

// Row blocks shorter than four (the tail of M).
template <int MR>
EVLA_AVX2 void micro_avx2(int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                          const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
  for (int i = 0; i < K4; ++i, panel += kGroup * kPanel) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + 32));
    for (int r = 0; r < MR; ++r) {
      const __m256i v = group_of(xq + size_t(r) * ldq + kGroup * i);
      dot4_into(lo[r], v, w0, ones), dot4_into(hi[r], v, w1, ones);
    }
  }
  for (int r = 0; r < MR; ++r) store_row(out + size_t(r) * ldo, rq[r], colsum, sw, bias, lo[r], hi[r]);
}

// The full block, one k group per step, all in asm for the reason above.
EVLA_AVX2 void micro4_avx2(int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                           const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a0 = _mm256_setzero_si256(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
  const uint8_t *x0 = xq, *x1 = xq + ldq, *x2 = xq + 2 * size_t(ldq), *x3 = xq + 3 * size_t(ldq);
#define EVLA_DOT4(a, b)                                         \
  "vpmaddubsw %[w0], %[v], %[t]\n\t"                            \
  "vpmaddwd %[ones], %[t], %[t]\n\t"                            \
  "vpaddd %[t], %[" a "], %[" a "]\n\t"                         \
  "vpmaddubsw %[w1], %[v], %[t]\n\t"                            \
  "vpmaddwd %[ones], %[t], %[t]\n\t"                            \
  "vpaddd %[t], %[" b "], %[" b "]\n\t"
  for (int i = 0; i < K4; ++i, panel += kGroup * kPanel) {
    __m256i w0, w1, v, t;
    asm("vmovdqu (%[p]), %[w0]\n\t"
        "vmovdqu 32(%[p]), %[w1]\n\t"
        "vpbroadcastd (%[x0]), %[v]\n\t" EVLA_DOT4("a0", "b0")
        "vpbroadcastd (%[x1]), %[v]\n\t" EVLA_DOT4("a1", "b1")
        "vpbroadcastd (%[x2]), %[v]\n\t" EVLA_DOT4("a2", "b2")
        "vpbroadcastd (%[x3]), %[v]\n\t" EVLA_DOT4("a3", "b3")
        : [a0] "+x"(a0), [b0] "+x"(b0), [a1] "+x"(a1), [b1] "+x"(b1), [a2] "+x"(a2), [b2] "+x"(b2),
          [a3] "+x"(a3), [b3] "+x"(b3), [w0] "=&x"(w0), [w1] "=&x"(w1), [v] "=&x"(v), [t] "=&x"(t)
        : [p] "r"(panel), [x0] "r"(x0 + kGroup * i), [x1] "r"(x1 + kGroup * i), [x2] "r"(x2 + kGroup * i),
          [x3] "r"(x3 + kGroup * i), [ones] "x"(ones)
        : "memory");
  }
#undef EVLA_DOT4
  store_row(out, rq[0], colsum, sw, bias, a0, b0);
  store_row(out + ldo, rq[1], colsum, sw, bias, a1, b1);
  store_row(out + 2 * size_t(ldo), rq[2], colsum, sw, bias, a2, b2);
  store_row(out + 3 * size_t(ldo), rq[3], colsum, sw, bias, a3, b3);
}

// AVX-512 VNNI: one 64-byte load is a panel's 16 features × 4 k, and one
// vpdpbusd adds a row's four products per feature into its int32 sums. Eight
// rows per block: eight independent sums cover vpdpbusd's latency.
constexpr int kRowsVnni = 8;

EVLA_VNNI inline void store_row_vnni(float* out, RowQuant q, const int32_t* colsum, const float* sw,
                                     const float* bias, __m512i acc) {
  acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(q.zero), _mm512_loadu_si512(colsum)));
  const __m512 f = _mm512_mul_ps(_mm512_set1_ps(q.scale), _mm512_loadu_ps(sw));  // as store_row: one fma
  // The masked form: GCC 12 warns about the unmasked one's undefined source.
  const __m512 sums = _mm512_maskz_cvtepi32_ps(0xFFFF, acc);
  _mm512_storeu_ps(out, _mm512_fmadd_ps(sums, f, _mm512_loadu_ps(bias)));
}

// Four codes of a row (one k group), broadcast to every lane.
EVLA_VNNI inline __m512i group_of_vnni(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

// Row blocks shorter than eight (the tail of M).
template <int MR>
EVLA_VNNI void micro_vnni(int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                          const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  __m512i acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_si512();
  for (int i = 0; i < K4; ++i, panel += kGroup * kPanel) {
    const __m512i w = _mm512_loadu_si512(panel);
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_dpbusd_epi32(acc[r], group_of_vnni(xq + size_t(r) * ldq + kGroup * i), w);
  }
  for (int r = 0; r < MR; ++r) store_row_vnni(out + size_t(r) * ldo, rq[r], colsum, sw, bias, acc[r]);
}

// The full block with eight named sums: GCC 12 keeps an array of them
// (micro_vnni's) on the stack, a load and a store around every vpdpbusd.
EVLA_VNNI void micro8_vnni(int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                           const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const size_t ld = size_t(ldq);
  for (int i = 0; i < K4; ++i, panel += kGroup * kPanel) {
    const __m512i w = _mm512_loadu_si512(panel);
    const uint8_t* x = xq + kGroup * i;
    a0 = _mm512_dpbusd_epi32(a0, group_of_vnni(x), w);
    a1 = _mm512_dpbusd_epi32(a1, group_of_vnni(x + ld), w);
    a2 = _mm512_dpbusd_epi32(a2, group_of_vnni(x + 2 * ld), w);
    a3 = _mm512_dpbusd_epi32(a3, group_of_vnni(x + 3 * ld), w);
    a4 = _mm512_dpbusd_epi32(a4, group_of_vnni(x + 4 * ld), w);
    a5 = _mm512_dpbusd_epi32(a5, group_of_vnni(x + 5 * ld), w);
    a6 = _mm512_dpbusd_epi32(a6, group_of_vnni(x + 6 * ld), w);
    a7 = _mm512_dpbusd_epi32(a7, group_of_vnni(x + 7 * ld), w);
  }
  const __m512i acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  for (int r = 0; r < 8; ++r) store_row_vnni(out + size_t(r) * ldo, rq[r], colsum, sw, bias, acc[r]);
}

void micro_vnni_rows(int MR, int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                     const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  switch (MR) {
    case 8: return micro8_vnni(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 7: return micro_vnni<7>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 6: return micro_vnni<6>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 5: return micro_vnni<5>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 4: return micro_vnni<4>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 3: return micro_vnni<3>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 2: return micro_vnni<2>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    default: return micro_vnni<1>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
  }
}

void micro(int MR, int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
           const int32_t* colsum, const float* sw, const float* bias, float* out, int ldo) {
  switch (MR) {
    case 4: return micro4_avx2(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 3: return micro_avx2<3>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    case 2: return micro_avx2<2>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
    default: return micro_avx2<1>(K4, xq, ldq, rq, panel, colsum, sw, bias, out, ldo);
  }
}

// Rows [m0, m1) of x to codes, each padded with zeros to whole groups (the
// padded weights are zero, so the pad value does not matter).
EVLA_AVX2 void quantize_rows_avx2(const float* x, int ldx, int m0, int m1, int K, uint8_t* xq, int ldq,
                                  RowQuant* rq) {
  for (int m = m0; m < m1; ++m) {
    const float* row = x + size_t(m) * ldx;
    // min/max with the new value first skip NaN, as std::min/max below do.
    __m256 vlo = _mm256_setzero_ps(), vhi = vlo, vnan = vlo;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256 v = _mm256_loadu_ps(row + k);
      vlo = _mm256_min_ps(v, vlo), vhi = _mm256_max_ps(v, vhi);
      vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    alignas(32) float l8[8], h8[8];
    _mm256_store_ps(l8, vlo), _mm256_store_ps(h8, vhi);
    float lo = 0, hi = 0;
    bool has_nan = _mm256_movemask_ps(vnan) != 0;
    for (int j = 0; j < 8; ++j) lo = std::min(lo, l8[j]), hi = std::max(hi, h8[j]);
    for (; k < K; ++k) lo = std::min(lo, row[k]), hi = std::max(hi, row[k]), has_nan |= std::isnan(row[k]);
    const RowQuant q = rq[m] = row_quant(lo, hi, has_nan);
    const float inv = 1.0f / q.scale;
    uint8_t* out = xq + size_t(m) * ldq;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i z = _mm256_set1_epi32(q.zero);
    k = 0;
    for (; k + 32 <= K; k += 32) {
      __m256i c[4];
      for (int j = 0; j < 4; ++j)
        c[j] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k + 8 * j), vinv)), z);
      // packs saturate to [0, 255] and work within 128-bit lanes; the min
      // clamps to 127 and the permute restores k order.
      const __m256i w = _mm256_packs_epi32(c[0], c[1]), w2 = _mm256_packs_epi32(c[2], c[3]);
      __m256i b = _mm256_packus_epi16(w, w2);
      b = _mm256_min_epu8(b, _mm256_set1_epi8(127));
      b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), b);
    }
    for (; k < K; ++k) out[k] = uint8_t(std::clamp(std::lrint(row[k] * inv) + q.zero, 0L, 127L));
    for (; k < ldq; ++k) out[k] = 0;
  }
}

// Output features [16p, 16p + 16) of every row, from one packed panel and its
// column sums.
void panel_rows(Int8Isa isa, int M, int K, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* panel,
                const int32_t* colsum, const float* scale, const float* bias, int N, int p, float* y, int ldy) {
  const bool vnni = isa == Int8Isa::Avx512Vnni;
  const int rows = vnni ? kRowsVnni : kRows;
  alignas(64) float tile[kRowsVnni * kPanel];
  alignas(32) float sw[kPanel], b[kPanel];
  const int K4 = groups(K);
  const int n0 = p * kPanel, nn = std::min(kPanel, N - n0);
  for (int j = 0; j < kPanel; ++j) {  // zero-padded past N
    sw[j] = j < nn ? scale[n0 + j] : 0.0f;
    b[j] = j < nn && bias ? bias[n0 + j] : 0.0f;
  }
  for (int m = 0; m < M; m += rows) {
    const int mr = std::min(rows, M - m);
    const uint8_t* xm = xq + size_t(m) * ldq;
    float* dst = y + size_t(m) * ldy + n0;
    auto run = vnni ? micro_vnni_rows : micro;
    if (nn == kPanel) {
      run(mr, K4, xm, ldq, rq + m, panel, colsum, sw, b, dst, ldy);
      continue;
    }
    run(mr, K4, xm, ldq, rq + m, panel, colsum, sw, b, tile, kPanel);
    for (int r = 0; r < mr; ++r) std::copy_n(tile + r * kPanel, nn, dst + size_t(r) * ldy);
  }
}

void panels(Int8Isa isa, int M, int K, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* Wp,
            const float* scale, const float* bias, int N, int p0, int p1, float* y, int ldy) {
  const int P = (N + kPanel - 1) / kPanel;
  const int32_t* colsums = reinterpret_cast<const int32_t*>(Wp + P * panel_bytes(K));
  for (int p = p0; p < p1; ++p)
    panel_rows(isa, M, K, xq, ldq, rq, Wp + p * panel_bytes(K), colsums + p * kPanel, scale, bias, N, p, y, ldy);
}

// Rows [m0, m1) of x to full 8-bit codes (AVX-512; linear_int8_rows), zero-
// padded to ldq, with the same steps as quantize_rows_avx2.
EVLA_VNNI void quantize_rows8(const float* x, int ldx, int m0, int m1, int K, uint8_t* xq, int ldq, RowQuant* rq) {
  for (int m = m0; m < m1; ++m) {
    const float* row = x + size_t(m) * ldx;
    __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
    __mmask16 nan = 0;
    int k = 0;
    // The masked forms throughout: GCC 12 warns about the unmasked ones'
    // undefined sources (as in store_row_vnni).
    constexpr __mmask16 all = 0xFFFF;
    for (; k + 16 <= K; k += 16) {
      const __m512 v = _mm512_loadu_ps(row + k);
      vlo = _mm512_maskz_min_ps(all, v, vlo), vhi = _mm512_maskz_max_ps(all, v, vhi);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    alignas(64) float l16[16], h16[16];
    _mm512_store_ps(l16, vlo), _mm512_store_ps(h16, vhi);
    float lo = 0, hi = 0;
    for (int j = 0; j < 16; ++j) lo = std::min(lo, l16[j]), hi = std::max(hi, h16[j]);
    bool has_nan = nan != 0;
    for (; k < K; ++k) lo = std::min(lo, row[k]), hi = std::max(hi, row[k]), has_nan |= std::isnan(row[k]);
    const RowQuant q = rq[m] = row_quant(lo, hi, has_nan, 255);
    const __m512 vinv = _mm512_set1_ps(1.0f / q.scale);
    const __m512i z = _mm512_set1_epi32(q.zero), zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
    uint8_t* out = xq + size_t(m) * ldq;
    for (k = 0; k + 16 <= K; k += 16) {
      // cvtps rounds to nearest even, as lrint does in the default mode.
      __m512i c = _mm512_add_epi32(_mm512_maskz_cvtps_epi32(all, _mm512_mul_ps(_mm512_loadu_ps(row + k), vinv)), z);
      c = _mm512_maskz_min_epi32(all, _mm512_maskz_max_epi32(all, c, zero), top);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_maskz_cvtepi32_epi8(all, c));
    }
    const float inv = 1.0f / q.scale;
    for (; k < K; ++k) out[k] = uint8_t(std::clamp(std::lrint(row[k] * inv) + q.zero, 0L, 255L));
    for (; k < ldq; ++k) out[k] = 0;
  }
}

// One panel of pack_int8_dynamic's layout: rows [n0, n0 + 16) of Wq (zeros
// past N), k in groups of four, and each row's sum of codes.
void pack_panel(const int8_t* Wq, int N, int K, int n0, int8_t* panel, int32_t* colsum) {
  const int K4 = groups(K), nn = std::min(kPanel, N - n0);
  for (int j = 0; j < kPanel; ++j) {
    int32_t sum = 0;
    const int8_t* row = Wq + size_t(n0 + j) * K;
    for (int i = 0; i < K4; ++i) {
      int8_t* dst = panel + (size_t(i) * kPanel + j) * kGroup;
      for (int t = 0; t < kGroup; ++t) {
        const int k = kGroup * i + t;
        dst[t] = j < nn && k < K ? row[k] : 0;
        sum += dst[t];
      }
    }
    colsum[j] = sum;
  }
}

// The calling thread's buffers for M rows of codes (ldq apart) and their
// quantization, grown once and then reused; the workers reach them through
// the pointers (a lambda naming a thread_local would see the worker's own).
std::pair<uint8_t*, RowQuant*> row_scratch(int M, int ldq) {
  thread_local std::vector<uint8_t> codes;
  thread_local std::vector<RowQuant> quant;
  if (codes.size() < size_t(M) * ldq) codes.resize(size_t(M) * ldq);
  if (quant.size() < size_t(M)) quant.resize(size_t(M));
  return {codes.data(), quant.data()};
}

}  // namespace

bool prefer_int8_dynamic() { return cpu_has_avx2() && !blas_only(); }

bool cpu_has_avx512vnni() {
  // The VNNI path quantizes its rows with the AVX2 code.
  static const bool has = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return has;
}

Int8Isa int8_isa() {
  static const Int8Isa isa = [] {
    const char* k = std::getenv("EVLA_KERNELS");
    const bool avx2_only = k && std::strcmp(k, "avx2") == 0;
    return cpu_has_avx512vnni() && !avx2_only ? Int8Isa::Avx512Vnni : Int8Isa::Avx2;
  }();
  return isa;
}

const char* int8_kernel_name() {
  if (!prefer_int8_dynamic()) return "weight-only (dequantized to fp32)";
  return int8_isa() == Int8Isa::Avx512Vnni ? "integer kernel, AVX-512 VNNI, 8-bit activations"
                                           : "integer kernel, AVX2, 7-bit activations";
}

size_t int8_dynamic_packed_bytes(int N, int K) {
  const size_t P = size_t(N + kPanel - 1) / kPanel;
  return P * panel_bytes(K) + P * kPanel * sizeof(int32_t);
}

void pack_int8_dynamic(const int8_t* Wq, int N, int K, int8_t* Wp) {
  const int P = (N + kPanel - 1) / kPanel;
  int32_t* colsums = reinterpret_cast<int32_t*>(Wp + P * panel_bytes(K));
  for (int p = 0; p < P; ++p) {
    int32_t sums[kPanel];
    pack_panel(Wq, N, K, p * kPanel, Wp + p * panel_bytes(K), sums);
    std::memcpy(colsums + p * kPanel, sums, sizeof sums);
  }
}

void linear_int8_dynamic(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wp,
                         const float* scale, const float* bias, int N, float* y, int ldy) {
  linear_int8_dynamic(int8_isa(), pool, x, ldx, M, K, Wp, scale, bias, N, y, ldy);
}

void linear_int8_dynamic(Int8Isa isa, ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wp,
                         const float* scale, const float* bias, int N, float* y, int ldy) {
  if (isa == Int8Isa::Avx512Vnni && !cpu_has_avx512vnni())
    throw std::invalid_argument("linear_int8_dynamic: this CPU has no AVX-512 VNNI");
  if (!cpu_has_avx2()) throw std::invalid_argument("linear_int8_dynamic: this CPU has no AVX2");
  const int ldq = kGroup * groups(K);
  const auto [xq, rq] = row_scratch(M, ldq);
  const int P = (N + kPanel - 1) / kPanel;
  if (pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21)) {
    quantize_rows_avx2(x, ldx, 0, M, K, xq, ldq, rq);
    return panels(isa, M, K, xq, ldq, rq, Wp, scale, bias, N, 0, P, y, ldy);
  }
  pool.parallel_for(M, 16, [&](int64_t m0, int64_t m1) {
    quantize_rows_avx2(x, ldx, int(m0), int(m1), K, xq, ldq, rq);
  });
  pool.parallel_for(P, 1, [&](int64_t p0, int64_t p1) {
    panels(isa, M, K, xq, ldq, rq, Wp, scale, bias, N, int(p0), int(p1), y, ldy);
  });
}

namespace {

// pack_panel with AVX-512: one gather collects a group of four codes from each
// of the 16 rows, which is one 64-byte line of the panel, and one vpdpbusd by
// ones adds the line into the rows' sums. The last, partial group of a row
// (K not a multiple of 4) and rows past N are left to the plain loop's rules:
// masked lanes are not read, so nothing past the matrix is touched.
EVLA_VNNI void pack_panel_vnni(const int8_t* Wq, int N, int K, int n0, int8_t* panel, int32_t* colsum) {
  const int nn = std::min(kPanel, N - n0), full = K / kGroup, K4 = groups(K);
  const __mmask16 rows = __mmask16((1u << nn) - 1);
  const __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(K));
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i sums = _mm512_setzero_si512();
  const int8_t* base = Wq + size_t(n0) * K;
  for (int i = 0; i < full; ++i) {
    const __m512i line = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rows, offsets, base + kGroup * i, 1);
    _mm512_storeu_si512(panel + size_t(i) * kGroup * kPanel, line);
    sums = _mm512_dpbusd_epi32(sums, ones, line);
  }
  _mm512_storeu_si512(colsum, sums);
  for (int i = full; i < K4; ++i)  // the partial group
    for (int j = 0; j < kPanel; ++j)
      for (int t = 0; t < kGroup; ++t) {
        const int k = kGroup * i + t;
        const int8_t w = j < nn && k < K ? base[size_t(j) * K + k] : 0;
        panel[(size_t(i) * kPanel + j) * kGroup + t] = w;
        colsum[j] += w;
      }
}

}  // namespace

namespace {

// linear_int8_rows's micro-kernel: MR ≤ 6 rows × a strip of four panels (64
// outputs) in 24 int32 sums. Per group of four k it loads the four panels'
// lines and broadcasts each row's codes once for all four, so the broadcasts
// (which take an FP pipe on Zen 4) are a sixth of the products instead of
// all of them as in micro8_vnni: ~1.25× its rate in a bare loop.
constexpr int kStripPanels = 4, kStripRows = 6;

template <int MR>
EVLA_VNNI void micro_strip(int K4, const uint8_t* xq, int ldq, const RowQuant* rq, const int8_t* strip, size_t pb,
                           const int32_t* colsum, const float* scale, const float* bias, float* out, int ldo) {
  __m512i acc[MR][kStripPanels];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kStripPanels; ++h) acc[r][h] = _mm512_setzero_si512();
  for (int i = 0; i < K4; ++i) {
    __m512i w[kStripPanels];
#pragma GCC unroll 4
    for (int h = 0; h < kStripPanels; ++h) w[h] = _mm512_loadu_si512(strip + h * pb + size_t(i) * kGroup * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i v = group_of_vnni(xq + size_t(r) * ldq + kGroup * i);
#pragma GCC unroll 4
      for (int h = 0; h < kStripPanels; ++h) acc[r][h] = _mm512_dpbusd_epi32(acc[r][h], v, w[h]);
    }
  }
  // The sums leave their registers through plain stores: handed to the
  // epilogue directly, GCC 12 keeps the whole array on the stack, a store
  // after every vpdpbusd, at half the rate.
  alignas(64) int32_t sums[MR][kStripPanels][kPanel];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int h = 0; h < kStripPanels; ++h) _mm512_store_si512(sums[r][h], acc[r][h]);
  static const float zeros[kStripPanels * kPanel] = {};
  if (!bias) bias = zeros;
  for (int r = 0; r < MR; ++r)
    for (int h = 0; h < kStripPanels; ++h)
      store_row_vnni(out + size_t(r) * ldo + h * kPanel, rq[r], colsum + h * kPanel, scale + h * kPanel,
                     bias + h * kPanel, _mm512_load_si512(sums[r][h]));
}

using StripFn = void (*)(int, const uint8_t*, int, const RowQuant*, const int8_t*, size_t, const int32_t*,
                         const float*, const float*, float*, int);
const StripFn kStripMicro[kStripRows] = {&micro_strip<1>, &micro_strip<2>, &micro_strip<3>,
                                         &micro_strip<4>, &micro_strip<5>, &micro_strip<6>};

}  // namespace

bool prefer_int8_rows() { return int8_isa() == Int8Isa::Avx512Vnni && !blas_only(); }  // int8_isa checks the CPU

void linear_int8_rows(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wq, const float* scale,
                      const float* bias, int N, float* y, int ldy) {
  if (!cpu_has_avx512vnni()) throw std::invalid_argument("linear_int8_rows: this CPU has no AVX-512 VNNI");
  // An int32 sum of K products of at most 255 · 127 must not overflow.
  if (K > kInt8RowsMaxK) throw std::invalid_argument("linear_int8_rows: K above " + std::to_string(kInt8RowsMaxK));
  const int ldq = kGroup * groups(K);
  const auto [xq, rq] = row_scratch(M, ldq);
  // Strips of four panels are packed as they are needed into a buffer of the
  // worker's that stays in L2 while every row passes it: the weights are read
  // once, in place. Full strips run the 6-row × 64-output micro-kernel; the
  // strip at the edge of N, panel by panel.
  auto run = [&](int64_t s0, int64_t s1) {
    thread_local std::vector<int8_t> strip;
    const size_t pb = panel_bytes(K);
    if (strip.size() < kStripPanels * pb) strip.resize(kStripPanels * pb);
    int32_t colsum[kStripPanels * kPanel];
    for (int s = int(s0); s < int(s1); ++s) {
      const int p0 = s * kStripPanels, n0 = p0 * kPanel;
      const int np = std::min(kStripPanels, (N - n0 + kPanel - 1) / kPanel);
      for (int j = 0; j < np; ++j)
        pack_panel_vnni(Wq, N, K, n0 + j * kPanel, strip.data() + j * pb, colsum + j * kPanel);
      if (n0 + kStripPanels * kPanel <= N) {
        for (int m = 0; m < M; m += kStripRows) {
          const int mr = std::min(kStripRows, M - m);
          kStripMicro[size_t(mr - 1)](groups(K), xq + size_t(m) * ldq, ldq, rq + m, strip.data(), pb, colsum,
                                      scale + n0, bias ? bias + n0 : nullptr, y + size_t(m) * ldy + n0, ldy);
        }
        continue;
      }
      for (int j = 0; j < np; ++j)
        panel_rows(Int8Isa::Avx512Vnni, M, K, xq, ldq, rq, strip.data() + j * pb, colsum + j * kPanel, scale, bias,
                   N, p0 + j, y, ldy);
    }
  };
  const int P = (N + kPanel - 1) / kPanel, S = (P + kStripPanels - 1) / kStripPanels;
  if (pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21)) {
    quantize_rows8(x, ldx, 0, M, K, xq, ldq, rq);
    return run(0, S);
  }
  pool.parallel_for(M, 16, [&](int64_t m0, int64_t m1) { quantize_rows8(x, ldx, int(m0), int(m1), K, xq, ldq, rq); });
  pool.parallel_for(S, 1, run);
}

}  // namespace evla::kernels
