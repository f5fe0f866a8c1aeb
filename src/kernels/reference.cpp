#include <bit>
#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace evla::kernels::ref {

void linear(const float* x, int M, int K, const float* W, const float* bias, int N, float* y) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) acc += double(x[size_t(m) * K + k]) * W[size_t(n) * K + k];
      y[size_t(m) * N + n] = float(acc);
    }
}

void linear_int8(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias,
                 int N, float* y) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k)
        acc += double(x[size_t(m) * K + k]) * (double(scale[n]) * Wq[size_t(n) * K + k]);
      y[size_t(m) * N + n] = float(acc);
    }
}

void linear_bf16(const float* x, int M, int K, const uint16_t* W, const float* bias, int N, float* y) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) {
        const float xr = std::bit_cast<float>(uint32_t(bf16_round(x[size_t(m) * K + k])) << 16);
        acc += double(xr) * double(std::bit_cast<float>(uint32_t(W[size_t(n) * K + k]) << 16));
      }
      y[size_t(m) * N + n] = float(acc);
    }
}

void linear_16bit(const float* x, int M, int K, const uint16_t* W, bool bf16, const float* bias, int N, float* y) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < K; ++k) {
        const uint16_t h = W[size_t(n) * K + k];
        const double w = bf16 ? double(std::bit_cast<float>(uint32_t(h) << 16)) : double(std::bit_cast<_Float16>(h));
        acc += double(x[size_t(m) * K + k]) * w;
      }
      y[size_t(m) * N + n] = float(acc);
    }
}

namespace {

// Activations to `levels` + 1 unsigned codes with a zero point, per row.
void linear_int8_codes(int levels, const float* x, int M, int K, const int8_t* Wq, const float* scale,
                       const float* bias, int N, float* y) {
  std::vector<int64_t> q(static_cast<size_t>(K));
  for (int m = 0; m < M; ++m) {
    const float* row = x + size_t(m) * K;
    // The range always includes 0, so zero is exactly representable. A row
    // holding NaN gives NaN outputs.
    float lo = 0, hi = 0;
    bool has_nan = false;
    for (int k = 0; k < K; ++k)
      lo = std::min(lo, row[k]), hi = std::max(hi, row[k]), has_nan |= std::isnan(row[k]);
    float s = (hi - lo) / float(levels);
    if (std::isinf(s)) s = hi / float(levels) - lo / float(levels);  // a finite row spanning more than FLT_MAX
    long z = 0;
    if (has_nan)
      s = std::numeric_limits<float>::quiet_NaN();
    else if (s > 0)
      z = std::clamp(std::lrint(-lo / s), 0L, long(levels));
    else
      s = 1.0f;
    const float inv = 1.0f / s;
    for (int k = 0; k < K; ++k) q[k] = std::clamp(std::lrint(row[k] * inv) + z, 0L, long(levels));
    for (int n = 0; n < N; ++n) {
      int64_t acc = 0, wsum = 0;
      for (int k = 0; k < K; ++k) acc += q[k] * Wq[size_t(n) * K + k], wsum += Wq[size_t(n) * K + k];
      y[size_t(m) * N + n] = std::fma(float(acc - z * wsum), s * scale[n], bias ? bias[n] : 0.0f);
    }
  }
}

}  // namespace

void linear_int8_dynamic(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias,
                         int N, float* y) {
  linear_int8_codes(127, x, M, K, Wq, scale, bias, N, y);
}

void linear_int8_rows(const float* x, int M, int K, const int8_t* Wq, const float* scale, const float* bias, int N,
                      float* y) {
  linear_int8_codes(255, x, M, K, Wq, scale, bias, N, y);
}

void attention(const AttentionShape& a, const float* q, const float* k, const float* v, float* out) {
  const int group = a.Hq / a.Hkv, hd = a.hd;
  std::vector<double> p(a.Tk);
  for (int h = 0; h < a.Hq; ++h) {
    const int kh = h / group;
    for (int i = 0; i < a.Tq; ++i) {
      const int last = a.causal ? std::min(a.Tk - 1, a.q_offset + i) : a.Tk - 1;
      double mx = -1e300;
      for (int j = 0; j <= last; ++j) {
        double s = 0;
        for (int d = 0; d < hd; ++d)
          s += double(q[size_t(i) * a.ldq + h * hd + d]) * k[size_t(j) * a.ldk + kh * hd + d];
        p[j] = s * a.scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int j = 0; j <= last; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int d = 0; d < hd; ++d) {
        double acc = 0;
        for (int j = 0; j <= last; ++j) acc += p[j] * v[size_t(j) * a.ldv + kh * hd + d];
        out[size_t(i) * a.ldo + h * hd + d] = float(acc / sum);
      }
    }
  }
}

}  // namespace evla::kernels::ref
