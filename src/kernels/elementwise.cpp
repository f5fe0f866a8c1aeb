// Norms, activations and small element-wise ops. Written as plain loops the
// compiler vectorises; they are memory-bound next to the matrix products.
#include <bit>
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/vec_math.h"

namespace evla::kernels {

void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps, float* y) {
  cpu_has_avx2() ? avx2::layer_norm(x, M, D, gamma, beta, eps, y) : ref::layer_norm(x, M, D, gamma, beta, eps, y);
}

void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y) {
  cpu_has_avx2() ? avx2::rms_norm(x, M, D, weight, eps, y) : ref::rms_norm(x, M, D, weight, eps, y);
}

namespace ref {

// Statistics in double, summed in order.
void layer_norm(const float* x, int M, int D, const float* gamma, const float* beta, float eps, float* y) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + size_t(m) * D;
    float* yr = y + size_t(m) * D;
    double mean = 0, var = 0;
    for (int d = 0; d < D; ++d) mean += xr[d];
    mean /= D;
    for (int d = 0; d < D; ++d) var += (xr[d] - mean) * (xr[d] - mean);
    var /= D;
    const float inv = float(1.0 / std::sqrt(var + eps));
    const float mu = float(mean);
    for (int d = 0; d < D; ++d) {
      float v = (xr[d] - mu) * inv;
      if (gamma) v *= gamma[d];
      if (beta) v += beta[d];
      yr[d] = v;
    }
  }
}

void rms_norm(const float* x, int M, int D, const float* weight, float eps, float* y) {
  for (int m = 0; m < M; ++m) {
    const float* xr = x + size_t(m) * D;
    float* yr = y + size_t(m) * D;
    double ss = 0;
    for (int d = 0; d < D; ++d) ss += double(xr[d]) * xr[d];
    const float inv = float(1.0 / std::sqrt(ss / D + eps));
    for (int d = 0; d < D; ++d) yr[d] = xr[d] * inv * weight[d];
  }
}

void gelu_erf(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

void gelu_tanh(float* x, size_t n) {
  const float c = 0.7978845608028654f;  // sqrt(2/pi)
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(c * (v + 0.044715f * v * v * v)));
  }
}

void softmax(float* x, size_t n) {
  if (n == 0) return;
  float mx = x[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  for (size_t i = 0; i < n; ++i) x[i] *= float(1.0 / sum);
}

void silu(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void swiglu(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void dequant_int8(const int8_t* q, float scale, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = scale * float(q[i]);
}

void decode_bf16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(uint32_t(in[i]) << 16);
}

void decode_f16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float(std::bit_cast<_Float16>(in[i]));
}

}  // namespace ref

// Run-time dispatch: the AVX2 versions where the CPU has them.
void gelu_erf(float* x, size_t n) { cpu_has_avx2() ? avx2::gelu_erf(x, n) : ref::gelu_erf(x, n); }
void gelu_tanh(float* x, size_t n) { cpu_has_avx2() ? avx2::gelu_tanh(x, n) : ref::gelu_tanh(x, n); }
void softmax(float* x, size_t n) { cpu_has_avx2() ? avx2::softmax(x, n) : ref::softmax(x, n); }
void silu(float* x, size_t n) { cpu_has_avx2() ? avx2::silu(x, n) : ref::silu(x, n); }
void decode_16bit(const uint16_t* in, bool bf16, float* out, size_t n) {
  if (bf16) cpu_has_avx2() ? avx2::decode_bf16(in, out, n) : ref::decode_bf16(in, out, n);
  else cpu_has_avx2() && cpu_has_f16c() ? avx2::decode_f16(in, out, n) : ref::decode_f16(in, out, n);
}
void swiglu(float* gate, const float* up, size_t n) {
  cpu_has_avx2() ? avx2::swiglu(gate, up, n) : ref::swiglu(gate, up, n);
}

void add(float* y, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_scaled(float* y, const float* x, const float* scale, int M, int D) {
  for (int m = 0; m < M; ++m)
    for (int d = 0; d < D; ++d) y[size_t(m) * D + d] += scale[d] * x[size_t(m) * D + d];
}

void rope_tables(const int* positions, int T, int hd, float theta, float* cos, float* sin) {
  const int half = hd / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  // As HF Llama computes it: inv_freq in fp32, angle = pos * inv_freq in fp32.
  for (int j = 0; j < half; ++j) inv_freq[size_t(j)] = float(1.0 / std::pow(double(theta), double(2 * j) / hd));
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < half; ++j) {
      const float ang = float(positions[t]) * inv_freq[size_t(j)];
      cos[size_t(t) * half + j] = std::cos(ang);
      sin[size_t(t) * half + j] = std::sin(ang);
    }
}

void rope_apply(float* x, int ld, int T, int H, int hd, const float* cos, const float* sin) {
  const int half = hd / 2;
  for (int t = 0; t < T; ++t) {
    const float* c = cos + size_t(t) * half;
    const float* s = sin + size_t(t) * half;
    for (int h = 0; h < H; ++h) {
      float* r = x + size_t(t) * ld + size_t(h) * hd;
      for (int j = 0; j < half; ++j) {
        const float a = r[j], b = r[j + half];
        r[j] = a * c[j] - b * s[j];
        r[j + half] = b * c[j] + a * s[j];
      }
    }
  }
}

void rope(float* x, int T, int H, int hd, const int* positions, float theta) {
  std::vector<float> c(size_t(T) * hd / 2), s(c.size());
  rope_tables(positions, T, hd, theta, c.data(), s.data());
  rope_apply(x, H * hd, T, H, hd, c.data(), s.data());
}

}  // namespace evla::kernels
