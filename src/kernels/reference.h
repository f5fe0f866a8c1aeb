// Plain, obviously-correct versions of the optimized kernels in kernels.h.
// They define the semantics; tests compare every optimized kernel to them.
#pragma once
#include "kernels/kernels.h"

namespace evla::kernels::ref {

void linear(const float* x, int M, int K, const float* W, const float* bias, int N, float* y);
// Dequantizes every weight and multiplies in double.
void linear_int8(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias,
                 int N, float* y);
void attention(const AttentionShape& a, const float* q, const float* k, const float* v, float* out);

}  // namespace evla::kernels::ref
