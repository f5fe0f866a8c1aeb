// The arrays a plan derives from a model's weights (compacted MLP matrices,
// int8 codes and scales, BF16 copies), owned by the planned model that uses
// them. Compiling a plan asks for them in a fixed order, so a file that
// recorded one compilation's arrays in that order can stand in for the
// work: replayed, each request is answered from the (memory-mapped, page-
// cache-shared) file and the caller skips computing it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace evla {

class DerivedArrays {
 public:
  // An array handed out: `fill` is where the caller writes it, or null when
  // it came from a file and holds its values already.
  template <typename T>
  struct Slot {
    const T* data;
    T* fill;
  };
  // Thrown by next() when a replayed file does not hold the array asked for
  // (the caller then compiles again without it).
  struct Mismatch {};

  DerivedArrays() = default;
  // Replays `file`, written by save() for the same model, plan and kernels.
  explicit DerivedArrays(std::unique_ptr<io::SafetensorsFile> file) : file_(std::move(file)) {}
  DerivedArrays(const DerivedArrays&) = delete;
  DerivedArrays& operator=(const DerivedArrays&) = delete;

  // The next array of n values; T is float, int8_t or uint16_t (16-bit
  // floats as their bits).
  template <typename T>
  Slot<T> next(size_t n);

  bool replayed() const { return file_ != nullptr; }
  // Throws Mismatch unless a replay used every array of its file.
  void check_replay_complete() const;
  size_t count() const { return arrays_.size(); }
  template <typename T>
  size_t count_of() const;
  int64_t bytes() const;
  // Writes every array, in order, with `metadata` (atomically; throws evla::Error).
  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const;

 private:
  struct Array {
    io::DType dtype;
    const void* data;
    size_t n;
  };
  const void* replay(io::DType dtype, size_t n);
  std::vector<Array> arrays_;
  std::deque<std::vector<float>> f32_;
  std::deque<std::vector<int8_t>> i8_;
  std::deque<std::vector<uint16_t>> u16_;
  std::unique_ptr<io::SafetensorsFile> file_;
};

}  // namespace evla
