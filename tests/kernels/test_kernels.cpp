// Every optimized kernel against its plain reference (kernels/reference.h).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/vec_math.h"

namespace evla {
namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal()) * scale;
  return v;
}

double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return num / den;
}

// Kernels read x and write y inside wider rows (as the fused gate|up activation
// is read): x [M,K] copied into rows ldx wide, and an output buffer of rows ldy
// wide whose padding (7) the kernel must leave alone.
std::vector<float> widen_rows(const std::vector<float>& x, int M, int K, int ldx) {
  std::vector<float> xs(size_t(M) * ldx, 9.f);
  for (int m = 0; m < M; ++m) std::copy_n(&x[size_t(m) * K], K, &xs[size_t(m) * ldx]);
  return xs;
}

// The [M,N] result out of rows ldy wide, checking the padding is untouched.
void narrow_rows(const std::vector<float>& ys, int M, int N, int ldy, std::vector<float>* y) {
  y->assign(size_t(M) * N, 0.f);
  for (int m = 0; m < M; ++m) {
    std::copy_n(&ys[size_t(m) * ldy], N, &(*y)[size_t(m) * N]);
    for (int n = N; n < ldy; ++n) {
      ASSERT_EQ(ys[size_t(m) * ldy + n], 7.f) << "wrote outside its row";
    }
  }
}

// A writable page followed by an inaccessible one: data placed to end at
// end() faults if a kernel reads a byte past it (weights read in place may
// end where their mapping does).
class GuardPage {
 public:
  GuardPage() : page_(size_t(sysconf(_SC_PAGESIZE))) {
    mem_ = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ok_ = mem_ != MAP_FAILED && mprotect(static_cast<char*>(mem_) + page_, page_, PROT_NONE) == 0;
  }
  ~GuardPage() {
    if (mem_ != MAP_FAILED) munmap(mem_, 2 * page_);
  }
  bool ok() const { return ok_; }
  char* end() const { return static_cast<char*>(mem_) + page_; }

 private:
  size_t page_;
  void* mem_;
  bool ok_ = false;
};

struct LinearCase {
  int M, K, N;
  bool bias;
  int threads;
};

// x ([M, K]) in rows K + 3 wide through kernel(xs, ldx, ys, ldy), which
// writes rows N + 5 wide: the [M, N] result into *y, the padding checked.
template <typename Kernel>
void run_strided(const LinearCase& c, const std::vector<float>& x, const Kernel& kernel, std::vector<float>* y) {
  const int ldx = c.K + 3, ldy = c.N + 5;
  const std::vector<float> xs = widen_rows(x, c.M, c.K, ldx);
  std::vector<float> ys(size_t(c.M) * ldy, 7.f);
  kernel(xs.data(), ldx, ys.data(), ldy);
  narrow_rows(ys, c.M, c.N, ldy, y);
}

class LinearVsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearVsRef, Matches) {
  const auto c = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 1), W = randn(size_t(c.N) * c.K, 2), b = randn(c.N, 3);
  std::vector<float> y(size_t(c.M) * c.N), r(y.size());
  kernels::linear(pool, x.data(), c.M, c.K, W.data(), c.bias ? b.data() : nullptr, c.N, y.data());
  kernels::ref::linear(x.data(), c.M, c.K, W.data(), c.bias ? b.data() : nullptr, c.N, r.data());
  EXPECT_LE(nmse(y, r), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearVsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{1, 300, 517, false, 2},
                                           LinearCase{7, 33, 65, true, 2}, LinearCase{90, 128, 344, false, 2},
                                           LinearCase{90, 128, 344, true, 3}, LinearCase{257, 96, 31, true, 2},
                                           LinearCase{3, 1, 5, true, 1}));

// The packed-weight kernel: full and partial 6-row blocks and 16-wide panels,
// strided rows, bias, and the thread split over panels.
class PackedLinearVsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(PackedLinearVsRef, Matches) {
  const auto c = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 8), W = randn(size_t(c.N) * c.K, 9), b = randn(c.N, 10);
  std::vector<float> Wp(kernels::packed_floats(c.N, c.K), -1.f);
  kernels::pack_weights(W.data(), c.N, c.K, Wp.data());
  const int ldx = c.K + 1, ldy = c.N + 2;
  const std::vector<float> xs = widen_rows(x, c.M, c.K, ldx);
  std::vector<float> ys(size_t(c.M) * ldy, 7.f);
  kernels::linear_packed(pool, xs.data(), ldx, c.M, c.K, Wp.data(), c.bias ? b.data() : nullptr, c.N, ys.data(),
                         ldy);
  std::vector<float> y, r(size_t(c.M) * c.N);
  ASSERT_NO_FATAL_FAILURE(narrow_rows(ys, c.M, c.N, ldy, &y));
  kernels::ref::linear(x.data(), c.M, c.K, W.data(), c.bias ? b.data() : nullptr, c.N, r.data());
  EXPECT_LE(nmse(y, r), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PackedLinearVsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{7, 33, 65, true, 2},
                                           LinearCase{97, 96, 160, false, 1}, LinearCase{90, 128, 344, true, 2},
                                           LinearCase{5, 1, 17, true, 1}, LinearCase{13, 257, 31, false, 3}));

// Weight-only int8: the blocked, dequantize-then-sgemm kernel against the plain
// reference, with row strides and shapes that leave partial panels.
class Int8LinearVsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(Int8LinearVsRef, Matches) {
  const auto c = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 4), W = randn(size_t(c.N) * c.K, 5), b = randn(c.N, 6);
  std::vector<int8_t> q(W.size());
  std::vector<float> scale(size_t(c.N));
  kernels::quantize_int8_rows(W.data(), c.N, c.K, q.data(), scale.data());
  const int ldx = c.K + 3, ldy = c.N + 5;
  const std::vector<float> xs = widen_rows(x, c.M, c.K, ldx);
  std::vector<float> ys(size_t(c.M) * ldy, 7.f);
  kernels::linear_int8(pool, xs.data(), ldx, c.M, c.K, q.data(), scale.data(), c.bias ? b.data() : nullptr,
                       c.N, ys.data(), ldy);
  std::vector<float> y, r(size_t(c.M) * c.N);
  ASSERT_NO_FATAL_FAILURE(narrow_rows(ys, c.M, c.N, ldy, &y));
  kernels::ref::linear_int8(x.data(), c.M, c.K, q.data(), scale.data(), c.bias ? b.data() : nullptr, c.N,
                            r.data());
  EXPECT_LE(nmse(y, r), 1e-10);
  // And the quantized layer stays close to the fp32 one (per-row int8: ~1e-4).
  kernels::ref::linear(x.data(), c.M, c.K, W.data(), c.bias ? b.data() : nullptr, c.N, r.data());
  EXPECT_LE(nmse(y, r), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8LinearVsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{7, 33, 65, true, 2},
                                           LinearCase{90, 128, 344, false, 2}, LinearCase{40, 2560, 300, true, 3},
                                           LinearCase{3, 1, 5, true, 1}));

// 16-bit weights used in place (bfloat16 and IEEE half): the decode-then-
// sgemm kernel against the plain reference, and the vector decoders against
// the plain ones, bit for bit.
class Linear16VsRef : public ::testing::TestWithParam<std::pair<LinearCase, bool>> {};

TEST_P(Linear16VsRef, Matches) {
  const auto [c, bf16] = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 11), W = randn(size_t(c.N) * c.K, 12), b = randn(c.N, 13);
  std::vector<uint16_t> W16(W.size());
  for (size_t i = 0; i < W.size(); ++i)
    W16[i] = bf16 ? uint16_t(std::bit_cast<uint32_t>(W[i]) >> 16) : std::bit_cast<uint16_t>(_Float16(W[i]));
  const int ldx = c.K + 3, ldy = c.N + 5;
  const std::vector<float> xs = widen_rows(x, c.M, c.K, ldx);
  std::vector<float> ys(size_t(c.M) * ldy, 7.f);
  kernels::linear_16bit(pool, xs.data(), ldx, c.M, c.K, W16.data(), bf16, c.bias ? b.data() : nullptr, c.N,
                        ys.data(), ldy);
  std::vector<float> y, r(size_t(c.M) * c.N);
  ASSERT_NO_FATAL_FAILURE(narrow_rows(ys, c.M, c.N, ldy, &y));
  kernels::ref::linear_16bit(x.data(), c.M, c.K, W16.data(), bf16, c.bias ? b.data() : nullptr, c.N, r.data());
  EXPECT_LE(nmse(y, r), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Linear16VsRef,
                         ::testing::Values(std::pair{LinearCase{1, 64, 96, true, 1}, true},
                                           std::pair{LinearCase{7, 33, 65, true, 2}, false},
                                           std::pair{LinearCase{90, 128, 344, false, 2}, true},
                                           std::pair{LinearCase{40, 2560, 300, true, 3}, false},
                                           std::pair{LinearCase{3, 1, 5, true, 1}, true}));

// BF16 products: activations rounded to bfloat16, sums in fp32. Against the
// reference (same rounding, sums in double) only the order and precision of
// the sums differ: NMSE ≤ 1e-11. Against exact fp32 products the rounding of
// x costs a relative error of up to 2⁻⁹ per element, NMSE ≈ 2⁻¹⁸/3 ≈ 1.3e-6
// for random data: ≤ 1e-5 bounds it with room and still fails a kernel that
// drops or doubles a term.
class Bf16VsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(Bf16VsRef, Matches) {
  const LinearCase c = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 21), W = randn(size_t(c.N) * c.K, 22), b = randn(c.N, 23);
  std::vector<uint16_t> W16(W.size());
  for (size_t i = 0; i < W.size(); ++i) W16[i] = kernels::bf16_round(W[i]);
  const float* bias = c.bias ? b.data() : nullptr;
  auto bf16_on = [&](ThreadPool& p) {
    return [&](const float* xs, int ldx, float* ys, int ldy) {
      kernels::linear_bf16(p, xs, ldx, c.M, c.K, W16.data(), bias, c.N, ys, ldy);
    };
  };
  std::vector<float> y, r(size_t(c.M) * c.N), exact(r.size());
  ASSERT_NO_FATAL_FAILURE(run_strided(c, x, bf16_on(pool), &y));
  kernels::ref::linear_bf16(x.data(), c.M, c.K, W16.data(), bias, c.N, r.data());
  kernels::ref::linear_16bit(x.data(), c.M, c.K, W16.data(), true, bias, c.N, exact.data());
  EXPECT_LE(nmse(y, r), 1e-11);
  EXPECT_LE(nmse(y, exact), 1e-5);

  // The vdpbf16ps path fixes the sums' order by the shape: one thread gives
  // the same bits. (Without it, OpenBLAS picks its kernel by slice width.)
  if (!kernels::prefer_bf16_dot()) return;
  ThreadPool one(1);
  std::vector<float> y1;
  ASSERT_NO_FATAL_FAILURE(run_strided(c, x, bf16_on(one), &y1));
  EXPECT_EQ(y, y1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16VsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{3, 1, 5, true, 1},
                                           LinearCase{7, 33, 65, true, 2}, LinearCase{5, 1000, 13, false, 3},
                                           LinearCase{90, 128, 344, false, 2}, LinearCase{9, 4104, 70, true, 2},
                                           LinearCase{300, 768, 37, true, 2}));

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(kernels::bf16_round(1.0f), 0x3f80);
  EXPECT_EQ(kernels::bf16_round(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(kernels::bf16_round(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(kernels::bf16_round(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(kernels::bf16_round(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(kernels::bf16_round(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX overflows to inf
  const uint16_t nan = kernels::bf16_round(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x7f, 0);
}

// The weights are read in place, so the last row may end where the mapping
// does: the kernel must not touch a byte past it (a guard page faults if it does).
TEST(Bf16, NeverReadsPastTheLastWeightRow) {
  const GuardPage guard;
  ASSERT_TRUE(guard.ok());
  const int M = 5, K = 37, N = 7;
  uint16_t* W = reinterpret_cast<uint16_t*>(guard.end()) - size_t(N) * K;
  auto w = randn(size_t(N) * K, 31), x = randn(size_t(M) * K, 32);
  for (size_t i = 0; i < w.size(); ++i) W[i] = kernels::bf16_round(w[i]);
  ThreadPool pool(1);
  std::vector<float> y(size_t(M) * N), r(y.size());
  kernels::linear_bf16(pool, x.data(), K, M, K, W, nullptr, N, y.data(), N);
  kernels::ref::linear_bf16(x.data(), M, K, W, nullptr, N, r.data());
  EXPECT_LE(nmse(y, r), 1e-11);
}

TEST(Decode16, VectorAndPlainAgreeBitForBit) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU: only the plain decoders run";
  std::vector<uint16_t> h(1037);
  for (size_t i = 0; i < h.size(); ++i) h[i] = uint16_t(i * 2654435761u >> 7);  // every bit pattern class, NaN and inf too
  h[0] = 0x7f80, h[1] = 0xffc1, h[2] = 0x7c00, h[3] = 0x0001;
  std::vector<float> a(h.size()), b(h.size());
  for (bool bf16 : {true, false}) {
    if (!bf16 && !kernels::cpu_has_f16c()) continue;
    bf16 ? kernels::avx2::decode_bf16(h.data(), a.data(), h.size()) : kernels::avx2::decode_f16(h.data(), a.data(), h.size());
    bf16 ? kernels::ref::decode_bf16(h.data(), b.data(), h.size()) : kernels::ref::decode_f16(h.data(), b.data(), h.size());
    for (size_t i = 0; i < h.size(); ++i)
      EXPECT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i])) << i << (bf16 ? " bf16" : " f16");
  }
}

TEST(Int8, QuantizationErrorIsHalfAStep) {
  auto W = randn(37 * 53, 7, 0.3f);
  std::fill_n(W.begin() + 53, 53, 0.0f);  // an all-zero row
  std::vector<int8_t> q(W.size());
  std::vector<float> scale(37);
  kernels::quantize_int8_rows(W.data(), 37, 53, q.data(), scale.data());
  EXPECT_EQ(scale[1], 1.0f);
  for (int n = 0; n < 37; ++n) {
    int peak = 0;
    for (int k = 0; k < 53; ++k) {
      const size_t i = size_t(n) * 53 + k;
      ASSERT_LE(std::fabs(W[i] - scale[n] * q[i]), 0.5001f * scale[n]) << "row " << n << " col " << k;
      peak = std::max(peak, std::abs(int(q[i])));
    }
    if (n != 1) {
      EXPECT_EQ(peak, 127) << "row " << n << " does not use the full range";
    }
  }
  if (kernels::cpu_has_avx2()) {  // the vector dequantizer is exact
    std::vector<float> a(W.size()), b(W.size());
    kernels::avx2::dequant_int8(q.data(), 0.37f, a.data(), q.size());
    kernels::ref::dequant_int8(q.data(), 0.37f, b.data(), q.size());
    EXPECT_EQ(a, b);
  }
}

// Every instruction set of the integer int8 kernel that this CPU runs.
std::vector<kernels::Int8Isa> int8_isas() {
  std::vector<kernels::Int8Isa> v;
  if (kernels::cpu_has_avx2()) v.push_back(kernels::Int8Isa::Avx2);
  if (kernels::cpu_has_avx512vnni()) v.push_back(kernels::Int8Isa::Avx512Vnni);
  return v;
}

const char* isa_name(kernels::Int8Isa isa) { return isa == kernels::Int8Isa::Avx2 ? "AVX2" : "AVX-512 VNNI"; }

// Int8 layers in integer arithmetic, on each instruction set: bit-identical
// to the plain reference (integer sums are exact and the epilogue rounds the
// same way), with strides, K not a multiple of 4, partial panels and row
// blocks (of 4 rows on AVX2, 8 on VNNI), a zero row, rows of one sign, and
// the thread split.
class Int8DynamicVsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(Int8DynamicVsRef, MatchesBitForBit) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "needs AVX2";
  for (kernels::Int8Isa isa : int8_isas()) {
    SCOPED_TRACE(isa_name(isa));
    const auto c = GetParam();
    ThreadPool pool(c.threads);
    auto x = randn(size_t(c.M) * c.K, 11), W = randn(size_t(c.N) * c.K, 12), b = randn(c.N, 13);
    if (c.M > 2) std::fill_n(x.begin() + c.K, c.K, 0.0f);  // an all-zero input row
    if (c.M > 4) {  // rows of one sign: zero points at the ends of the range
      for (int k = 0; k < c.K; ++k) x[size_t(3) * c.K + k] = std::fabs(x[size_t(3) * c.K + k]) + 0.5f;
      for (int k = 0; k < c.K; ++k) x[size_t(4) * c.K + k] = -std::fabs(x[size_t(4) * c.K + k]);
    }
    std::vector<int8_t> q(W.size());
    std::vector<float> scale(size_t(c.N));
    kernels::quantize_int8_rows(W.data(), c.N, c.K, q.data(), scale.data());
    std::vector<int8_t> Wp(kernels::int8_dynamic_packed_bytes(c.N, c.K), -1);
    kernels::pack_int8_dynamic(q.data(), c.N, c.K, Wp.data());
    const int ldx = c.K + 3, ldy = c.N + 5;
    const std::vector<float> xs = widen_rows(x, c.M, c.K, ldx);
    std::vector<float> ys(size_t(c.M) * ldy, 7.f);
    kernels::linear_int8_dynamic(isa, pool, xs.data(), ldx, c.M, c.K, Wp.data(), scale.data(),
                                 c.bias ? b.data() : nullptr, c.N, ys.data(), ldy);
    std::vector<float> y, r(size_t(c.M) * c.N);
    ASSERT_NO_FATAL_FAILURE(narrow_rows(ys, c.M, c.N, ldy, &y));
    kernels::ref::linear_int8_dynamic(x.data(), c.M, c.K, q.data(), scale.data(), c.bias ? b.data() : nullptr,
                                      c.N, r.data());
    EXPECT_EQ(y, r);
    // 7-bit activations on Gaussian rows: NMSE ~1e-4 against fp32.
    kernels::ref::linear(x.data(), c.M, c.K, W.data(), c.bias ? b.data() : nullptr, c.N, r.data());
    EXPECT_LE(nmse(y, r), 2e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8DynamicVsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{7, 33, 65, true, 2},
                                           LinearCase{90, 128, 344, false, 2}, LinearCase{40, 2561, 300, true, 3},
                                           LinearCase{3, 1, 5, true, 1}, LinearCase{13, 97, 16, false, 1},
                                           LinearCase{17, 40, 33, true, 1}));

// Int8 from plain row-major codes on AVX-512 VNNI with 8-bit activations:
// bit-identical to the reference, with strides, k tails, a zero row, rows of
// one sign, partial panels and row blocks, and the thread split; 8-bit
// activations err about a quarter of 7-bit's.
class Int8RowsVsRef : public ::testing::TestWithParam<LinearCase> {};

TEST_P(Int8RowsVsRef, MatchesBitForBit) {
  if (!kernels::cpu_has_avx512vnni()) GTEST_SKIP() << "needs AVX-512 VNNI";
  const auto c = GetParam();
  ThreadPool pool(c.threads);
  auto x = randn(size_t(c.M) * c.K, 41), W = randn(size_t(c.N) * c.K, 42), b = randn(c.N, 43);
  if (c.M > 2) std::fill_n(x.begin() + c.K, c.K, 0.0f);
  if (c.M > 4) {
    for (int k = 0; k < c.K; ++k) x[size_t(3) * c.K + k] = std::fabs(x[size_t(3) * c.K + k]) + 0.5f;
    for (int k = 0; k < c.K; ++k) x[size_t(4) * c.K + k] = -std::fabs(x[size_t(4) * c.K + k]);
  }
  std::vector<int8_t> q(W.size());
  std::vector<float> scale(size_t(c.N));
  kernels::quantize_int8_rows(W.data(), c.N, c.K, q.data(), scale.data());
  const float* bias = c.bias ? b.data() : nullptr;
  std::vector<float> y, r(size_t(c.M) * c.N), r7(r.size()), exact(r.size());
  ASSERT_NO_FATAL_FAILURE(run_strided(c, x, [&](const float* xs, int ldx, float* ys, int ldy) {
    kernels::linear_int8_rows(pool, xs, ldx, c.M, c.K, q.data(), scale.data(), bias, c.N, ys, ldy);
  }, &y));
  kernels::ref::linear_int8_rows(x.data(), c.M, c.K, q.data(), scale.data(), bias, c.N, r.data());
  EXPECT_EQ(y, r);
  kernels::ref::linear_int8_dynamic(x.data(), c.M, c.K, q.data(), scale.data(), bias, c.N, r7.data());
  kernels::ref::linear_int8(x.data(), c.M, c.K, q.data(), scale.data(), bias, c.N, exact.data());
  if (c.K >= 64) {
    EXPECT_LT(nmse(y, exact), 0.5 * nmse(r7, exact)) << "8-bit activations should err well below 7-bit ones";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8RowsVsRef,
                         ::testing::Values(LinearCase{1, 64, 96, true, 1}, LinearCase{7, 33, 65, true, 2},
                                           LinearCase{90, 128, 344, false, 2}, LinearCase{40, 2561, 300, true, 3},
                                           LinearCase{3, 1, 5, true, 1}, LinearCase{13, 97, 200, false, 1},
                                           LinearCase{300, 4104, 13, true, 2}));

TEST(Int8Rows, NanRowsGiveNanOutputsAndTheLastRowIsNotOverread) {
  if (!kernels::cpu_has_avx512vnni()) GTEST_SKIP() << "needs AVX-512 VNNI";
  const GuardPage guard;
  ASSERT_TRUE(guard.ok());
  const int M = 3, K = 37, N = 7;
  int8_t* W = reinterpret_cast<int8_t*>(guard.end()) - size_t(N) * K;
  auto w = randn(size_t(N) * K, 51), x = randn(size_t(M) * K, 52);
  std::vector<float> scale(static_cast<size_t>(N));
  kernels::quantize_int8_rows(w.data(), N, K, W, scale.data());
  x[size_t(K) + 5] = std::numeric_limits<float>::quiet_NaN();
  ThreadPool pool(1);
  std::vector<float> y(size_t(M) * N);
  kernels::linear_int8_rows(pool, x.data(), K, M, K, W, scale.data(), nullptr, N, y.data(), N);
  for (int n = 0; n < N; ++n) {
    EXPECT_TRUE(std::isfinite(y[size_t(n)]));
    EXPECT_TRUE(std::isnan(y[size_t(N + n)]));
  }
}

// The largest codes on both sides over a long row: the pair sums must not
// saturate (127·127·2 < 32767) and the int32 sums must stay exact.
TEST(Int8Dynamic, ExtremeValuesStayExact) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "needs AVX2";
  ThreadPool pool(1);
  for (kernels::Int8Isa isa : int8_isas()) {
    for (int K : {16, 515, 11008}) {
      SCOPED_TRACE(isa_name(isa));
      const int N = 16, M = 2;
      std::vector<float> x(size_t(M) * K, 3.0f), W(size_t(N) * K, -0.5f), y(size_t(M) * N);
      std::fill_n(x.begin() + K, K, -3.0f);
      std::vector<int8_t> q(W.size());
      std::vector<float> scale(N);
      kernels::quantize_int8_rows(W.data(), N, K, q.data(), scale.data());
      std::vector<int8_t> Wp(kernels::int8_dynamic_packed_bytes(N, K));
      kernels::pack_int8_dynamic(q.data(), N, K, Wp.data());
      kernels::linear_int8_dynamic(isa, pool, x.data(), K, M, K, Wp.data(), scale.data(), nullptr, N, y.data(), N);
      for (int n = 0; n < N; ++n) {
        EXPECT_NEAR(y[n], -1.5 * K, 1e-5 * K) << "K " << K;
        EXPECT_NEAR(y[N + n], 1.5 * K, 1e-5 * K) << "K " << K;
      }
    }
  }
}

// A NaN in a row makes that row's outputs NaN (as fp32 would), in the kernel
// and the reference alike, and leaves the other rows untouched.
TEST(Int8Dynamic, NanRowsGiveNanOutputs) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "needs AVX2";
  ThreadPool pool(1);
  for (kernels::Int8Isa isa : int8_isas()) {
    SCOPED_TRACE(isa_name(isa));
    const int M = 3, K = 37, N = 20;
    auto x = randn(size_t(M) * K, 21), W = randn(size_t(N) * K, 22);
    x[size_t(K) + 9] = std::numeric_limits<float>::quiet_NaN();  // row 1, inside the vector part
    x[size_t(2) * K + 36] = std::numeric_limits<float>::quiet_NaN();  // row 2, in the scalar tail
    x[0] = 2e38f, x[1] = -2e38f;  // row 0 spans more than FLT_MAX: outputs large, not NaN
    std::vector<int8_t> q(W.size());
    std::vector<float> scale(N), y(size_t(M) * N), r(y.size());
    kernels::quantize_int8_rows(W.data(), N, K, q.data(), scale.data());
    std::vector<int8_t> Wp(kernels::int8_dynamic_packed_bytes(N, K));
    kernels::pack_int8_dynamic(q.data(), N, K, Wp.data());
    kernels::linear_int8_dynamic(isa, pool, x.data(), K, M, K, Wp.data(), scale.data(), nullptr, N, y.data(), N);
    kernels::ref::linear_int8_dynamic(x.data(), M, K, q.data(), scale.data(), nullptr, N, r.data());
    for (int n = 0; n < N; ++n) {
      EXPECT_EQ(y[n], r[n]);
      EXPECT_FALSE(std::isnan(y[n]));
      EXPECT_TRUE(std::isnan(y[N + n]) && std::isnan(r[N + n]));
      EXPECT_TRUE(std::isnan(y[2 * N + n]) && std::isnan(r[2 * N + n]));
    }
  }
}

// The path asked for is the path run: a CPU without VNNI refuses it by name.
TEST(Int8Dynamic, MissingInstructionSetIsRefused) {
  if (kernels::cpu_has_avx512vnni()) GTEST_SKIP() << "this CPU has AVX-512 VNNI";
  ThreadPool pool(1);
  std::vector<float> x(4, 1.0f), y(16);
  std::vector<int8_t> Wp(kernels::int8_dynamic_packed_bytes(16, 4));
  std::vector<float> scale(16, 1.0f);
  try {
    kernels::linear_int8_dynamic(kernels::Int8Isa::Avx512Vnni, pool, x.data(), 4, 1, 4, Wp.data(), scale.data(),
                                 nullptr, 16, y.data(), 16);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("VNNI"), std::string::npos);
  }
}

struct AttnCase {
  int Tq, Tk, Hq, Hkv, hd;
  bool causal, fused;
  int q_offset, threads;
};

class AttentionVsRef : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionVsRef, Matches) {
  const auto c = GetParam();
  ThreadPool pool(c.threads);
  // Fused layout: q, k, v interleaved in one row as a qkv projection leaves them.
  const int ldq = c.fused ? (c.Hq + 2 * c.Hkv) * c.hd : c.Hq * c.hd;
  const int ldk = c.fused ? ldq : c.Hkv * c.hd;
  auto qbuf = randn(size_t(std::max(c.Tq, c.Tk)) * ldq, 4);
  auto kbuf = c.fused ? qbuf : randn(size_t(c.Tk) * ldk, 5);
  auto vbuf = c.fused ? qbuf : randn(size_t(c.Tk) * ldk, 6);
  const float* q = qbuf.data();
  const float* k = c.fused ? q + c.Hq * c.hd : kbuf.data();
  const float* v = c.fused ? q + (c.Hq + c.Hkv) * c.hd : vbuf.data();
  kernels::AttentionShape a{c.Tq, c.Tk, c.Hq, c.Hkv, c.hd, ldq, ldk, ldk, c.Hq * c.hd};
  a.causal = c.causal;
  a.q_offset = c.q_offset;
  a.scale = 1.0f / std::sqrt(float(c.hd));
  std::vector<float> out(size_t(c.Tq) * c.Hq * c.hd), ref(out.size());
  std::vector<float> scratch(kernels::attention_scratch_floats(pool, c.Tq, c.Tk));
  kernels::attention(pool, a, q, k, v, out.data(), scratch.data());
  kernels::ref::attention(a, q, k, v, ref.data());
  EXPECT_LE(nmse(out, ref), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionVsRef,
                         ::testing::Values(AttnCase{17, 17, 4, 4, 8, false, true, 0, 2},
                                           AttnCase{33, 33, 8, 2, 16, true, false, 0, 2},
                                           AttnCase{5, 12, 4, 1, 8, true, false, 7, 1},
                                           AttnCase{70, 70, 6, 3, 32, true, true, 0, 3},
                                           AttnCase{1, 9, 2, 2, 4, false, false, 0, 1},
                                           AttnCase{150, 150, 2, 1, 16, true, true, 0, 2},
                                           AttnCase{100, 130, 2, 2, 8, true, false, 30, 1},
                                           // causal rows in blocks (Tq >= 256), uneven, with an offset
                                           AttnCase{300, 300, 2, 1, 16, true, true, 0, 2},
                                           AttnCase{259, 300, 2, 2, 8, true, false, 41, 1},
                                           AttnCase{257, 257, 3, 3, 8, false, false, 0, 2}));

// Many pool threads calling BLAS at once, over and over: a BLAS build that
// shares its packing buffers between threads (Debian's serial OpenBLAS)
// corrupts some of these results.
TEST(Kernels, ConcurrentCallsAreSafe) {
  ThreadPool pool(4);
  const int T = 70, H = 8, hd = 32, M = 64, K = 256, N = 512;
  auto qkv = randn(size_t(T) * 3 * H * hd, 21), x = randn(size_t(M) * K, 22), W = randn(size_t(N) * K, 23);
  kernels::AttentionShape a{T, T, H, H, hd, 3 * H * hd, 3 * H * hd, 3 * H * hd, H * hd};
  a.causal = true;
  a.scale = 0.2f;
  const float *q = qkv.data(), *k = q + H * hd, *v = q + 2 * H * hd;
  std::vector<float> ref(size_t(T) * H * hd), out(ref.size()), lref(size_t(M) * N), lout(lref.size());
  std::vector<float> scratch(kernels::attention_scratch_floats(pool, T, T));
  kernels::ref::attention(a, q, k, v, ref.data());
  kernels::ref::linear(x.data(), M, K, W.data(), nullptr, N, lref.data());
  for (int rep = 0; rep < 40; ++rep) {
    kernels::attention(pool, a, q, k, v, out.data(), scratch.data());
    ASSERT_LE(nmse(out, ref), 1e-10) << "attention, repetition " << rep;
    kernels::linear(pool, x.data(), M, K, W.data(), nullptr, N, lout.data());
    ASSERT_LE(nmse(lout, lref), 1e-10) << "linear, repetition " << rep;
  }
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_for(n, 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }
}

TEST(Elementwise, NormsAndActivations) {
  // Spot values computed by hand.
  float x[4] = {1, 2, 3, 4}, y[4];
  kernels::layer_norm(x, 1, 4, nullptr, nullptr, 0.f, y);
  EXPECT_NEAR(y[0], -1.3416408f, 1e-5);
  EXPECT_NEAR(y[3], 1.3416408f, 1e-5);
  const float w[4] = {1, 1, 1, 2};
  kernels::rms_norm(x, 1, 4, w, 0.f, y);
  EXPECT_NEAR(y[3], 2 * 4 / std::sqrt(7.5f), 1e-5);
  float g[2] = {1.0f, -1.0f};
  kernels::gelu_erf(g, 2);
  EXPECT_NEAR(g[0], 0.8413447f, 1e-6);
  EXPECT_NEAR(g[1], -0.1586553f, 1e-6);
  float t[1] = {1.0f};
  kernels::gelu_tanh(t, 1);
  EXPECT_NEAR(t[0], 0.8411920f, 1e-6);
}

TEST(Rope, RotatesPairsByPosition) {
  // hd = 4: pairs (0, 2) and (1, 3); position 0 is the identity.
  std::vector<float> x = {1, 2, 3, 4, 1, 2, 3, 4};
  const int pos[2] = {0, 1};
  kernels::rope(x.data(), 2, 1, 4, pos, 10000.f);
  EXPECT_FLOAT_EQ(x[0], 1);
  EXPECT_FLOAT_EQ(x[3], 4);
  // position 1, j = 0: angle 1 rad
  EXPECT_NEAR(x[4], 1 * std::cos(1.f) - 3 * std::sin(1.f), 1e-6);
  EXPECT_NEAR(x[6], 3 * std::cos(1.f) + 1 * std::sin(1.f), 1e-6);
  // j = 1: angle 1/100
  EXPECT_NEAR(x[5], 2 * std::cos(0.01f) - 4 * std::sin(0.01f), 1e-6);
}

}  // namespace
}  // namespace evla

namespace evla {
namespace {

// The AVX2 activations against their <cmath> reference, over a wide range
// (including saturation) and lengths that exercise the scalar tail.
TEST(VecMath, ActivationsMatchReference) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  for (size_t n : {1u, 7u, 8u, 1001u}) {
    std::vector<float> base(n);
    for (size_t i = 0; i < n; ++i) base[i] = -20.0f + 40.0f * float(i) / float(std::max<size_t>(1, n - 1));
    auto check = [&](const char* name, auto fast, auto slow, double tol) {
      std::vector<float> a = base, b = base;
      fast(a.data(), n);
      slow(b.data(), n);
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(a[i], b[i], tol * std::max(1.0f, std::fabs(b[i]))) << name << " at x=" << base[i];
    };
    check("gelu_erf", kernels::avx2::gelu_erf, kernels::ref::gelu_erf, 3e-7);
    check("gelu_tanh", kernels::avx2::gelu_tanh, kernels::ref::gelu_tanh, 3e-7);
    check("silu", kernels::avx2::silu, kernels::ref::silu, 3e-7);
    std::vector<float> g = base, g2 = base, up(n, 0.5f);
    kernels::avx2::swiglu(g.data(), up.data(), n);
    kernels::ref::swiglu(g2.data(), up.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(g[i], g2[i], 3e-7 * std::max(1.0f, std::fabs(g2[i])));
    // Norms (rows of n): the same statistics summed in another order.
    std::vector<float> gamma = randn(n, 11), beta = randn(n, 12), na(n), nb(n);
    kernels::avx2::layer_norm(base.data(), 1, int(n), gamma.data(), beta.data(), 1e-6f, na.data());
    kernels::ref::layer_norm(base.data(), 1, int(n), gamma.data(), beta.data(), 1e-6f, nb.data());
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(na[i], nb[i], 1e-6 * std::max(1.0f, std::fabs(nb[i]))) << "layer_norm";
    kernels::avx2::layer_norm(base.data(), 1, int(n), nullptr, nullptr, 1e-6f, na.data());
    kernels::ref::layer_norm(base.data(), 1, int(n), nullptr, nullptr, 1e-6f, nb.data());
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(na[i], nb[i], 1e-6 * std::max(1.0f, std::fabs(nb[i]))) << "layer_norm";
    kernels::avx2::rms_norm(base.data(), 1, int(n), gamma.data(), 1e-6f, na.data());
    kernels::ref::rms_norm(base.data(), 1, int(n), gamma.data(), 1e-6f, nb.data());
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(na[i], nb[i], 1e-6 * std::max(1.0f, std::fabs(nb[i]))) << "rms_norm";
    std::vector<float> e = base;
    kernels::avx2::exp_inplace(e.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(e[i], std::exp(base[i]), 2e-7 * std::exp(base[i]));
    // Softmax over attention-like scores (a spread of ±30 and one large outlier).
    std::vector<float> sa = randn(n, 13), sb;
    for (float& v : sa) v *= 10.0f;
    sa[n / 2] = 60.0f;
    sb = sa;
    kernels::avx2::softmax(sa.data(), n);
    kernels::ref::softmax(sb.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(sa[i], sb[i], 1e-6 * std::max(1e-6f, sb[i])) << "softmax " << i;
  }
}

// A NaN score is not silently turned into a probability: every output of its
// row is NaN, as in the reference.
TEST(VecMath, SoftmaxCarriesNaN) {
  for (size_t n : {3u, 8u, 19u})
    for (size_t at : {size_t(0), n - 1}) {
      std::vector<float> a(n, 1.0f), b;
      a[at] = std::nanf("");
      b = a;
      kernels::softmax(a.data(), n);
      kernels::ref::softmax(b.data(), n);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_TRUE(std::isnan(a[i])) << n << " " << at << " " << i;
        EXPECT_TRUE(std::isnan(b[i])) << n << " " << at << " " << i;
      }
    }
}

}  // namespace
}  // namespace evla
