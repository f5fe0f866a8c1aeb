// The Llama decoder on real pretrained weights (shared/data/tinyllamas):
// greedy decoding must reproduce the known continuations.
#include <gtest/gtest.h>

#include <cmath>

#include "evla/evla.h"
#include "io/tokenizer.h"
#include "kernels/kernels.h"
#include "test_util.h"

namespace evla {
namespace {

const std::string kTiny = std::string(EVLA_SOURCE_DIR) + "/../shared/data/tinyllamas/";

TEST(TinyLlamas, Stories260KGreedy) {
  auto lm = LanguageModel::load(kTiny + "stories260K");
  const std::vector<int> expect = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317};
  EXPECT_EQ(lm->generate_greedy({1}, int(expect.size()) - 1, 2), expect);
}

TEST(TinyLlamas, BabyLlamaGreedyAndTokenizer) {
  const std::string dir = kTiny + "babyllama-tok105";
  auto lm = LanguageModel::load(dir);
  const std::vector<int> expect = {1, 3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5};
  EXPECT_EQ(lm->generate_greedy({1}, int(expect.size()) - 1, 1), expect);
  auto tok = io::load_sentencepiece(dir + "/tokenizer.model");
  std::vector<int> ids = lm->generate_greedy(tok->encode("Once upon a time", true), 8, 2);
  EXPECT_EQ(tok->decode(ids).rfind("Once upon a time,", 0), 0u) << tok->decode(ids);
}

TEST(TinyLlamas, HiddenStatesAndLogitsShapes) {
  auto lm = LanguageModel::load(kTiny + "stories260K");
  auto out = lm->forward({1, 403, 407});
  EXPECT_EQ(out.hidden.size(), 6u);  // 5 layer inputs + last output
  EXPECT_EQ(out.logits.size(), 3u * 512);
  EXPECT_EQ(out.hidden[0].size(), 3u * 64);
}

// 256 tokens are enough for the layers' row-wise work (norms, RoPE, SwiGLU,
// residual adds) to be split over two threads; the rows are independent and
// the layers' products (evla's packed kernel) split by output columns, so the
// hidden states may not change at all. The LM head goes through OpenBLAS in
// column slices whose edge kernels round differently: equal to rounding.
TEST(TinyLlamas, TwoThreadsGiveTheSameHiddenStates) {
  auto lm = LanguageModel::load(kTiny + "babyllama-tok105");
  std::vector<int> ids(256);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1 + int(i * 37 % 104);
  const auto one = lm->forward(ids, 1), two = lm->forward(ids, 2);
  ASSERT_EQ(one.hidden.size(), two.hidden.size());
  // evla's kernels split work so that every sum runs in the same order at any
  // thread count. With EVLA_KERNELS=blas each thread hands OpenBLAS its own
  // slice of columns, whose edge kernels round differently: equal to 1e-10.
  for (size_t l = 0; l < one.hidden.size(); ++l) {
    if (!kernels::blas_only()) {
      EXPECT_EQ(one.hidden[l], two.hidden[l]) << "layer " << l;
      continue;
    }
    ASSERT_EQ(one.hidden[l].size(), two.hidden[l].size());
    EXPECT_LE(test::nmse(two.hidden[l].data(), one.hidden[l].data(), one.hidden[l].size()), 1e-10) << "layer " << l;
  }
  double err = 0, ref = 0;
  for (size_t i = 0; i < one.logits.size(); ++i)
    err += std::pow(double(one.logits[i]) - two.logits[i], 2), ref += std::pow(double(one.logits[i]), 2);
  EXPECT_LE(err / ref, 1e-12);
}

TEST(TinyLlamas, BadInputsAreErrors) {
  auto lm = LanguageModel::load(kTiny + "stories260K");
  EXPECT_THROW(lm->forward({}), Error);
  EXPECT_THROW(lm->forward({1, 99999}), Error);
  EXPECT_THROW(LanguageModel::load("/nonexistent"), Error);
}

}  // namespace
}  // namespace evla
