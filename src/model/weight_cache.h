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
//
// PlanCache does the same for the arrays a plan derives (DerivedArrays), in
// files beside the load's, named by the checkpoint and the plan: one per plan
// compiled, the kMaxPlanFiles most recently used kept per checkpoint.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "model/derived_arrays.h"

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
  std::string path_, prefix_, state_, fingerprint_, status_;
  std::unique_ptr<io::SafetensorsFile> file_;
  std::map<std::string, Array> arrays_;  // every array handed out, found or derived
  bool derived_any_ = false;
};

class PlanCache {
 public:
  static constexpr int kMaxPlanFiles = 8;

  // `dir` empty: no cache. `plan_key` identifies the plan (its JSON).
  PlanCache(const std::string& dir, const io::TensorStore& checkpoint, const std::string& plan_key);
  // The arrays to replay, when a file for this checkpoint, plan and kernel
  // selection is there; else null.
  std::unique_ptr<io::SafetensorsFile> open();
  // Keeps `arrays` (derived afresh in `seconds`) when deriving took at least
  // `min_seconds` and the file fits: no larger than kMaxBytes or half the
  // checkpoint, whichever is more (a cache never doubles a model on disk),
  // and leaving the disk 1 GiB free.
  void save(const DerivedArrays& arrays, double seconds, double min_seconds);
  // Marks a replayed file as just used, so that eviction spares it.
  void touch();
  const std::string& status() const { return status_; }

 private:
  std::string path_, location_prefix_, fingerprint_, status_;
  int64_t checkpoint_bytes_ = 0;
};

}  // namespace evla
