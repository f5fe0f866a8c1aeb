// Plain, obviously-correct versions of the optimized kernels in kernels.h.
// They define the semantics; tests compare every optimized kernel to them.
#pragma once
#include "kernels/kernels.h"

namespace evla::kernels::ref {

void linear(const float* x, int M, int K, const float* W, const float* bias, int N, float* y);
// Dequantizes every weight and multiplies in double.
void linear_int8(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias,
                 int N, float* y);
// bfloat16 (or IEEE half when !bf16) weights widened exactly, then multiplied in double.
void linear_16bit(const float* x, int M, int K, const uint16_t* W, bool bf16, const float* bias, int N, float* y);
// Activations rounded to bfloat16 (kernels::bf16_round), bfloat16 weights,
// products summed in double.
void linear_bf16(const float* x, int M, int K, const uint16_t* W, const float* bias, int N, float* y);
// Each row of x quantized to 7-bit codes with a zero point (the steps are
// spelled out in reference.cpp), integer products summed exactly, then one
// fma per output: float(Σ q·w − z·Σ w) · (row scale · scale[n]) + bias[n].
void linear_int8_dynamic(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias,
                         int N, float* y);
// The same with full 8-bit codes (255 steps): linear_int8_rows.
void linear_int8_rows(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias, int N,
                      float* y);
void attention(const AttentionShape& a, const float* q, const float* k, const float* v, float* out);

}  // namespace evla::kernels::ref
