#include "io/dtype_convert.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "evla/error.h"

namespace evla::io {

uint16_t float_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return uint16_t((bits >> 16) | 0x40);  // stays a (quiet) NaN
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

uint16_t float_to_half(float f) {
  // The compiler's _Float16 conversion rounds to nearest even, subnormals included.
  return std::bit_cast<uint16_t>(static_cast<_Float16>(f));
}

bool is_floating(DType t) { return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16; }

size_t convert_elements(DType from, const uint8_t* src, DType to, uint8_t* dst, size_t n) {
  if (from == to && !is_floating(from)) {
    std::memcpy(dst, src, n * dtype_size(from));
    return 0;
  }
  if (!is_floating(from) || !is_floating(to))
    throw Error(std::string("cannot convert ") + dtype_name(from) + " to " + dtype_name(to));
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    double v;
    switch (from) {
      case DType::F64: std::memcpy(&v, src + 8 * i, 8); break;
      case DType::F32: { float x; std::memcpy(&x, src + 4 * i, 4); v = x; break; }
      case DType::F16: { uint16_t h; std::memcpy(&h, src + 2 * i, 2); v = double(std::bit_cast<_Float16>(h)); break; }
      default: { uint16_t b; std::memcpy(&b, src + 2 * i, 2); v = bf16_to_float(b); break; }
    }
    switch (to) {
      case DType::F64: std::memcpy(dst + 8 * i, &v, 8); bad += !std::isfinite(v); break;
      case DType::F32: { const float x = float(v); std::memcpy(dst + 4 * i, &x, 4); bad += !std::isfinite(x); break; }
      case DType::F16: {
        const uint16_t h = float_to_half(float(v));
        std::memcpy(dst + 2 * i, &h, 2);
        bad += (h & 0x7c00) == 0x7c00;
        break;
      }
      default: {
        const uint16_t b = float_to_bf16(float(v));
        std::memcpy(dst + 2 * i, &b, 2);
        bad += (b & 0x7f80) == 0x7f80;
        break;
      }
    }
  }
  return bad;
}

}  // namespace evla::io
