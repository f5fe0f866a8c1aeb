// This machine's ceilings, measured the way the runtime computes: large
// fp32 GEMM throughput through the same linear() kernel and pool, and
// streaming memory bandwidth.
#pragma once

namespace evla::kernels {

struct Roofline {
  int threads = 1;
  double gemm_gflops = 0;       // fp32, n×n×n through linear()
  double bf16_gemm_gflops = 0;  // the same through linear_bf16 (bfloat16 weights, BF16 products)
  double int8_gemm_gflops = 0;  // the same through the kernel int8 layers run on (int8_kernel_name())
  double bandwidth_gbs = 0;     // a[i] = b[i] + s·c[i] over buffers far larger than the caches
};

Roofline measure_roofline(int threads, int gemm_n = 1024, int reps = 5);

}  // namespace evla::kernels
