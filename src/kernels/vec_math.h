// Vectorised element-wise kernels and norms (AVX2 + FMA, chosen at run
// time), with the plain <cmath> loops of elementwise.cpp as their reference.
// Accuracy: exp ~1 ulp (Cephes polynomial), erf ≤ 1.5e-7 absolute
// (Abramowitz & Stegun 7.1.26).
#pragma once
#include <cstddef>
#include <cstdint>

namespace evla::kernels {

bool cpu_has_avx2();
bool cpu_has_f16c();

namespace avx2 {
void exp_inplace(float* x, size_t n);
// x ← e^(x − max x) / Σ e^(x − max x), in place.
void softmax(float* x, size_t n);
void gelu_erf(float* x, size_t n);
void gelu_tanh(float* x, size_t n);
void silu(float* x, size_t n);
void swiglu(float* gate, const float* up, size_t n);
// out[i] = scale · q[i]
void dequant_int8(const int8_t* q, float scale, float* out, size_t n);
// 16-bit floats widened to fp32 (exact): bfloat16, or IEEE half (F16C).
void decode_bf16(const uint16_t* in, float* out, size_t n);
void decode_f16(const uint16_t* in, float* out, size_t n);
// Row statistics in double (eight lanes of partial sums instead of one chain).
void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps, float* y);
void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y);
}  // namespace avx2

namespace ref {
void softmax(float* x, size_t n);
void gelu_erf(float* x, size_t n);
void gelu_tanh(float* x, size_t n);
void silu(float* x, size_t n);
void swiglu(float* gate, const float* up, size_t n);
void dequant_int8(const int8_t* q, float scale, float* out, size_t n);
void decode_bf16(const uint16_t* in, float* out, size_t n);
void decode_f16(const uint16_t* in, float* out, size_t n);
void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps, float* y);
void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y);
}  // namespace ref

}  // namespace evla::kernels
