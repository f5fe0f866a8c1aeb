// SentencePiece tokenizer, on the real 105-piece TinyStories model in shared/.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "evla/error.h"
#include "io/tokenizer.h"

namespace evla::io {
namespace {

namespace fs = std::filesystem;

// shared/ sits inside the checkout on some machines and beside it on others.
std::string tokenizer_path() {
  const fs::path rel = "shared/data/tinyllamas/babyllama-tok105/tokenizer.model";
  for (const fs::path& root : {fs::path(EVLA_SOURCE_DIR), fs::path(EVLA_SOURCE_DIR) / ".."})
    if (fs::exists(root / rel)) return (root / rel).string();
  return "";
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = tokenizer_path();
    ASSERT_FALSE(path.empty()) << "tokenizer.model not found under " << EVLA_SOURCE_DIR
                               << "/shared or " << EVLA_SOURCE_DIR << "/../shared";
    tok = load_sentencepiece(path);
  }
  std::unique_ptr<Tokenizer> tok;
};

const std::vector<int> kOnceUponATime = {3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5, 3, 6,
                                         10, 16, 4, 25, 3, 6, 8, 4, 13, 4, 3, 17, 5, 12};

TEST_F(TokenizerTest, Vocabulary) {
  EXPECT_EQ(tok->vocab_size(), 105);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST_F(TokenizerTest, EncodeMatchesSentencePiece) {
  EXPECT_EQ(tok->encode("Once upon a time, there was", false), kOnceUponATime);
  std::vector<int> with_bos = {1};
  with_bos.insert(with_bos.end(), kOnceUponATime.begin(), kOnceUponATime.end());
  EXPECT_EQ(tok->encode("Once upon a time, there was", true), with_bos);
  EXPECT_TRUE(tok->encode("", false).empty());
  EXPECT_EQ(tok->encode("", true), std::vector<int>{1});
}

TEST_F(TokenizerTest, DecodeRoundTrips) {
  EXPECT_EQ(tok->decode(kOnceUponATime), "Once upon a time, there was");
  // SentencePiece normalises runs of spaces, and this tiny model has no byte
  // fallback (non-ASCII becomes <unk>), so the inputs avoid both.
  for (const std::string s : {"the cat sat.", "Lily and Tom", "Max's big, red ball!"}) {
    std::vector<int> ids = tok->encode(s, true);
    EXPECT_EQ(tok->decode(ids), s);  // BOS decodes to nothing
  }
}

TEST_F(TokenizerTest, DecodeRejectsBadIds) {
  EXPECT_THROW(tok->decode({3, 105}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
}

TEST(TokenizerLoad, ErrorsNameTheFile) {
  try {
    load_sentencepiece("/nonexistent/tokenizer.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model"), std::string::npos);
  }
  const fs::path junk = fs::temp_directory_path() / "evla_io_junk_tokenizer.model";
  std::ofstream(junk) << "this is not a protobuf";
  try {
    load_sentencepiece(junk.string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(junk.string()), std::string::npos) << e.what();
  }
  fs::remove(junk);
}

}  // namespace
}  // namespace evla::io
