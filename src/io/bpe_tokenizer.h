// Byte-level BPE tokenizers in Hugging Face's tokenizer.json format: the one
// GPT-2, StarCoder, SmolLM2 / SmolVLM2 (SmolVLA's), Llama 3 and Qwen 2 ship.
//
// Encoding, as the `tokenizers` library does it:
//  1. added tokens (special or not) are split out first, longest match at the
//     leftmost position, with their lstrip / rstrip / single_word rules;
//  2. the normalizer (none, or NFC / NFKC / NFD / NFKD);
//  3. the pre-tokenizer, a Sequence of: Split by a regex (ICU's engine, which
//     reads the same \p{L} / \p{N} / lookahead patterns), Digits (each digit
//     or each run of digits apart), ByteLevel (GPT-2's split, optionally,
//     then every UTF-8 byte mapped to a printable code point);
//  4. BPE on each piece: its byte symbols merged pair by pair, lowest merge
//     rank first (leftmost on ties), looked up in the vocabulary; a symbol
//     the vocabulary lacks is dropped (unk_token null) or becomes unk_token;
//  5. with add_bos, the post-processor's single-sequence template (for
//     SmolVLM2 none: nothing is added).
// Decoding maps the byte symbols back to bytes. Everything else (WordPiece,
// Unigram, byte fallback, other normalizers) is refused by name.
#pragma once
#include <memory>
#include <string>

#include "io/tokenizer.h"

namespace evla::io {

// Reads `path` (a tokenizer.json); throws evla::Error naming the file and the
// field that is wrong or not supported.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);

}  // namespace evla::io
