// NumPy .npy files (format 1.0/2.0/3.0): float and int arrays in, float32 and
// int32 arrays out. What `evla run --noise` reads and `--dump` writes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace evla::io {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order
};

// Reads a little-endian C-order array of float32/float64 (or int8..int64,
// converted to float). Throws evla::Error naming the file and the problem.
NpyArray read_npy(const std::string& path);

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape);

}  // namespace evla::io
