// Multi-head attention as two sgemms per head (scores, then weighted values)
// with a row softmax between them; heads run in parallel on the pool.
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

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
  // Causal rows go in a few blocks, each multiplying only the keys its last
  // row may see: 4 blocks skip 3/8 of the work. Few and large, because
  // OpenBLAS re-packs K and V on every call (64-row blocks came out slower).
  const int blocks = a.causal && Tq >= 256 ? 4 : 1;
  auto one_head = [&](int h) {
    const int kh = h / group;
    float* S = scratch + size_t(parallel ? h % pool.size() : 0) * Tq * Tk;
    for (int b = 0; b < blocks; ++b) {
      const int r0 = int(int64_t(Tq) * b / blocks), r1 = int(int64_t(Tq) * (b + 1) / blocks);
      const int nk = a.causal ? std::min(Tk, a.q_offset + r1) : Tk;  // keys the block's last row sees
      float* Sb = S + size_t(r0) * Tk;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, nk, hd, a.scale, q + size_t(r0) * a.ldq + h * hd,
                  a.ldq, k + kh * hd, a.ldk, 0.0f, Sb, Tk);
      for (int i = r0; i < r1; ++i) {
        float* row = S + size_t(i) * Tk;
        const int n = a.causal ? std::min(Tk, a.q_offset + i + 1) : Tk;
        softmax(row, size_t(n));
        std::fill(row + n, row + nk, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, hd, nk, 1.0f, Sb, Tk, v + kh * hd, a.ldv,
                  0.0f, out + size_t(r0) * a.ldo + h * hd, a.ldo);
    }
  };
  if (parallel) {
    pool.run(a.Hq, one_head);
  } else {
    for (int h = 0; h < a.Hq; ++h) one_head(h);
  }
}

}  // namespace evla::kernels
