// Helpers shared by the model tests.
#pragma once
#include <cmath>
#include <string>
#include <vector>

namespace evla::test {

// NMSE = Σ(a−b)² / Σb²  (b is the reference)
inline double nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - b[i];
    num += d * d;
    den += double(b[i]) * b[i];
  }
  return den > 0 ? num / den : num;
}

inline std::string source_path(const std::string& rel) { return std::string(EVLA_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(EVLA_BINARY_DIR) + "/" + rel; }

}  // namespace evla::test
