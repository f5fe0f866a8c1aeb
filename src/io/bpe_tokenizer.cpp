#include "io/bpe_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <queue>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "core/json_reader.h"
#include "evla/error.h"

namespace evla::io {
namespace {

constexpr size_t kMaxVocab = size_t(1) << 22;
constexpr size_t kMaxTokenBytes = 1024;       // longest token text accepted
constexpr size_t kMaxTextBytes = size_t(1) << 22;  // longest text encoded

// GPT-2's split, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's byte → code point table: printable Latin-1 bytes stand for
// themselves, the others for 256, 257, … in byte order.
struct ByteAlphabet {
  std::array<std::string, 256> symbol;     // UTF-8 of each byte's code point
  std::unordered_map<UChar32, uint8_t> byte;  // and back
  ByteAlphabet() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const UChar32 cp = printable ? b : next++;
      std::string s;
      icu::UnicodeString(cp).toUTF8String(s);
      symbol[size_t(b)] = s;
      byte[cp] = uint8_t(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// Code points of valid UTF-8 (the caller checked it).
template <typename F>
void each_code_point(const std::string& s, F&& f) {
  int32_t i = 0;
  const int32_t n = int32_t(s.size());
  while (i < n) {
    const int32_t start = i;
    UChar32 c;
    U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), i, n, c);
    f(c, size_t(start), size_t(i - start));
  }
}

bool valid_utf8(const std::string& s) {
  int32_t i = 0;
  const int32_t n = int32_t(s.size());
  while (i < n) {
    UChar32 c;
    U8_NEXT(reinterpret_cast<const uint8_t*>(s.data()), i, n, c);
    if (c < 0) return false;
  }
  return true;
}

bool is_numeric(UChar32 c) {
  const int8_t t = u_charType(c);
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

// A text split into pieces by a rule that marks some stretches as matches:
// what each behaviour keeps of the matches and the stretches between them.
struct Stretch {
  std::string text;
  bool match;
};
void keep(const std::vector<Stretch>& parts, Behavior b, std::vector<std::string>& out) {
  std::vector<std::string> pieces;
  bool last_was_match = false;
  for (const Stretch& s : parts) {
    switch (b) {
      case Behavior::Isolated: pieces.push_back(s.text); break;
      case Behavior::Removed:
        if (!s.match) pieces.push_back(s.text);
        break;
      case Behavior::MergedWithPrevious:
        if (s.match && !pieces.empty() && !last_was_match) pieces.back() += s.text;
        else pieces.push_back(s.text);
        break;
      case Behavior::MergedWithNext:
        if (!s.match && last_was_match && !pieces.empty()) pieces.back() += s.text;
        else pieces.push_back(s.text);
        break;
      case Behavior::Contiguous:
        if (s.match && last_was_match && !pieces.empty()) pieces.back() += s.text;
        else pieces.push_back(s.text);
        break;
    }
    last_was_match = s.match;
  }
  for (std::string& p : pieces)
    if (!p.empty()) out.push_back(std::move(p));
}

struct PreStep {
  enum class Kind { Split, Digits, ByteLevel } kind;
  std::unique_ptr<icu::RegexPattern> pattern;  // Split, ByteLevel with use_regex
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool individual_digits = false;
  bool add_prefix_space = false;

  void apply(const std::string& piece, std::vector<std::string>& out) const {
    std::string text = piece;
    if (kind == Kind::ByteLevel && add_prefix_space && text.rfind(' ', 0) != 0) text = " " + text;
    std::vector<Stretch> parts;
    if (kind == Kind::Digits) {
      each_code_point(text, [&](UChar32 c, size_t at, size_t len) {
        const bool digit = is_numeric(c);
        if (!parts.empty() && parts.back().match == digit && !(digit && individual_digits))
          parts.back().text.append(text, at, len);
        else
          parts.push_back({text.substr(at, len), digit});
      });
    } else if (pattern) {
      const icu::UnicodeString u = icu::UnicodeString::fromUTF8(text);
      UErrorCode err = U_ZERO_ERROR;
      std::unique_ptr<icu::RegexMatcher> m(pattern->matcher(u, err));
      if (U_FAILURE(err)) throw Error(std::string("tokenizer regex: ") + u_errorName(err));
      int32_t at = 0;
      auto add = [&](int32_t from, int32_t to, bool match) {
        if (to <= from) return;
        std::string s;
        u.tempSubStringBetween(from, to).toUTF8String(s);
        parts.push_back({std::move(s), match != invert});
      };
      while (m->find(err) && U_SUCCESS(err)) {
        const int32_t s = m->start(err), e = m->end(err);
        if (e == s) continue;  // an empty match splits nothing
        add(at, s, false);
        add(s, e, true);
        at = e;
      }
      if (U_FAILURE(err)) throw Error(std::string("tokenizer regex: ") + u_errorName(err));
      add(at, u.length(), false);
    } else {
      parts.push_back({text, false});
    }
    if (kind != Kind::ByteLevel) return keep(parts, behavior, out);
    // ByteLevel: GPT-2's pieces, each byte as its printable code point.
    std::vector<std::string> split;
    keep(parts, Behavior::Isolated, split);
    for (const std::string& s : split) {
      std::string mapped;
      for (unsigned char b : s) mapped += alphabet().symbol[b];
      out.push_back(std::move(mapped));
    }
  }
};

// The array `key` of `r`, read element by element.
JsonReader array(const JsonReader& r, const std::string& key) {
  if (!r.has(key) || !r.node()[key].is_array()) r.fail(key, "expected an array");
  return JsonReader(r.node()[key], r.source(), r.key_path(key));
}

struct AddedToken {
  int id;
  std::string content;
  bool lstrip = false, rstrip = false, single_word = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(const std::string& path) : path_(path) {
    const nlohmann::json j = read_json_file(path);
    const JsonReader root(j, path);
    read_model(root.child("model"));
    read_added(root);
    read_normalizer(root);
    read_pre_tokenizer(root);
    read_post_processor(root);
  }

  std::vector<int> encode(const std::string& text, bool add_bos) const override {
    if (text.size() > kMaxTextBytes)
      throw Error(fmt::format("{}: text of {} bytes is longer than the {} the tokenizer takes", path_, text.size(),
                              kMaxTextBytes));
    if (!valid_utf8(text)) throw Error(fmt::format("{}: the text is not valid UTF-8", path_));
    std::vector<int> ids;
    if (add_bos) ids = prefix_;
    size_t plain = 0;  // start of the text not yet encoded
    for (size_t i = 0; i < text.size();) {
      size_t from = 0, to = 0;
      const AddedToken* t = added_at(text, i, plain, from, to);
      if (!t) {
        ++i;
        continue;
      }
      encode_plain(text.substr(plain, from - plain), ids);
      ids.push_back(t->id);
      plain = i = to;
    }
    encode_plain(text.substr(plain), ids);
    if (add_bos) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out, symbols;
    auto flush = [&] {
      each_code_point(symbols, [&](UChar32 c, size_t at, size_t len) {
        auto it = alphabet().byte.find(c);
        if (it != alphabet().byte.end()) out += char(it->second);
        else out.append(symbols, at, len);  // not a byte symbol: kept as written
      });
      symbols.clear();
    };
    for (int id : ids) {
      if (id < 0 || size_t(id) >= token_.size() || (token_[size_t(id)].empty() && !added_ids_.count(id)))
        throw Error(fmt::format("{}: token id {} is not in the vocabulary", path_, id));
      if (added_ids_.count(id)) {
        flush();
        out += token_[size_t(id)];
      } else {
        symbols += token_[size_t(id)];
      }
    }
    flush();
    return out;
  }

  int vocab_size() const override { return int(token_.size()); }
  int bos_id() const override { return prefix_.empty() ? -1 : prefix_.front(); }
  int eos_id() const override { return suffix_.empty() ? -1 : suffix_.back(); }

 private:
  [[noreturn]] void unsupported(const JsonReader& r, const std::string& key, const std::string& what) const {
    r.fail(key, what + " is not supported (evla reads byte-level BPE tokenizers)");
  }

  void read_model(const JsonReader& m) {
    if (m.string("type", "BPE") != "BPE") unsupported(m, "type", "model type '" + m.string("type") + "'");
    if (m.has("dropout") && !m.node()["dropout"].is_null() && m.number("dropout") != 0)
      unsupported(m, "dropout", "BPE dropout");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.has(k) && !m.node()[k].is_null() && !m.string(k).empty()) unsupported(m, k, k);
    if (m.boolean("byte_fallback", false)) unsupported(m, "byte_fallback", "byte fallback");
    ignore_merges_ = m.boolean("ignore_merges", false);
    const nlohmann::json& vocab = m.node().at("vocab");
    if (!vocab.is_object()) m.fail("vocab", "expected an object of token → id");
    if (vocab.size() > kMaxVocab) m.fail("vocab", fmt::format("{} tokens, more than {}", vocab.size(), kMaxVocab));
    for (const auto& [text, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= int64_t(kMaxVocab))
        m.fail("vocab", fmt::format("token '{}' has id {}, not an integer in [0, {})", text, id.dump(), kMaxVocab));
      if (text.empty() || text.size() > kMaxTokenBytes || !valid_utf8(text))
        m.fail("vocab", fmt::format("token with id {} is empty, longer than {} bytes or not UTF-8", id.dump(),
                                    kMaxTokenBytes));
      set_token(m, "vocab", int(id.get<int64_t>()), text);
      vocab_[text] = int(id.get<int64_t>());
    }
    if (m.has("unk_token") && !m.node()["unk_token"].is_null()) {
      auto it = vocab_.find(m.string("unk_token"));
      if (it == vocab_.end()) m.fail("unk_token", "'" + m.string("unk_token") + "' is not in the vocabulary");
      unk_ = it->second;
    }
    const nlohmann::json& merges = m.node().at("merges");
    if (!merges.is_array()) m.fail("merges", "expected an array");
    for (size_t r = 0; r < merges.size(); ++r) {
      std::string a, b;
      const nlohmann::json& e = merges[r];
      if (e.is_string()) {  // "a b"
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
          m.fail("merges", fmt::format("entry {} ('{}') is not two tokens separated by one space", r, s));
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        a = e[0].get<std::string>(), b = e[1].get<std::string>();
      } else {
        m.fail("merges", fmt::format("entry {} is neither \"a b\" nor [\"a\", \"b\"]", r));
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b), ab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || ab == vocab_.end())
        m.fail("merges", fmt::format("entry {} ('{}' + '{}') names a token not in the vocabulary", r, a, b));
      merges_.emplace(pair_key(ia->second, ib->second), Merge{int(r), ab->second});  // the first rank wins
    }
  }

  void set_token(const JsonReader& r, const std::string& key, int id, const std::string& text) {
    if (size_t(id) >= token_.size()) token_.resize(size_t(id) + 1);
    if (!token_[size_t(id)].empty() && token_[size_t(id)] != text)
      r.fail(key, fmt::format("id {} names both '{}' and '{}'", id, token_[size_t(id)], text));
    token_[size_t(id)] = text;
  }

  void read_added(const JsonReader& root) {
    if (!root.has("added_tokens") || root.node()["added_tokens"].is_null()) return;
    const JsonReader list = array(root, "added_tokens");
    for (size_t i = 0; i < list.size(); ++i) {
      const JsonReader t = list.at(i);
      AddedToken a{t.int32("id"), t.string("content"), t.boolean("lstrip", false), t.boolean("rstrip", false),
                   t.boolean("single_word", false)};
      if (a.id < 0 || size_t(a.id) >= kMaxVocab) t.fail("id", fmt::format("{} is outside [0, {})", a.id, kMaxVocab));
      if (a.content.empty() || a.content.size() > kMaxTokenBytes || !valid_utf8(a.content))
        t.fail("content", fmt::format("empty, longer than {} bytes or not UTF-8", kMaxTokenBytes));
      if (size_t(a.id) < token_.size() && !token_[size_t(a.id)].empty() && token_[size_t(a.id)] != a.content &&
          !added_ids_.count(a.id))
        t.fail("id", fmt::format("{} is '{}' in the vocabulary", a.id, token_[size_t(a.id)]));
      if (size_t(a.id) >= token_.size()) token_.resize(size_t(a.id) + 1);
      token_[size_t(a.id)] = a.content;
      added_ids_.insert(a.id);
      added_.push_back(std::move(a));
    }
    // Longest first: at one position the longest token wins.
    std::stable_sort(added_.begin(), added_.end(),
                     [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  }

  void read_normalizer(const JsonReader& root) {
    if (!root.has("normalizer") || root.node()["normalizer"].is_null()) return;
    auto one = [&](const JsonReader& n) {
      const std::string type = n.string("type");
      UErrorCode err = U_ZERO_ERROR;
      const icu::Normalizer2* form = type == "NFC"    ? icu::Normalizer2::getNFCInstance(err)
                                     : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(err)
                                     : type == "NFD"  ? icu::Normalizer2::getNFDInstance(err)
                                     : type == "NFKD" ? icu::Normalizer2::getNFKDInstance(err)
                                                      : nullptr;
      if (!form) unsupported(n, "type", "normalizer '" + type + "'");
      if (U_FAILURE(err)) n.fail("type", std::string("ICU: ") + u_errorName(err));
      normalizers_.push_back(form);
    };
    const JsonReader n = root.child("normalizer");
    if (n.string("type") == "Sequence") {
      const JsonReader list = array(n, "normalizers");
      for (size_t i = 0; i < list.size(); ++i) one(list.at(i));
    } else {
      one(n);
    }
  }

  void read_pre_tokenizer(const JsonReader& root) {
    if (!root.has("pre_tokenizer") || root.node()["pre_tokenizer"].is_null())
      root.fail("pre_tokenizer", "missing: a byte-level tokenizer has a ByteLevel pre-tokenizer");
    const JsonReader p = root.child("pre_tokenizer");
    if (p.string("type") == "Sequence") {
      const JsonReader list = array(p, "pretokenizers");
      for (size_t i = 0; i < list.size(); ++i) pre_.push_back(read_step(list.at(i)));
    } else {
      pre_.push_back(read_step(p));
    }
    bool byte_level = false;
    for (const PreStep& s : pre_) byte_level |= s.kind == PreStep::Kind::ByteLevel;
    if (!byte_level) root.fail("pre_tokenizer", "has no ByteLevel step: only byte-level BPE tokenizers are supported");
    if (pre_.back().kind != PreStep::Kind::ByteLevel)
      root.fail("pre_tokenizer", "steps after ByteLevel are not supported");
  }

  PreStep read_step(const JsonReader& s) const {
    PreStep step;
    const std::string type = s.string("type");
    if (type == "ByteLevel") {
      step.kind = PreStep::Kind::ByteLevel;
      step.add_prefix_space = s.boolean("add_prefix_space", false);
      if (s.boolean("use_regex", true)) step.pattern = compile(s, "use_regex", kGpt2Pattern);
    } else if (type == "Digits") {
      step.kind = PreStep::Kind::Digits;
      step.individual_digits = s.boolean("individual_digits", false);
      step.behavior = Behavior::Isolated;
    } else if (type == "Split") {
      step.kind = PreStep::Kind::Split;
      const JsonReader pat = s.child("pattern");
      if (pat.has("Regex")) {
        step.pattern = compile(pat, "Regex", pat.string("Regex"));
      } else {
        // A literal string, quoted so that the regex engine matches it as is
        // (a "\E" inside it closes the quote, is written escaped, and reopens it).
        std::string quoted = "\\Q";
        for (char c : pat.string("String")) {
          quoted += c;
          if (quoted.size() >= 2 && quoted.compare(quoted.size() - 2, 2, "\\E") == 0) quoted += "\\\\E\\Q";
        }
        step.pattern = compile(pat, "String", quoted + "\\E");
      }
      const std::string b = s.string("behavior");
      step.behavior = b == "Isolated"             ? Behavior::Isolated
                      : b == "Removed"            ? Behavior::Removed
                      : b == "MergedWithPrevious" ? Behavior::MergedWithPrevious
                      : b == "MergedWithNext"     ? Behavior::MergedWithNext
                      : b == "Contiguous"         ? Behavior::Contiguous
                                                  : (s.fail("behavior", "unknown split behaviour '" + b + "'"), Behavior{});
      step.invert = s.boolean("invert", false);
    } else {
      unsupported(s, "type", "pre-tokenizer '" + type + "'");
    }
    return step;
  }

  static std::unique_ptr<icu::RegexPattern> compile(const JsonReader& r, const std::string& key,
                                                    const std::string& pattern) {
    UErrorCode err = U_ZERO_ERROR;
    UParseError pe{};
    std::unique_ptr<icu::RegexPattern> p(
        icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), 0, pe, err));
    if (U_FAILURE(err)) r.fail(key, fmt::format("regex does not compile at offset {}: {}", pe.offset, u_errorName(err)));
    return p;
  }

  void read_post_processor(const JsonReader& root) {
    if (!root.has("post_processor") || root.node()["post_processor"].is_null()) return;
    auto one = [&](const JsonReader& p) {
      const std::string type = p.string("type");
      if (type == "ByteLevel") return;  // offsets only
      if (type != "TemplateProcessing") unsupported(p, "type", "post-processor '" + type + "'");
      const JsonReader single = array(p, "single");
      const JsonReader specials = p.child("special_tokens");
      bool seen_sequence = false;
      for (size_t i = 0; i < single.size(); ++i) {
        const JsonReader part = single.at(i);
        if (part.has("Sequence")) {
          seen_sequence = true;
          continue;
        }
        const std::string name = part.child("SpecialToken").string("id");
        if (!specials.has(name)) part.fail("SpecialToken", "'" + name + "' is not in special_tokens");
        for (int64_t id : specials.child(name).integers("ids")) {
          if (id < 0 || size_t(id) >= token_.size() || token_[size_t(id)].empty())
            specials.fail(name, fmt::format("id {} is not in the vocabulary", id));
          (seen_sequence ? suffix_ : prefix_).push_back(int(id));
        }
      }
    };
    const JsonReader p = root.child("post_processor");
    if (p.string("type") == "Sequence") {
      const JsonReader list = array(p, "processors");
      for (size_t i = 0; i < list.size(); ++i) one(list.at(i));
    } else {
      one(p);
    }
  }

  // The added token matched at byte `i` of `text` (nullptr if none), and the
  // stretch [from, to) it takes with its stripped whitespace (lstrip never
  // reaches back before `floor`, the end of the previous match).
  const AddedToken* added_at(const std::string& text, size_t i, size_t floor, size_t& from, size_t& to) const {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    auto word = [&](size_t at) { return at < text.size() && (std::isalnum(static_cast<unsigned char>(text[at])) || text[at] == '_'); };
    for (const AddedToken& t : added_) {
      if (text[i] != t.content[0] || text.compare(i, t.content.size(), t.content) != 0) continue;
      from = i, to = i + t.content.size();
      if (t.single_word && ((i > 0 && word(i - 1)) || word(to))) continue;
      if (t.lstrip)
        while (from > floor && space(text[from - 1])) --from;
      if (t.rstrip)
        while (to < text.size() && space(text[to])) ++to;
      return &t;
    }
    return nullptr;
  }

  void encode_plain(const std::string& raw, std::vector<int>& ids) const {
    if (raw.empty()) return;
    std::string text = raw;
    for (const icu::Normalizer2* n : normalizers_) {
      UErrorCode err = U_ZERO_ERROR;
      const icu::UnicodeString u = n->normalize(icu::UnicodeString::fromUTF8(text), err);
      if (U_FAILURE(err)) throw Error(fmt::format("{}: normalizing the text: {}", path_, u_errorName(err)));
      text.clear();
      u.toUTF8String(text);
    }
    std::vector<std::string> pieces{text};
    for (const PreStep& step : pre_) {
      std::vector<std::string> next;
      for (const std::string& p : pieces) step.apply(p, next);
      pieces = std::move(next);
    }
    for (const std::string& p : pieces) bpe(p, ids);
  }

  struct Merge {
    int rank, id;
  };
  static uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  // One piece of byte symbols to ids: the lowest-ranked adjacent pair merged
  // first (the leftmost of equal ranks), until no pair merges.
  void bpe(const std::string& piece, std::vector<int>& ids) const {
    if (ignore_merges_)
      if (auto it = vocab_.find(piece); it != vocab_.end()) return ids.push_back(it->second);
    struct Sym {
      int id, prev, next;
    };
    std::vector<Sym> s;
    each_code_point(piece, [&](UChar32, size_t at, size_t len) {
      auto it = vocab_.find(piece.substr(at, len));
      if (it != vocab_.end()) s.push_back({it->second, int(s.size()) - 1, int(s.size()) + 1});
      else if (unk_ >= 0) s.push_back({unk_, int(s.size()) - 1, int(s.size()) + 1});
      // else: a symbol with no token is dropped, as the tokenizers library does
    });
    if (s.empty()) return;
    s.back().next = -1;
    struct Cand {
      int rank, pos, left, right;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    auto push = [&](int i) {
      if (i < 0 || s[size_t(i)].next < 0) return;
      const int j = s[size_t(i)].next;
      auto it = merges_.find(pair_key(s[size_t(i)].id, s[size_t(j)].id));
      if (it != merges_.end()) queue.push({it->second.rank, i, s[size_t(i)].id, s[size_t(j)].id});
    };
    for (int i = 0; i < int(s.size()); ++i) push(i);
    while (!queue.empty()) {
      const Cand c = queue.top();
      queue.pop();
      Sym& a = s[size_t(c.pos)];
      if (a.id != c.left || a.next < 0 || s[size_t(a.next)].id != c.right) continue;  // stale
      const int j = a.next;
      a.id = merges_.at(pair_key(c.left, c.right)).id;
      a.next = s[size_t(j)].next;
      if (a.next >= 0) s[size_t(a.next)].prev = c.pos;
      s[size_t(j)].id = -1;  // gone
      push(a.prev);
      push(c.pos);
    }
    for (int i = 0; i >= 0; i = s[size_t(i)].next) ids.push_back(s[size_t(i)].id);
  }

  std::string path_;
  std::unordered_map<std::string, int> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::string> token_;  // by id: vocabulary text or added token content
  std::vector<AddedToken> added_;
  std::set<int> added_ids_;
  std::vector<const icu::Normalizer2*> normalizers_;
  std::vector<PreStep> pre_;
  std::vector<int> prefix_, suffix_;  // the post-processor's template around the text
  int unk_ = -1;
  bool ignore_merges_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) { return std::make_unique<BpeTokenizer>(path); }

}  // namespace evla::io
