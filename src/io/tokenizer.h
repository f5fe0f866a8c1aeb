// Text -> token ids. SentencePiece (the format Llama checkpoints ship) through
// Debian's libsentencepiece; other tokenizers implement the same interface.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace evla::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`, with BOS first when add_bos.
  virtual std::vector<int> encode(const std::string& text, bool add_bos) const = 0;
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
};

// Opens a SentencePiece model file. Throws evla::Error naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);

}  // namespace evla::io
