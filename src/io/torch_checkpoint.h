// PyTorch checkpoints (`torch.save`, zip format) read without executing them.
//
// The pickle inside is interpreted by a restricted machine that knows only
// what a state dict is made of: containers, numbers and strings, OrderedDict,
// torch's tensor-rebuild functions and its typed storages (persistent ids).
// Any other global — os.system, builtins.eval, a user class — is refused by
// name before anything is called; nothing is ever imported or run.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/zip_archive.h"

namespace evla::io {

// One tensor of a checkpoint: a strided view of a storage (a zip entry).
struct TorchTensor {
  std::string name;  // keys of the nested dicts joined by '.': "model.projector.projector.0.weight"
  DType dtype = DType::F32;
  std::vector<int64_t> shape, stride;
  int64_t offset = 0;  // in elements of the storage
  std::string storage;  // storage key: entry "<archive>/data/<key>"
  int64_t storage_numel = 0;

  int64_t numel() const;
  bool contiguous() const;  // row-major with no gaps
};

// Parses the pickle of a torch.save'd object and returns its tensors: the
// leaves of nested dicts with string keys (other leaves are ignored; lists
// are not walked). Throws evla::Error naming `source` on anything outside
// the allowed vocabulary, on malformed input and past its size limits.
std::vector<TorchTensor> parse_torch_pickle(const uint8_t* data, size_t size, const std::string& source);

class TorchCheckpoint {
 public:
  static std::unique_ptr<TorchCheckpoint> open(const std::string& path);
  // Over an archive already opened (from memory: the fuzzer).
  static std::unique_ptr<TorchCheckpoint> from_archive(std::unique_ptr<ZipArchive> zip);

  const std::string& path() const { return zip_->path(); }
  const std::vector<TorchTensor>& tensors() const { return tensors_; }
  // Streams the tensor's elements in row-major order, in its own dtype.
  void read(const TorchTensor& t, const std::function<void(const uint8_t*, size_t)>& sink) const;

 private:
  std::unique_ptr<ZipArchive> zip_;
  std::string prefix_;  // "<archive>/"
  std::vector<TorchTensor> tensors_;
};

}  // namespace evla::io
