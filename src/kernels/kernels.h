// The compute kernels the models are built from. Each optimized kernel here
// has a plain reference twin in kernels/reference.h and a test comparing them.
// Layout: row-major activations [rows, features]; weights as PyTorch stores
// Linear weights, [out_features, in_features].
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace evla {
class ThreadPool;
}

namespace evla::kernels {

// Must be called once before the first linear(): pins the BLAS library to one
// thread, since evla splits work over its own pool.
void init_blas();

// y[M,N] = x[M,K] · W[N,K]ᵀ + bias[N] (bias may be null).
void linear(ThreadPool& pool, const float* x, int M, int K, const float* W, const float* bias,
            int N, float* y);
// The same with explicit row strides of x and y (e.g. reading one half of a
// fused gate/up activation in place).
void linear_strided(ThreadPool& pool, const float* x, int ldx, int M, int K, const float* W,
                    const float* bias, int N, float* y, int ldy);

// Weights packed once for the small-matrix kernel (gemm_packed.cpp): panels
// of kPackedPanel output features. prefer_packed() says, from measurement,
// for which shapes it beats BLAS (and EVLA_KERNELS=blas turns it off, for A/B
// runs); pack_weights() fills packed_floats(N, K).
inline constexpr int kPackedPanel = 16;
// EVLA_KERNELS=blas: every product through BLAS (evla's own GEMM kernels off),
// for A/B measurements of whole models.
bool blas_only();
inline constexpr int kPackedMaxK = 1024;
inline constexpr int64_t kPackedMaxWeights = int64_t(1) << 20;
bool prefer_packed(int N, int K);
// Which kernels this process runs, in words (packed fp32, BF16 products, int8,
// the OpenBLAS core): the same selection gives the same bits.
std::string selection();
size_t packed_floats(int N, int K);
void pack_weights(const float* W, int N, int K, float* Wp);
// y = x · Wᵀ + bias with W packed by pack_weights; strides as linear_strided.
void linear_packed(ThreadPool& pool, const float* x, int ldx, int M, int K, const float* Wp, const float* bias,
                   int N, float* y, int ldy);

// Weight-only int8: symmetric, one scale per output row, so
// W[n, :] ≈ scale[n] · Wq[n, :] with |Wq| ≤ 127 (scale = max|W[n, :]| / 127).
void quantize_int8_rows(const float* W, int N, int K, int8_t* Wq, float* scale);
// y[M,N] = x · (scale ⊙ Wq)ᵀ + bias, rows strided like linear_strided.
// Blocks of weight rows are dequantized into a per-thread panel that stays in
// cache and multiplied there: weights cost a quarter of the memory and
// bandwidth, activations stay fp32.
void linear_int8(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wq,
                 const float* scale, const float* bias, int N, float* y, int ldy);

// 16-bit weights used where they lie (bfloat16, or IEEE half when !bf16):
// blocks of rows widened to fp32 in a per-thread panel, then multiplied like
// linear_int8's, so a 16-bit model never holds an fp32 copy of its matrices.
void linear_16bit(ThreadPool& pool, const float* x, int ldx, int M, int K, const uint16_t* W, bool bf16,
                  const float* bias, int N, float* y, int ldy);
// n 16-bit floats widened to fp32 (exact).
void decode_16bit(const uint16_t* in, bool bf16, float* out, size_t n);

// BF16 products (gemm_bf16.cpp): y = bf16(x) · Wᵀ + bias for bfloat16 weights
// W [N, K] used where they lie, activations rounded to bfloat16 (nearest
// even), products summed in fp32 — the arithmetic of a BF16 model in PyTorch.
// With AVX-512 BF16 (prefer_bf16_dot()) vdpbf16ps does it at twice the fp32
// FMA rate; elsewhere the rounded activations go through linear_16bit, which
// gives the same numbers up to the order of the sums. Rows strided like
// linear_strided.
bool cpu_has_avx512bf16();
bool prefer_bf16_dot();  // AVX-512 BF16 here and EVLA_KERNELS=blas not set
void linear_bf16(ThreadPool& pool, const float* x, int ldx, int M, int K, const uint16_t* W, const float* bias,
                 int N, float* y, int ldy);
// One float rounded to bfloat16, nearest even (NaN stays NaN).
uint16_t bf16_round(float f);

// Int8 layers in integer arithmetic (gemm_int8_dynamic.cpp): the int8 weights
// of quantize_int8_rows, packed once with their column sums (pack_int8_dynamic
// fills int8_dynamic_packed_bytes(N, K) bytes), times activations quantized
// per row at each call to 7-bit codes with a zero point, summed exactly in
// int32. Needs AVX2 (cpu_has_avx2()); otherwise linear_int8 serves int8 layers.
// True where that kernel runs (AVX2) and EVLA_KERNELS=blas does not ask for
// BLAS products only.
bool prefer_int8_dynamic();
size_t int8_dynamic_packed_bytes(int N, int K);
void pack_int8_dynamic(const int8_t* Wq, int N, int K, int8_t* Wp);
// y ≈ x · (scale ⊙ Wq)ᵀ + bias; strides as linear_strided.
void linear_int8_dynamic(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wp,
                         const float* scale, const float* bias, int N, float* y, int ldy);
// Its instruction sets, which give the same bits: AVX2 (vpmaddubsw) and
// AVX-512 VNNI (vpdpbusd). int8_isa() is the best this CPU has, capped at
// AVX2 by EVLA_KERNELS=avx2 (for A/B runs); the overload taking one runs that
// path (std::invalid_argument where the CPU lacks it), for tests and benchmarks.
enum class Int8Isa { Avx2, Avx512Vnni };
bool cpu_has_avx512vnni();
Int8Isa int8_isa();
// What int8 layers run on here, in words: "integer kernel, AVX-512 VNNI",
// "integer kernel, AVX2" or "weight-only (dequantized to fp32)".
const char* int8_kernel_name();
void linear_int8_dynamic(Int8Isa isa, ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wp,
                         const float* scale, const float* bias, int N, float* y, int ldy);

// Int8 layers on AVX-512 VNNI from plain row-major codes: the codes of
// quantize_int8_rows used where they lie (a plan's derived codes or an int8
// checkpoint's mapped file). Each 16-feature panel is packed on the fly into
// a per-thread buffer and run by linear_int8_dynamic's VNNI micro-kernel, on
// activations quantized per row to full 8-bit codes (vpdpbusd does not
// saturate, unlike AVX2's vpmaddubsw); integer sums exact, so the result is
// ref::linear_int8_rows's bit for bit. K ≤ kInt8RowsMaxK keeps every int32
// sum in range. std::invalid_argument where the CPU lacks AVX-512 VNNI.
inline constexpr int kInt8RowsMaxK = 65536;
bool prefer_int8_rows();  // AVX-512 VNNI here, and neither EVLA_KERNELS=avx2 nor =blas
void linear_int8_rows(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wq, const float* scale,
                      const float* bias, int N, float* y, int ldy);

// Multi-head attention. q: Tq rows of Hq·hd; k, v: Tk rows of Hkv·hd (Hq a
// multiple of Hkv: grouped-query); out: Tq rows of Hq·hd. Each operand has its
// own row stride (ld*), so q, k and v can be read straight out of a fused qkv
// projection. With causal, query i (at absolute position q_offset + i) sees
// keys 0 … q_offset + i. scale multiplies q·k. scratch needs
// attention_scratch_floats() floats.
struct AttentionShape {
  int Tq, Tk, Hq, Hkv, hd;
  int ldq, ldk, ldv, ldo;
  bool causal = false;
  int q_offset = 0;
  float scale = 1.0f;
};
void attention(ThreadPool& pool, const AttentionShape& a, const float* q, const float* k,
               const float* v, float* out, float* scratch);
size_t attention_scratch_floats(ThreadPool& pool, int Tq, int Tk);

// A row stride (in floats) for an output of `n` columns that a kernel writes
// a few columns at a time down many rows: n itself, unless rows n·4 bytes
// apart would all fall in the same L1 sets (a multiple of 4 KiB), which
// halves the speed of the BF16 kernel; then a little more.
inline int unaliased_stride(int n) { return n % 1024 == 0 ? n + 16 : n; }

// Row-wise normalisations, in place allowed (y may equal x).
void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps,
                float* y);
void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y);

// Element-wise, in place.
void gelu_erf(float* x, size_t n);
void gelu_tanh(float* x, size_t n);
void silu(float* x, size_t n);
// x ← e^(x − max x) / Σ e^(x − max x) (one row)
void softmax(float* x, size_t n);
// gate[i] = silu(gate[i]) * up[i]
void swiglu(float* gate, const float* up, size_t n);
// y += x
void add(float* y, const float* x, size_t n);
// y[i] += scale[i % D] * x[i]  (LayerScale residual)
void add_scaled(float* y, const float* x, const float* scale, int M, int D);

// Rotary embedding, rotate-half convention (HF Llama): x is [T, H·hd], each
// head's pairs (j, j + hd/2) rotated by position·theta^(−2j/hd).
void rope(float* x, int T, int H, int hd, const int* positions, float theta);
// The same in two steps, so one table serves q and k of every layer:
// cos/sin are T × hd/2.
void rope_tables(const int* positions, int T, int hd, float theta, float* cos, float* sin);
// x rows have stride ld (H·hd when packed).
void rope_apply(float* x, int ld, int T, int H, int hd, const float* cos, const float* sin);

}  // namespace evla::kernels
