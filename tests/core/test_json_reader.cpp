// Typed JSON access: integers that fit are read, everything else is a named error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/json_reader.h"
#include "evla/error.h"

namespace evla {
namespace {

int64_t read_int(const std::string& text) {
  const auto j = nlohmann::json::parse("{\"n\": " + text + "}");
  return JsonReader(j, "t.json").integer("n");
}

std::string int_error(const std::string& text) {
  try {
    read_int(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonReader, IntegersThatFitAreRead) {
  EXPECT_EQ(read_int("7"), 7);
  EXPECT_EQ(read_int("-3"), -3);
  EXPECT_EQ(read_int("4.0"), 4);
  EXPECT_EQ(read_int("1e3"), 1000);
  EXPECT_EQ(read_int("9223372036854775807"), INT64_MAX);
}

// Found by fuzz_config: 1e53 as an integer field was converted to int64
// unchecked (undefined behaviour).
TEST(JsonReader, OutOfRangeAndFractionalIntegersAreErrors) {
  for (const char* bad : {"1.11111e53", "-1e19", "9223372036854775808", "18446744073709551615", "4.5", "\"4\""}) {
    const std::string msg = int_error(bad);
    EXPECT_NE(msg.find("t.json: n: expected an integer"), std::string::npos) << bad << " -> " << msg;
  }
  const auto j = nlohmann::json::parse(R"({"v": [1, 18446744073709551615]})");
  EXPECT_THROW(JsonReader(j, "t.json").integers("v"), Error);
}

std::string parse_error(const std::string& text, uint64_t max_bytes = kMaxJsonFileBytes) {
  try {
    parse_json(text, "in.json", max_bytes);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ParseJson, DepthKeysAndSizeAreBounded) {
  const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_EQ(parse_error(ok), "");
  EXPECT_EQ(parse_error("[" + ok + "]"), "in.json nests deeper than 32 levels");
  EXPECT_EQ(parse_error(R"({"a": {"b": 1, "b": 2}})"), "in.json has key 'b' twice in one object");
  EXPECT_EQ(parse_error("[1, 2]", 5), "in.json is 6 bytes, more than the limit of 5 bytes for JSON");
  EXPECT_NE(parse_error("[1,").find("in.json is not valid JSON"), std::string::npos);
}

TEST(ParseJson, FilesAreBoundedAndDirectoriesNamed) {
  const std::string dir = ::testing::TempDir();
  try {
    read_json_file(dir);
    FAIL() << "a directory was read as JSON";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory, not a JSON file"), std::string::npos) << e.what();
  }
  const std::string big = dir + "/big.json";
  {
    std::ofstream f(big);
    f << "[";
    f << std::string(kMaxJsonFileBytes, ' ') << "]";
  }
  try {
    read_json_file(big);
    FAIL() << "an oversized file was parsed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than the limit of 67108864 bytes"), std::string::npos) << e.what();
  }
  std::filesystem::remove(big);
}

}  // namespace
}  // namespace evla
