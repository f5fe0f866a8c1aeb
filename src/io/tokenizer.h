// Text -> token ids. SentencePiece (the format Llama checkpoints ship) through
// Debian's libsentencepiece, and byte-level BPE from Hugging Face's
// tokenizer.json (bpe_tokenizer.h), behind one interface.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace evla::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`, with BOS first when add_bos (for tokenizer.json: what its
  // post-processor adds, which may be nothing).
  virtual std::vector<int> encode(const std::string& text, bool add_bos) const = 0;
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
};

// Opens a SentencePiece model file. Throws evla::Error naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);
// A tokenizer.json (name ending in .json) or else a SentencePiece model.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace evla::io
