// The derived-weight cache. Loading a checkpoint derives arrays from its
// tensors: matrices packed for the small-matrix kernel, fused q/k/v and
// gate/up matrices, F16/BF16 tensors converted to fp32. For a small policy
// that is the larger part of the load. The cache writes them once to a
// safetensors file and later loads map that file read-only instead of
// deriving again; processes that load the same model also share those pages
// through the page cache. A file is used only when its fingerprint matches:
// the identity of every checkpoint file as it was mapped (path, device,
// inode, size, modification and change times) and the version of the derived
// layouts. The cache keeps one file per checkpoint location, and none for a
// checkpoint whose derived arrays exceed kMaxBytes. Nothing here throws on a
// missing, stale, damaged or unwritable cache: the model then derives its
// weights as without one, and status() says what happened.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "io/safetensors.h"

namespace evla {

class WeightCache {
 public:
  static constexpr size_t kMaxBytes = size_t(1) << 30;

  // `dir` empty: no cache.
  WeightCache(const std::string& dir, const io::TensorStore& checkpoint);

  // The n floats stored under `key`, or null.
  const float* find(const std::string& key, size_t n);
  // Records an array derived afresh; it must stay valid until save().
  void add(const std::string& key, const float* data, size_t n);
  // Writes the cache file (atomically) when anything was derived afresh.
  void save();

  bool enabled() const { return !path_.empty(); }
  // One line: "off", "read PATH (N arrays)", "wrote PATH (...)", or why not.
  const std::string& status() const { return status_; }

 private:
  struct Array {
    const float* data;
    size_t n;
  };
  std::string path_, prefix_, fingerprint_, status_;
  std::unique_ptr<io::SafetensorsFile> file_;
  std::map<std::string, Array> arrays_;  // every array handed out, found or derived
  bool derived_any_ = false;
};

}  // namespace evla
