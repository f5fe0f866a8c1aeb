#include "core/json_reader.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>

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

json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {  // parse errors, and numbers out of range
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace evla
