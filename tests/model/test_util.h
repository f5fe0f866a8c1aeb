// Helpers shared by the model tests.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "evla/image.h"
#include "io/safetensors.h"

namespace evla::test {

// NMSE = Σ(a−b)² / Σb²  (b is the reference)
inline double nmse(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - b[i];
    num += d * d;
    den += double(b[i]) * b[i];
  }
  return den > 0 ? num / den : num;
}

inline std::string source_path(const std::string& rel) { return std::string(EVLA_SOURCE_DIR) + "/" + rel; }
inline std::string binary_path(const std::string& rel) { return std::string(EVLA_BINARY_DIR) + "/" + rel; }

// The fixture's input images input.image.0 … n−1 ([H, W, 3] uint8).
inline std::vector<Image> fixture_images(const io::SafetensorsFile& f, int n) {
  std::vector<Image> out;
  for (int k = 0; k < n; ++k) {
    const io::TensorInfo* t = f.find("input.image." + std::to_string(k));
    if (!t) throw std::runtime_error("fixture lacks input.image." + std::to_string(k));
    Image img(int(t->shape[1]), int(t->shape[0]));
    std::memcpy(img.rgb.data(), t->data, img.rgb.size());
    out.push_back(std::move(img));
  }
  return out;
}

// A scratch copy of a fixture model that a test may change or corrupt.
struct ModelCopy {
  std::filesystem::path dir;
  explicit ModelCopy(const std::string& name) {
    dir = std::filesystem::temp_directory_path() /
          ("evla_test_" + name + "_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::copy(source_path("tests/fixtures/" + name), dir);
  }
  ~ModelCopy() { std::filesystem::remove_all(dir); }
  nlohmann::json config() const { return read_json_file((dir / "config.json").string()); }
  void write_config(const nlohmann::json& j) const { std::ofstream(dir / "config.json") << j.dump(2); }
};

}  // namespace evla::test
