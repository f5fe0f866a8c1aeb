// Unicode text helpers (ICU).
#pragma once
#include <string>

namespace evla::io {

// Python's str.lower() on UTF-8 text: Unicode full lower-case mapping with the
// context rules of the root locale (final sigma, 'İ' → 'i̇'), through ICU.
// Throws evla::Error when `text` is not valid UTF-8.
std::string lowercase_utf8(const std::string& text);

}  // namespace evla::io
