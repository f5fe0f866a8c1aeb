// .npy reading and writing (evla run --noise / --step-noise / --dump).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "evla/error.h"
#include "io/npy.h"

namespace evla::io {
namespace {

namespace fs = std::filesystem;

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("evla_test_npy_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(Npy, RoundTripFloatAndInt) {
  const std::string p = tmp_path("f.npy");
  const float v[6] = {1.5f, -2.f, 3.25f, 0.f, 1e-30f, 7.f};
  write_npy(p, v, {2, 3});
  NpyArray a = read_npy(p);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, std::vector<float>(v, v + 6));
  const int32_t ids[3] = {1, 29871, 2};
  write_npy(p, ids, {3});
  a = read_npy(p);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a.data, (std::vector<float>{1, 29871, 2}));
  // The header is padded to a multiple of 64 bytes, as numpy writes it.
  EXPECT_EQ((fs::file_size(p) - 12) % 4, 0u);
  fs::remove(p);
}

TEST(Npy, ReadsFloat64AndRefusesOthers) {
  const std::string p = tmp_path("d.npy");
  {
    std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header += '\n';
    std::ofstream f(p, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(char(header.size() & 0xff));
    f.put(char(header.size() >> 8));
    f << header;
    const double d[2] = {0.5, -4.0};
    f.write(reinterpret_cast<const char*>(d), sizeof d);
  }
  NpyArray a = read_npy(p);
  EXPECT_EQ(a.data, (std::vector<float>{0.5f, -4.f}));
  // Truncated data, a non-npy file, a big-endian dtype: errors naming the file.
  fs::resize_file(p, fs::file_size(p) - 4);
  EXPECT_THROW(read_npy(p), Error);
  {
    std::ofstream f(p, std::ios::binary);
    f << "not numpy";
  }
  EXPECT_THROW(read_npy(p), Error);
  {
    std::string header = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
    std::ofstream f(p, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(char(header.size()));
    f.put(0);
    f << header << "abcd";
  }
  try {
    read_npy(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(">f4"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_npy(tmp_path("missing.npy")), Error);
  {  // A header promising far more than the file holds is refused before allocating.
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000, 1000), }\n";
    std::ofstream f(p, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    f.put(char(header.size()));
    f.put(0);
    f << header << "abcd";
  }
  EXPECT_THROW(read_npy(p), Error);
  fs::remove(p);
}

}  // namespace
}  // namespace evla::io
