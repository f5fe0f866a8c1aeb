// Multi-head attention as two sgemms per head (scores, then weighted values)
// with a row softmax between them; heads run in parallel on the pool.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/vec_math.h"

namespace evla::kernels {

size_t attention_scratch_floats(ThreadPool& pool, int Tq, int Tk) {
  return size_t(pool.size()) * Tq * Tk;
}

void attention(ThreadPool& pool, const AttentionShape& a, const float* q, const float* k,
               const float* v, float* out, float* scratch) {
  init_blas();
  const int group = a.Hq / a.Hkv;
  const int Tq = a.Tq, Tk = a.Tk, hd = a.hd;
  // Small problems (the action head's 17-token sequences) run on the caller:
  // waking the pool costs more than the work.
  const bool parallel = double(a.Hq) * Tq * Tk * hd >= double(1 << 18);
  auto one_head = [&](int h) {
    const int kh = h / group;
    float* S = scratch + size_t(parallel ? h % pool.size() : 0) * Tq * Tk;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hd, a.scale, q + h * hd, a.ldq,
                k + kh * hd, a.ldk, 0.0f, S, Tk);
    for (int i = 0; i < Tq; ++i) {
      float* row = S + size_t(i) * Tk;
      const int n = a.causal ? std::min(Tk, a.q_offset + i + 1) : Tk;
      softmax(row, size_t(n));
      std::fill(row + n, row + Tk, 0.0f);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hd, Tk, 1.0f, S, Tk, v + kh * hd,
                a.ldv, 0.0f, out + h * hd, a.ldo);
  };
  if (parallel) {
    pool.run(a.Hq, one_head);
  } else {
    for (int h = 0; h < a.Hq; ++h) one_head(h);
  }
}

}  // namespace evla::kernels
