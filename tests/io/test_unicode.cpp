// Instructions are lower-cased as Python's str.lower() does (CogACT calls it).
// Expected strings are Python 3.11's results.
#include <gtest/gtest.h>

#include "evla/error.h"
#include "io/unicode.h"

namespace evla::io {
namespace {

TEST(LowercaseUtf8, AsciiOnlyLetters) {
  EXPECT_EQ(lowercase_utf8("Pick UP the Coke can, 2x!"), "pick up the coke can, 2x!");
  EXPECT_EQ(lowercase_utf8(""), "");
}

TEST(LowercaseUtf8, UnicodeFullMapping) {
  EXPECT_EQ(lowercase_utf8("CRÈME BRÛLÉE"), "crème brûlée");
  EXPECT_EQ(lowercase_utf8("STRAẞE Straße"), "straße straße");  // ẞ → ß, ß stays
  EXPECT_EQ(lowercase_utf8("İSTANBUL"), "i\u0307stanbul");       // İ → i + combining dot, as Python
  EXPECT_EQ(lowercase_utf8("ПРИВЕТ 你好"), "привет 你好");
}

TEST(LowercaseUtf8, FinalSigma) {
  EXPECT_EQ(lowercase_utf8("ΟΔΟΣ"), "οδος");
  EXPECT_EQ(lowercase_utf8("ΟΔΟΣ ΣΑΣ."), "οδος σας.");
  EXPECT_EQ(lowercase_utf8("Σ"), "σ");  // alone: not final (Python agrees)
}

TEST(LowercaseUtf8, InvalidUtf8Refused) {
  EXPECT_THROW(lowercase_utf8("ab\xC3"), Error);
  EXPECT_THROW(lowercase_utf8("\xFF\xFE Ä"), Error);
}

}  // namespace
}  // namespace evla::io
