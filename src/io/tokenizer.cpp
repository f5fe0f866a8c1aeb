// SentencePiece tokenizer through Debian's libsentencepiece.
#include "io/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include <fmt/format.h>

#include "evla/error.h"
#include "io/bpe_tokenizer.h"

namespace evla::io {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    // libsentencepiece's own message for a missing file does not say which.
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw Error(fmt::format("{}: tokenizer model not found", path));
    check(sp_.Load(path), "cannot load SentencePiece model");
  }

  std::vector<int> encode(const std::string& text, bool add_bos) const override {
    std::vector<int> ids;
    check(sp_.Encode(text, &ids), "cannot encode text");
    if (add_bos) {
      if (sp_.bos_id() < 0) throw Error(fmt::format("{}: the model has no BOS token", path_));
      ids.insert(ids.begin(), sp_.bos_id());
    }
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const override {
    // Checked here so a bad id is an evla::Error naming the id, whatever the
    // library version does with it.
    const int n = sp_.GetPieceSize();
    for (int id : ids)
      if (id < 0 || id >= n)
        throw Error(fmt::format("{}: token id {} is outside the vocabulary [0, {})", path_, id, n));
    std::string text;
    check(sp_.Decode(ids, &text), "cannot decode ids");
    return text;
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }

 private:
  void check(const sentencepiece::util::Status& status, const char* what) const {
    if (!status.ok()) throw Error(fmt::format("{}: {}: {}", path_, what, status.ToString()));
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  return path.ends_with(".json") ? load_hf_tokenizer(path) : load_sentencepiece(path);
}

}  // namespace evla::io
