// Linear layers through BLAS sgemm, split over output features on evla's own
// pool (each slice is an independent single-threaded sgemm, so the split is
// deterministic and needs no BLAS-internal threading).
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace evla::kernels {

void init_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Bias goes in first and sgemm accumulates onto it (beta = 1): that fuses the
// bias add and spares OpenBLAS its zero-fill of C for beta = 0.
static void linear_slice(const float* x, int ldx, int M, int K, const float* W, const float* bias,
                         int n0, int n1, float* y, int ldy) {
  const int n = n1 - n0;
  float beta = 0.0f;
  if (bias) {
    for (int m = 0; m < M; ++m) std::memcpy(y + size_t(m) * ldy + n0, bias + n0, sizeof(float) * n);
    beta = 1.0f;
  }
  if (M == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, K, 1.0f, W + size_t(n0) * K, K, x, 1, beta, y + n0, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, K, 1.0f, x, ldx, W + size_t(n0) * K, K, beta,
                y + n0, ldy);
  }
}

void linear_strided(ThreadPool& pool, const float* x, int ldx, int M, int K, const float* W,
                    const float* bias, int N, float* y, int ldy) {
  init_blas();
  // Below ~1M multiply-adds per thread the hand-off costs more than it saves.
  const int64_t work = int64_t(M) * K * N;
  if (pool.size() == 1 || work < (int64_t(1) << 21)) {
    linear_slice(x, ldx, M, K, W, bias, 0, N, y, ldy);
    return;
  }
  pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1) {
    linear_slice(x, ldx, M, K, W, bias, int(n0), int(n1), y, ldy);
  });
}

void linear(ThreadPool& pool, const float* x, int M, int K, const float* W, const float* bias,
            int N, float* y) {
  linear_strided(pool, x, K, M, K, W, bias, N, y, N);
}

}  // namespace evla::kernels
