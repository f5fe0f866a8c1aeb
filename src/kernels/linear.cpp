// Linear layers through BLAS sgemm, split over output features on evla's own
// pool (each slice is an independent single-threaded sgemm, so the split is
// deterministic and needs no BLAS-internal threading).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/vec_math.h"

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename();

namespace evla::kernels {

std::string selection() {
  return std::string("packed ") + (prefer_packed(kPackedPanel, kPackedPanel) ? "yes" : "no") +
         "; bf16 dot " + (prefer_bf16_dot() ? "yes" : "no") + "; int8 " + int8_kernel_name() +
         "; OpenBLAS " + openblas_get_corename();
}

void init_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Bias goes in first and sgemm accumulates onto it (beta = 1): that fuses the
// bias add and spares OpenBLAS its zero-fill of C for beta = 0. W, bias and y
// point at the slice's first output feature.
static void gemm_rows(const float* x, int ldx, int M, int K, const float* W, const float* bias, int n,
                      float* y, int ldy) {
  float beta = 0.0f;
  if (bias) {
    for (int m = 0; m < M; ++m) std::memcpy(y + size_t(m) * ldy, bias, sizeof(float) * n);
    beta = 1.0f;
  }
  if (M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, K, 1.0f, W, K, x, 1, beta, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, K, 1.0f, x, ldx, W, K, beta, y, ldy);
  }
}

// Below ~1M multiply-adds per thread the hand-off costs more than it saves.
static bool run_serial(const ThreadPool& pool, int M, int K, int N) {
  return pool.size() == 1 || int64_t(M) * K * N < (int64_t(1) << 21);
}

void linear_strided(ThreadPool& pool, const float* x, int ldx, int M, int K, const float* W,
                    const float* bias, int N, float* y, int ldy) {
  init_blas();
  auto slice = [&](int n0, int n1) {
    gemm_rows(x, ldx, M, K, W + size_t(n0) * K, bias ? bias + n0 : nullptr, n1 - n0, y + n0, ldy);
  };
  if (run_serial(pool, M, K, N)) return slice(0, N);
  pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1) { slice(int(n0), int(n1)); });
}

void linear(ThreadPool& pool, const float* x, int M, int K, const float* W, const float* bias,
            int N, float* y) {
  linear_strided(pool, x, K, M, K, W, bias, N, y, N);
}

void quantize_int8_rows(const float* W, int N, int K, int8_t* Wq, float* scale) {
  for (int n = 0; n < N; ++n) {
    const float* w = W + size_t(n) * K;
    float mx = 0;
    for (int k = 0; k < K; ++k) mx = std::max(mx, std::fabs(w[k]));
    const float s = mx > 0 ? mx / 127.0f : 1.0f;
    scale[n] = s;
    for (int k = 0; k < K; ++k)
      Wq[size_t(n) * K + k] = int8_t(std::clamp(std::lrint(w[k] / s), -127L, 127L));
  }
}

// y = x · Wᵀ + bias for weights stored in another type: `decode(row, out)`
// widens one row of W to K floats.
template <typename Decode>
static void linear_decoded(ThreadPool& pool, const float* x, int ldx, int M, int K, const Decode& decode,
                           const float* bias, int N, float* y, int ldy) {
  init_blas();
  // Rows per decoded panel: about 1 MB of fp32 (at least 128 rows), so
  // each sgemm call is wide enough to run near peak and re-packs x rarely,
  // while the panel is still cache-warm when sgemm reads it.
  const int rows = std::max(128, ((1 << 18) / std::max(K, 1) + 15) / 16 * 16);
  auto slice = [&](int n0, int n1) {
    thread_local std::vector<float> panel;  // grows once per thread, then reused
    for (int b = n0; b < n1; b += rows) {
      const int nb = std::min(rows, n1 - b);
      if (panel.size() < size_t(nb) * K) panel.resize(size_t(nb) * K);
      for (int r = 0; r < nb; ++r) decode(b + r, panel.data() + size_t(r) * K);
      gemm_rows(x, ldx, M, K, panel.data(), bias ? bias + b : nullptr, nb, y + b, ldy);
    }
  };
  if (run_serial(pool, M, K, N)) return slice(0, N);
  pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1) { slice(int(n0), int(n1)); });
}

void linear_int8(ThreadPool& pool, const float* x, int ldx, int M, int K, const int8_t* Wq,
                 const float* scale, const float* bias, int N, float* y, int ldy) {
  const bool avx = cpu_has_avx2();
  linear_decoded(pool, x, ldx, M, K, [&](int n, float* out) {
    const int8_t* q = Wq + size_t(n) * K;
    avx ? avx2::dequant_int8(q, scale[n], out, size_t(K)) : ref::dequant_int8(q, scale[n], out, size_t(K));
  }, bias, N, y, ldy);
}

void linear_16bit(ThreadPool& pool, const float* x, int ldx, int M, int K, const uint16_t* W, bool bf16,
                  const float* bias, int N, float* y, int ldy) {
  linear_decoded(pool, x, ldx, M, K, [&](int n, float* out) { decode_16bit(W + size_t(n) * K, bf16, out, size_t(K)); },
                 bias, N, y, ldy);
}

}  // namespace evla::kernels
