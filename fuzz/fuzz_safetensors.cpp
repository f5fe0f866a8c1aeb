// Fuzzes safetensors validation: any input must either be rejected with an
// evla::Error or yield tensors whose every byte lies inside the input and
// whose sizes agree with their shapes.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "evla/error.h"
#include "io/safetensors.h"

using evla::io::DType;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<evla::io::SafetensorsFile> file;
  try {
    file = evla::io::SafetensorsFile::from_memory(data, size, "fuzz.safetensors");
  } catch (const evla::Error&) {
    return 0;
  }
  for (const auto& [name, t] : file->tensors()) {
    if (t.nbytes != size_t(t.numel()) * evla::io::dtype_size(t.dtype)) std::abort();
    if (t.nbytes > 0 && (t.data < data || t.data + t.nbytes > data + size)) std::abort();
    // Read every byte, so ASan catches a span the checks above missed.
    uint8_t sum = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sum ^= t.data[i];
    asm volatile("" : : "r"(sum));
    try {
      std::vector<float> v = evla::io::to_f32(t);
      if (v.size() != size_t(t.numel())) std::abort();
    } catch (const evla::Error&) {
      // Integer tensors: refused by design.
      if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16 ||
          t.dtype == DType::F64)
        std::abort();
    }
    (void)t.shape_str();
  }
  return 0;
}
