#include "core/json_reader.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <limits>
#include <sstream>

#include <fmt/format.h>

#include "evla/error.h"

namespace evla {

using nlohmann::json;

JsonReader::JsonReader(const json& j, std::string source, std::string path)
    : j_(j), source_(std::move(source)), path_(std::move(path)) {
  if (!j_.is_object() && !j_.is_array())
    throw Error(source_ + ": " + (path_.empty() ? "top level" : path_) +
                ": expected an object, got " + j_.type_name());
}

std::string JsonReader::key_path(const std::string& key) const {
  if (path_.empty()) return key;
  if (!key.empty() && key[0] == '[') return path_ + key;
  return path_ + "." + key;
}

void JsonReader::fail(const std::string& key, const std::string& message) const {
  throw Error(source_ + ": " + key_path(key) + ": " + message);
}

bool JsonReader::has(const std::string& key) const {
  return j_.is_object() && j_.contains(key) && !j_.at(key).is_null();
}

const json& JsonReader::need(const std::string& key) const {
  if (!has(key)) fail(key, "missing required key");
  return j_.at(key);
}

JsonReader JsonReader::child(const std::string& key) const {
  const json& c = need(key);
  if (!c.is_object()) fail(key, std::string("expected an object, got ") + c.type_name());
  return JsonReader(c, source_, key_path(key));
}

size_t JsonReader::size() const {
  if (!j_.is_array()) throw Error(source_ + ": " + path_ + ": expected an array");
  return j_.size();
}

JsonReader JsonReader::at(size_t index) const {
  const std::string key = "[" + std::to_string(index) + "]";
  if (!j_.is_array() || index >= j_.size()) fail(key, "index out of range");
  if (!j_[index].is_object()) fail(key, "expected an object");
  return JsonReader(j_[index], source_, key_path(key));
}

namespace {

// The value of an integral JSON number that fits int64 (1e3 and 4.0 count,
// 4.5 and 1e53 do not: converting those would be undefined behaviour).
bool as_int64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > uint64_t(INT64_MAX)) return false;
    *out = int64_t(v.get<uint64_t>());
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  if (!(d >= -0x1p63 && d < 0x1p63) || d != std::trunc(d)) return false;  // also rejects NaN
  *out = int64_t(d);
  return true;
}

}  // namespace

int64_t JsonReader::integer(const std::string& key) const {
  const json& v = need(key);
  int64_t out;
  if (!as_int64(v, &out)) fail(key, "expected an integer, got " + v.dump());
  return out;
}

int64_t JsonReader::integer(const std::string& key, int64_t fallback) const {
  return has(key) ? integer(key) : fallback;
}

int JsonReader::int32(const std::string& key) const {
  const int64_t v = integer(key);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    fail(key, "integer out of range: " + std::to_string(v));
  return int(v);
}

int JsonReader::int32(const std::string& key, int fallback) const {
  return has(key) ? int32(key) : fallback;
}

double JsonReader::number(const std::string& key) const {
  const json& v = need(key);
  if (!v.is_number()) fail(key, "expected a number, got " + v.dump());
  return v.get<double>();
}

double JsonReader::number(const std::string& key, double fallback) const {
  return has(key) ? number(key) : fallback;
}

bool JsonReader::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const json& v = j_.at(key);
  if (!v.is_boolean()) fail(key, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

std::string JsonReader::string(const std::string& key) const {
  const json& v = need(key);
  if (!v.is_string()) fail(key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

std::string JsonReader::string(const std::string& key, const std::string& fallback) const {
  return has(key) ? string(key) : fallback;
}

std::vector<double> JsonReader::numbers(const std::string& key) const {
  const json& v = need(key);
  if (!v.is_array()) fail(key, "expected an array of numbers, got " + v.dump());
  std::vector<double> out;
  for (const auto& e : v) {
    if (!e.is_number()) fail(key, "expected an array of numbers, found " + e.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

std::vector<int64_t> JsonReader::integers(const std::string& key) const {
  const json& v = need(key);
  if (!v.is_array()) fail(key, "expected an array of integers, got " + v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    int64_t x;
    if (!e.is_number_integer() || !as_int64(e, &x)) fail(key, "expected an array of integers, found " + e.dump());
    out.push_back(x);
  }
  return out;
}

std::vector<bool> JsonReader::booleans(const std::string& key) const {
  const json& v = need(key);
  if (!v.is_array()) fail(key, "expected an array of booleans, got " + v.dump());
  std::vector<bool> out;
  for (const auto& e : v) {
    if (!e.is_boolean()) fail(key, "expected an array of booleans, found " + e.dump());
    out.push_back(e.get<bool>());
  }
  return out;
}

namespace {

// Messages may quote raw input bytes; keep only printable ASCII so that an
// error can itself be logged or sent as JSON.
std::string printable(std::string s) {
  for (char& c : s)
    if (c < 0x20 || c > 0x7e) c = '?';
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string nearest_key(const std::string& key, const std::vector<std::string>& known) {
  std::string nearest;
  size_t best = SIZE_MAX;
  for (const std::string& k : known) {
    const size_t d = edit_distance(key, k);
    if (d < best) best = d, nearest = k;
  }
  return nearest;
}

void JsonReader::only_keys(std::initializer_list<const char*> known) const {
  if (!j_.is_object()) return;
  const std::vector<std::string> names(known.begin(), known.end());
  for (const auto& [key, value] : j_.items()) {
    if (std::find(names.begin(), names.end(), key) != names.end()) continue;
    const std::string nearest = nearest_key(key, names);
    std::string msg = "unknown key";
    if (!nearest.empty()) msg += " (did you mean '" + nearest + "'?)";
    fail(printable(key.substr(0, 64)), msg);
  }
}

namespace {


// Builds the DOM through nlohmann's SAX interface with two checks of our own:
// no key twice in one object (nlohmann would silently keep the last of two
// equal keys, and a header that names a tensor twice has no single meaning)
// and no deep nesting (nlohmann's copy and dump() recurse: a config.json of a
// million nested arrays overflowed the stack). nlohmann's parser callback could check the
// same, but after every nested object it rescans the whole parent, which made
// a 258-tensor header cost ~2 ms.
class CheckedDomBuilder : public nlohmann::json_sax<json> {
 public:
  CheckedDomBuilder(json& root, const std::string& what) : root_(root), what_(what) {}
  bool null() override { return put(nullptr); }
  bool boolean(bool v) override { return put(v); }
  bool number_integer(number_integer_t v) override { return put(v); }
  bool number_unsigned(number_unsigned_t v) override { return put(v); }
  bool number_float(number_float_t v, const string_t&) override { return put(v); }
  bool string(string_t& v) override { return put(std::move(v)); }
  bool binary(binary_t& v) override { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second)
      throw Error(open_.size() == 1 ? fmt::format("{} names '{}' twice", what_, k)
                                    : fmt::format("{} has key '{}' twice in one object", what_, k));
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    open_.pop_back();
    return true;
  }
  bool end_array() override {
    open_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) override {
    throw Error(fmt::format("{} is not valid JSON: {}", what_, printable(e.what())));
  }

 private:
  // Places v as the root, the next array element or the value of the last key.
  json* place(json v) {
    if (open_.empty()) return &(root_ = std::move(v));
    json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    return &(parent[key_] = std::move(v));
  }
  bool put(json v) {
    place(std::move(v));
    return true;
  }
  bool open(json container) {
    if (open_.size() >= kMaxJsonDepth)
      throw Error(fmt::format("{} nests deeper than {} levels", what_, kMaxJsonDepth));
    if (container.is_object()) keys_.emplace_back();
    // Elements of an array are appended only while it is the innermost open
    // container, so the pointers kept here stay valid.
    open_.push_back(place(std::move(container)));
    return true;
  }
  json& root_;
  const std::string& what_;
  std::vector<json*> open_;
  std::vector<std::set<std::string>> keys_;
  std::string key_;
};

}  // namespace

json parse_json(std::string_view text, const std::string& what, uint64_t max_bytes) {
  if (text.size() > max_bytes)
    throw Error(fmt::format("{} is {} bytes, more than the limit of {} bytes for JSON", what, text.size(), max_bytes));
  json root;
  CheckedDomBuilder sax(root, what);
  try {
    json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{} is not valid JSON: {}", what, printable(e.what())));
  }
  return root;
}

std::string read_json_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": is a directory, not a JSON file");
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxJsonFileBytes)
    throw Error(fmt::format("{} is {} bytes, more than the limit of {} bytes for JSON", path, size, kMaxJsonFileBytes));
  std::string text;
  char buf[65536];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    text.append(buf, size_t(f.gcount()));
    if (text.size() > kMaxJsonFileBytes)  // a pipe or device: no size in advance
      throw Error(fmt::format("{} is more than the limit of {} bytes for JSON", path, kMaxJsonFileBytes));
  }
  if (f.bad()) throw Error(path + ": cannot read");
  return text;
}

json read_json_file(const std::string& path) { return parse_json(read_json_text(path), path); }

}  // namespace evla
