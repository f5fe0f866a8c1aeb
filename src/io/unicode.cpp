#include "io/unicode.h"

#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <vector>

#include "evla/error.h"

namespace evla::io {

std::string lowercase_utf8(const std::string& text) {
  bool ascii = true;
  for (unsigned char c : text) ascii = ascii && c < 0x80;
  if (ascii) {
    std::string out = text;
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
  }
  UErrorCode err = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, text.data(), int32_t(text.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) err = U_ZERO_ERROR;
  if (U_FAILURE(err)) throw Error("instruction is not valid UTF-8");
  std::vector<UChar> src(size_t(n16) + 1);
  u_strFromUTF8(src.data(), int32_t(src.size()), &n16, text.data(), int32_t(text.size()), &err);
  if (U_FAILURE(err)) throw Error("instruction is not valid UTF-8");
  // Full lower-casing can lengthen the text (İ → i + U+0307): size, then map.
  int32_t n_low = u_strToLower(nullptr, 0, src.data(), n16, "", &err);  // "": the root locale
  if (err == U_BUFFER_OVERFLOW_ERROR) err = U_ZERO_ERROR;
  std::vector<UChar> low(size_t(n_low) + 1);
  u_strToLower(low.data(), int32_t(low.size()), src.data(), n16, "", &err);
  if (U_FAILURE(err)) throw Error(std::string("lower-casing the instruction failed: ") + u_errorName(err));
  int32_t n8 = 0;
  u_strToUTF8(nullptr, 0, &n8, low.data(), n_low, &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) err = U_ZERO_ERROR;
  std::string out(size_t(n8), '\0');
  u_strToUTF8(out.data(), n8, &n8, low.data(), n_low, &err);  // no terminator: a warning
  if (U_FAILURE(err)) throw Error(std::string("lower-casing the instruction failed: ") + u_errorName(err));
  return out;
}

}  // namespace evla::io
