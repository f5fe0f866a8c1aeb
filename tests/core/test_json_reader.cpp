// Typed JSON access: integers that fit are read, everything else is a named error.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace evla
