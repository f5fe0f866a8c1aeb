// Kernel micro-benchmarks: the matrix products of the shipped policy and of a
// VLA-sized LM, through OpenBLAS (weights re-packed by it on every call) and
// through evla's packed-weight kernel, side by side in one run.
//
//   build/bin/bench_kernels --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Each benchmark reports GFLOP/s; compare the BLAS/ and Packed/ lines of a
// shape, for int8 layers the Int8WeightOnly/, Int8Dynamic/ (AVX2) and
// Int8DynamicVnni/ (packed) and Int8Rows/ (row-major, VNNI) lines, for bfloat16 weights the Widen16/ and Bf16Dot/ ones.
#include <benchmark/benchmark.h>

#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace {

using namespace evla;

std::vector<float> randn(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal());
  return v;
}

void run(benchmark::State& st, bool packed) {
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  ThreadPool pool(1);
  auto x = randn(size_t(M) * K, 1), W = randn(size_t(N) * K, 2);
  std::vector<float> y(size_t(M) * N), Wp(kernels::packed_floats(N, K));
  kernels::pack_weights(W.data(), N, K, Wp.data());
  for (auto _ : st) {
    if (packed)
      kernels::linear_packed(pool, x.data(), K, M, K, Wp.data(), nullptr, N, y.data(), N);
    else
      kernels::linear(pool, x.data(), M, K, W.data(), nullptr, N, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * K * N * double(st.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BLAS(benchmark::State& st) { run(st, false); }
void Packed(benchmark::State& st) { run(st, true); }

// An int8 layer's product: weight-only (dequantize, then sgemm) against the
// integer kernel (7-bit activations × int8 weights, int32 sums) on AVX2 and,
// where the CPU has it, AVX-512 VNNI.
enum class Int8Path { WeightOnly, Avx2, Vnni, Rows };

void run_int8(benchmark::State& st, Int8Path path) {
  if ((path == Int8Path::Vnni || path == Int8Path::Rows) && !kernels::cpu_has_avx512vnni())
    return st.SkipWithError("no AVX-512 VNNI");
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  ThreadPool pool(1);
  auto x = randn(size_t(M) * K, 1), W = randn(size_t(N) * K, 2);
  std::vector<float> y(size_t(M) * N), scale(N);
  std::vector<int8_t> q(W.size());
  kernels::quantize_int8_rows(W.data(), N, K, q.data(), scale.data());
  std::vector<int8_t> Wp(kernels::int8_dynamic_packed_bytes(N, K));
  kernels::pack_int8_dynamic(q.data(), N, K, Wp.data());
  for (auto _ : st) {
    if (path == Int8Path::Rows)
      kernels::linear_int8_rows(pool, x.data(), K, M, K, q.data(), scale.data(), nullptr, N, y.data(), N);
    else if (path != Int8Path::WeightOnly)
      kernels::linear_int8_dynamic(path == Int8Path::Vnni ? kernels::Int8Isa::Avx512Vnni : kernels::Int8Isa::Avx2,
                                   pool, x.data(), K, M, K, Wp.data(), scale.data(), nullptr, N, y.data(), N);
    else
      kernels::linear_int8(pool, x.data(), K, M, K, q.data(), scale.data(), nullptr, N, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * K * N * double(st.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void Int8WeightOnly(benchmark::State& st) { run_int8(st, Int8Path::WeightOnly); }
void Int8Dynamic(benchmark::State& st) { run_int8(st, Int8Path::Avx2); }
void Int8DynamicVnni(benchmark::State& st) { run_int8(st, Int8Path::Vnni); }
void Int8Rows(benchmark::State& st) { run_int8(st, Int8Path::Rows); }

// 16-bit weights used in place: widened to fp32 block by block, then sgemm
// (Widen16/), against BF16 products with vdpbf16ps (Bf16Dot/).
void run_16bit(benchmark::State& st, bool dot) {
  if (dot && !kernels::prefer_bf16_dot()) return st.SkipWithError("no AVX-512 BF16");
  const int M = int(st.range(0)), K = int(st.range(1)), N = int(st.range(2));
  ThreadPool pool(int(st.range(3)));
  auto x = randn(size_t(M) * K, 1), W = randn(size_t(N) * K, 2);
  std::vector<float> y(size_t(M) * N);
  std::vector<uint16_t> w16(W.size());
  for (size_t i = 0; i < W.size(); ++i) w16[i] = kernels::bf16_round(W[i]);
  for (auto _ : st) {
    if (dot)
      kernels::linear_bf16(pool, x.data(), K, M, K, w16.data(), nullptr, N, y.data(), N);
    else
      kernels::linear_16bit(pool, x.data(), K, M, K, w16.data(), true, nullptr, N, y.data(), N);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * K * N * double(st.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void Widen16(benchmark::State& st) { run_16bit(st, false); }
void Bf16Dot(benchmark::State& st) { run_16bit(st, true); }

// {M, K, N, threads}: CogACT-Base's LM products over 275 tokens (256 visual,
// the prompt, the cognition token): q|k|v and o (4096 → 4096), gate|up
// (4096 → 11008), down (11008 → 4096); its action head (2 × 17 rows, d 768);
// SmolVLA's expert over its 50 action tokens (d 720: q 720 → 960, o, gate|up
// 720 → 2048, down); on 1 and 2 threads.
void shapes_16bit(benchmark::internal::Benchmark* b) {
  for (int64_t t : {1, 2})
    for (auto s : std::vector<std::vector<int64_t>>{{275, 4096, 4096}, {275, 4096, 11008}, {275, 11008, 4096},
                                                     {34, 768, 2304}, {50, 720, 960}, {50, 960, 720}, {50, 720, 2048},
                                                     {50, 2048, 720}})
      b->Args({s[0], s[1], s[2], t});
}

// {M, K, N}: evla-tabletop's LM (97 tokens, d 96: q|k|v, o, gate|up, down),
// ViT (69 tokens, d 64), projector, action head (2 × 17 rows, d 48), then
// VLA-sized shapes (527 tokens, d 960) where BLAS's blocking should win.
void shapes(benchmark::internal::Benchmark* b) {
  for (auto s : std::vector<std::vector<int64_t>>{{97, 96, 160}, {97, 96, 96}, {97, 96, 512}, {97, 256, 96},
                                                   {69, 64, 192}, {69, 256, 64}, {64, 128, 512}, {64, 512, 96},
                                                   {34, 48, 144}, {34, 192, 48}, {97, 960, 1600}, {527, 960, 960},
                                                   {527, 2560, 960}})
    b->Args(s);
}

}  // namespace

BENCHMARK(BLAS)->Apply(shapes);
BENCHMARK(Packed)->Apply(shapes);
BENCHMARK(Int8WeightOnly)->Apply(shapes);
BENCHMARK(Int8Dynamic)->Apply(shapes);
BENCHMARK(Int8DynamicVnni)->Apply(shapes);
BENCHMARK(Int8Rows)->Apply(shapes);
BENCHMARK(Widen16)->Apply(shapes_16bit)->UseRealTime();
BENCHMARK(Bf16Dot)->Apply(shapes_16bit)->UseRealTime();
BENCHMARK_MAIN();
