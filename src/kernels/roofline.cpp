#include "kernels/roofline.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace evla::kernels {

Roofline measure_roofline(int threads, int n, int reps) {
  using Clock = std::chrono::steady_clock;
  ThreadPool pool(threads);
  Roofline r;
  r.threads = pool.size();
  Rng rng(1);
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (float& v : a) v = float(rng.uniform());
  for (float& v : b) v = float(rng.uniform());
  linear(pool, a.data(), n, n, b.data(), nullptr, n, c.data());  // warm-up
  // Best of reps runs of one product (after a warm-up), in GFLOP/s.
  auto rate = [&](const auto& product) {
    product();
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = Clock::now();
      product();
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    return 2.0 * n * n * double(n) / best / 1e9;
  };
  r.gemm_gflops = rate([&] { linear(pool, a.data(), n, n, b.data(), nullptr, n, c.data()); });
  std::vector<uint16_t> b16(b.size());
  for (size_t i = 0; i < b.size(); ++i) b16[i] = bf16_round(b[i]);
  r.bf16_gemm_gflops = rate([&] { linear_bf16(pool, a.data(), n, n, n, b16.data(), nullptr, n, c.data(), n); });
  std::vector<int8_t> q(b.size());
  std::vector<float> scale(static_cast<size_t>(n));
  quantize_int8_rows(b.data(), n, n, q.data(), scale.data());
  if (prefer_int8_rows()) {
    r.int8_gemm_gflops = rate([&] {
      linear_int8_rows(pool, a.data(), n, n, n, q.data(), scale.data(), nullptr, n, c.data(), n);
    });
  } else if (prefer_int8_dynamic()) {
    std::vector<int8_t> packed(int8_dynamic_packed_bytes(n, n));
    pack_int8_dynamic(q.data(), n, n, packed.data());
    r.int8_gemm_gflops = rate([&] {
      linear_int8_dynamic(pool, a.data(), n, n, n, packed.data(), scale.data(), nullptr, n, c.data(), n);
    });
  } else {
    r.int8_gemm_gflops = rate([&] { linear_int8(pool, a.data(), n, n, n, q.data(), scale.data(), nullptr, n, c.data(), n); });
  }

  // Triad over 3 × 64 MB, split over the pool like the kernels split work.
  const size_t m = size_t(16) << 20;
  std::vector<float> x(m, 1.f), y(m, 2.f), z(m, 0.f);
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    pool.parallel_for(int64_t(m), 4096, [&](int64_t s, int64_t e) {
      for (int64_t k = s; k < e; ++k) z[size_t(k)] = x[size_t(k)] + 0.5f * y[size_t(k)];
    });
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  r.bandwidth_gbs = 3.0 * m * sizeof(float) / best / 1e9;
  return r;
}

}  // namespace evla::kernels
