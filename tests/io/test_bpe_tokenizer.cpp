// Byte-level BPE from tokenizer.json, against the independent Python
// reference (python/evla_ref/bpe.py) on two tokenizers trained for the
// purpose: SmolVLM2's layout and GPT-2's (tests/fixtures/bpe, written by
// python/evla_ref/make_bpe_fixtures.py). The same code read the real GPT-2 and
// StarCoder vocabularies against the tokenizers library's outputs
// (docs/format.md, "Byte-level BPE tokenizers").
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "evla/error.h"
#include "io/bpe_tokenizer.h"

namespace evla::io {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(EVLA_SOURCE_DIR) + "/tests/fixtures/bpe/" + name; }

nlohmann::json cases() {
  std::ifstream f(fixture("cases.json"));
  return nlohmann::json::parse(f);
}

TEST(BpeTokenizer, MatchesTheReferenceOnHardStrings) {
  const nlohmann::json c = cases();
  for (const char* name : {"smol", "gpt2"}) {
    auto tok = load_hf_tokenizer(fixture(std::string(name) + ".json"));
    const auto& expected = c["tokenizers"][name];
    for (size_t i = 0; i < c["cases"].size(); ++i) {
      const std::string text = c["cases"][i];
      EXPECT_EQ(tok->encode(text, true), expected["with_special"][i].get<std::vector<int>>())
          << name << ", case " << i << ": \"" << text << "\"";
      EXPECT_EQ(tok->encode(text, false), expected["without_special"][i].get<std::vector<int>>())
          << name << ", case " << i << ": \"" << text << "\"";
    }
  }
}

TEST(BpeTokenizer, DecodesWhatItEncodes) {
  const nlohmann::json c = cases();
  auto tok = load_hf_tokenizer(fixture("smol.json"));  // no normalizer, no prefix space: the text comes back
  for (const auto& j : c["cases"]) {
    const std::string text = j;
    const size_t lstrip = text.find(" <global-img>");  // <global-img> takes the spaces before it
    const std::string expected =
        lstrip == std::string::npos ? text : text.substr(0, text.find_last_not_of(' ', lstrip) + 1) + text.substr(lstrip + 1);
    EXPECT_EQ(tok->decode(tok->encode(text, false)), expected);
  }
  EXPECT_EQ(tok->bos_id(), -1);  // SmolVLM2's layout adds nothing
  auto gpt2 = load_hf_tokenizer(fixture("gpt2.json"));
  const std::vector<int> ids = gpt2->encode("pick up", true);
  EXPECT_EQ(ids.front(), gpt2->bos_id());
  EXPECT_EQ(gpt2->decode(ids), "<|im_start|> pick up");  // the prefix space is the pre-tokenizer's
  EXPECT_THROW(gpt2->decode({gpt2->vocab_size()}), Error);
  EXPECT_THROW(gpt2->decode({-1}), Error);
}

// A tokenizer.json in `dir` whose vocabulary is the 256 byte symbols (id =
// byte value) plus what `merges` make, with pre-tokenizer `pre`.
std::string byte_tokenizer(const fs::path& dir, const nlohmann::json& pre,
                           const nlohmann::json& merges = nlohmann::json::array()) {
  nlohmann::json vocab = nlohmann::json::object();
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) s += char(cp);
    else s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
    vocab[s] = b;
  }
  for (const auto& m : merges) {
    const std::string a = m[0], b = m[1];
    if (!vocab.contains(a + b)) vocab[a + b] = int(vocab.size());
  }
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", pre},
                      {"post_processor", nullptr},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  fs::create_directories(dir);
  const std::string path = (dir / "tokenizer.json").string();
  std::ofstream(path) << j.dump();
  return path;
}

class BpeFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("evla_bpe_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

// Split steps before ByteLevel (as Llama 3 and Qwen 2 write their pattern):
// with merges that join any two letters, the pieces show as tokens.
TEST_F(BpeFiles, SplitBehaviours) {
  nlohmann::json merges = nlohmann::json::array();
  const std::string letters = "ab-";
  for (char x : letters)
    for (char y : letters) merges.push_back({std::string(1, x), std::string(1, y)});
  auto pieces = [&](const std::string& behavior, bool invert, const std::string& text) {
    const nlohmann::json pre = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    auto tok = load_hf_tokenizer(byte_tokenizer(dir / behavior, pre, merges));
    std::vector<std::string> out;
    for (int id : tok->encode(text, false)) out.push_back(tok->decode({id}));
    return out;
  };
  using V = std::vector<std::string>;
  // Pairs merge left to right, so a three-letter piece shows as "xy" + "z".
  EXPECT_EQ(pieces("Isolated", false, "ab-ab"), (V{"ab", "-", "ab"}));
  EXPECT_EQ(pieces("Removed", false, "ab-ab"), (V{"ab", "ab"}));
  EXPECT_EQ(pieces("MergedWithPrevious", false, "ab-ab"), (V{"ab", "-", "ab"}));
  EXPECT_EQ(pieces("MergedWithNext", false, "a-b"), (V{"a", "-b"}));
  EXPECT_EQ(pieces("MergedWithPrevious", false, "a-b"), (V{"a-", "b"}));
  EXPECT_EQ(pieces("Contiguous", false, "a--b"), (V{"a", "--", "b"}));
  EXPECT_EQ(pieces("Removed", true, "a-b-"), (V{"-", "-"}));  // inverted: the stretches between are removed
}

TEST_F(BpeFiles, BadFilesNameWhatIsWrong) {
  const nlohmann::json byte_level = {{"type", "ByteLevel"}};
  auto expect_error = [&](const nlohmann::json& j, const std::string& needle) {
    fs::create_directories(dir);
    const std::string path = (dir / "bad.json").string();
    std::ofstream(path) << j.dump();
    try {
      load_hf_tokenizer(path);
      ADD_FAILURE() << "accepted: " << j.dump().substr(0, 200);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::json base = nlohmann::json::parse(std::ifstream(byte_tokenizer(dir, byte_level)));
  auto with = [&](const std::string& ptr, const nlohmann::json& v) {
    nlohmann::json j = base;
    j[nlohmann::json::json_pointer(ptr)] = v;
    return j;
  };
  expect_error(with("/model/type", "WordPiece"), "model type 'WordPiece' is not supported");
  expect_error(with("/model/byte_fallback", true), "byte fallback is not supported");
  expect_error(with("/pre_tokenizer", nullptr), "pre_tokenizer: missing");
  expect_error(with("/pre_tokenizer", {{"type", "Whitespace"}}), "pre-tokenizer 'Whitespace' is not supported");
  expect_error(with("/pre_tokenizer", {{"type", "Digits"}}), "has no ByteLevel step");
  expect_error(with("/model/merges", {"a zz"}), "names a token not in the vocabulary");
  expect_error(with("/model/merges", {"ab"}), "is not two tokens separated by one space");
  expect_error(with("/model/vocab/a", 98), "id 98 names both");
  expect_error(with("/model/vocab/a", -3), "not an integer");
  expect_error(with("/normalizer", {{"type", "Lowercase"}}), "normalizer 'Lowercase' is not supported");
  expect_error(with("/pre_tokenizer", {{"type", "Sequence"},
                                       {"pretokenizers", {{{"type", "Split"},
                                                           {"pattern", {{"Regex", "(unclosed"}}},
                                                           {"behavior", "Isolated"}},
                                                          byte_level}}}),
               "regex does not compile");
  expect_error(with("/post_processor", {{"type", "TemplateProcessing"},
                                        {"single", {{{"SpecialToken", {{"id", "<s>"}}}}}},
                                        {"special_tokens", nlohmann::json::object()}}),
               "'<s>' is not in special_tokens");
  // Text: bounded and valid UTF-8.
  auto tok = load_hf_tokenizer(byte_tokenizer(dir, byte_level));
  EXPECT_THROW(tok->encode(std::string("ab\xff", 3), false), Error);
  EXPECT_THROW(tok->encode(std::string((size_t(1) << 22) + 1, 'a'), false), Error);
}

}  // namespace
}  // namespace evla::io
