// Typed access to a JSON object whose errors name the full key path
// ("config.json: llm.num_hidden_layers: expected an integer, got \"32\"").
#pragma once
#include <nlohmann/json.hpp>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace evla {

class JsonReader {
 public:
  JsonReader(const nlohmann::json& j, std::string source, std::string path = "");

  bool has(const std::string& key) const;
  JsonReader child(const std::string& key) const;  // required object
  JsonReader at(size_t index) const;               // element of an array node
  size_t size() const;                             // array length (requires an array)

  int64_t integer(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t fallback) const;
  // The same, for fields stored as int: a value outside int's range is an error
  // that names the key, never a silent wrap.
  int int32(const std::string& key) const;
  int int32(const std::string& key, int fallback) const;
  double number(const std::string& key) const;
  double number(const std::string& key, double fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::string string(const std::string& key) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  std::vector<double> numbers(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;
  std::vector<bool> booleans(const std::string& key) const;

  // Fails on a key of this object that is not in `known`, naming it and the
  // nearest known key ("unknown key 'drop_block' (did you mean 'drop_blocks'?)").
  void only_keys(std::initializer_list<const char*> known) const;

  // Throws evla::Error "<source>: <path.key>: <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  std::string key_path(const std::string& key) const;
  const nlohmann::json& node() const { return j_; }
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& need(const std::string& key) const;
  const nlohmann::json& j_;
  std::string source_, path_;
};

// Every JSON input (config.json, plans, analysis reports, safetensors headers
// and indexes) is parsed by parse_json() under these limits: containers nest
// at most kMaxJsonDepth levels (real inputs nest 5 at most, and nlohmann
// copies and prints recursively), an object names each key once (nlohmann
// would silently keep the last), and a file holds at most kMaxJsonFileBytes.
inline constexpr size_t kMaxJsonDepth = 32;
inline constexpr uint64_t kMaxJsonFileBytes = 64u << 20;

// Parses `text`; errors start with `what` ("<what> is not valid JSON: ...",
// "<what> nests deeper than 32 levels", "<what> names 'x' twice").
nlohmann::json parse_json(std::string_view text, const std::string& what,
                          uint64_t max_bytes = kMaxJsonFileBytes);
// The known key closest to `key` by edit distance ("" when none is known):
// what a "did you mean" names.
std::string nearest_key(const std::string& key, const std::vector<std::string>& known);

// Parses a file into JSON under the same limits; errors name the file.
nlohmann::json read_json_file(const std::string& path);
// The text of a JSON file, refused beyond kMaxJsonFileBytes or as a directory.
std::string read_json_text(const std::string& path);

}  // namespace evla
