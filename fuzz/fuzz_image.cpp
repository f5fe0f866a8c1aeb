// Fuzzes PNG/JPEG decoding (our libpng/libjpeg glue and its longjmp error
// paths) and resizing of whatever decodes.
#include <cstdint>
#include <cstdlib>

#include "evla/error.h"
#include "evla/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    evla::Image img = evla::decode_image(data, size, "fuzz");
    if (img.rgb.size() != size_t(img.width) * img.height * 3 || img.empty()) std::abort();
    // Small targets keep each run fast; sizes come from the input itself.
    const int w = 1 + (size > 0 ? data[size - 1] % 16 : 0);
    const int h = 1 + (size > 1 ? data[size - 2] % 16 : 0);
    evla::Image out = evla::resize_bicubic(img, w, h);
    if (out.width != w || out.height != h) std::abort();
  } catch (const evla::Error&) {
  }
  return 0;
}
