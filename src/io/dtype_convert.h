// Element conversion between the floating types a checkpoint may hold
// (F64, F32, F16, BF16), rounding to nearest even as PyTorch does.
#pragma once
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"

namespace evla::io {

uint16_t float_to_bf16(float f);
uint16_t float_to_half(float f);  // overflow gives ±inf
float bf16_to_float(uint16_t b);

bool is_floating(DType t);
// Converts n elements from `src` (type `from`) to `dst` (type `to`); both
// floating, or from == to for any type. Returns how many converted values are
// not finite (NaN, inf, or a finite value that overflowed the target type).
size_t convert_elements(DType from, const uint8_t* src, DType to, uint8_t* dst, size_t n);

}  // namespace evla::io
