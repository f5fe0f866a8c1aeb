// Fuzzes the pickle-free PyTorch checkpoint reader. Inputs that start like a
// zip archive go through libzip and the whole checkpoint path (every tensor
// read back); others go straight to the restricted unpickler. Any input must
// be refused with an evla::Error or yield tensors whose bytes match their
// shapes; nothing may crash, leak or run away.
#include <cstdint>
#include <cstdlib>

#include "evla/error.h"
#include "io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
      auto ckpt = evla::io::TorchCheckpoint::from_archive(
          evla::io::ZipArchive::from_memory(data, size, "fuzz.pt"));
      for (const auto& t : ckpt->tensors()) {
        size_t got = 0;
        ckpt->read(t, [&](const uint8_t*, size_t n) { got += n; });
        if (got != size_t(t.numel()) * evla::io::dtype_size(t.dtype)) std::abort();
      }
    } else {
      for (const auto& t : evla::io::parse_torch_pickle(data, size, "fuzz.pkl"))
        if (t.numel() < 0 || t.shape.size() != t.stride.size()) std::abort();
    }
  } catch (const evla::Error&) {
  }
  return 0;
}
