#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/output_file.h"
#include "evla/error.h"

namespace evla::io {

namespace {

template <typename T>
void convert(const std::string& raw, std::vector<float>& out) {
  for (size_t i = 0; i < out.size(); ++i) {
    T v;
    std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
    out[i] = float(v);
  }
}

void write_raw(const std::string& path, const char* descr, const void* data, size_t elem,
               const std::vector<int64_t>& shape) {
  std::string dims;
  size_t n = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ",";
    n *= size_t(d);
  }
  if (shape.size() > 1) dims.pop_back();
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  OutputFile f(path);
  const uint16_t len = uint16_t(header.size());
  const char prefix[10] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, char(len & 0xff), char(len >> 8)};
  f.write(prefix, sizeof prefix);
  f.write(header);
  f.write(data, n * elem);
  f.commit();
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  const int major = magic[6];
  size_t hlen = 0;
  unsigned char b[4] = {0, 0, 0, 0};
  if (major == 1) {
    if (!f.read(reinterpret_cast<char*>(b), 2)) throw Error(path + ": truncated .npy header");
    hlen = size_t(b[0]) | size_t(b[1]) << 8;
  } else if (major == 2 || major == 3) {
    if (!f.read(reinterpret_cast<char*>(b), 4)) throw Error(path + ": truncated .npy header");
    hlen = size_t(b[0]) | size_t(b[1]) << 8 | size_t(b[2]) << 16 | size_t(b[3]) << 24;
  } else {
    throw Error(fmt::format("{}: .npy format version {} is not supported", path, major));
  }
  if (hlen > (1u << 20)) throw Error(path + ": .npy header too long");
  std::string header(hlen, '\0');
  if (!f.read(header.data(), std::streamsize(hlen))) throw Error(path + ": truncated .npy header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')")))
    throw Error(path + ": .npy header has no descr");
  const std::string descr = m[1];
  if (std::regex_search(header, std::regex(R"('fortran_order'\s*:\s*True)")))
    throw Error(path + ": Fortran-order arrays are not supported (save with np.ascontiguousarray)");
  if (!std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))")))
    throw Error(path + ": .npy header has no shape");
  NpyArray a;
  const std::string dims = m[1];
  size_t n = 1;
  static const std::regex number(R"(\d+)");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) {
    // Each dimension and the running product are bounded before they are formed.
    const std::string digits = it->str();
    if (digits.size() > 12) throw Error(path + ": .npy dimension " + digits + " is too large");
    const int64_t d = std::stoll(digits);
    if (d > 0 && n > (size_t(1) << 34) / size_t(d)) throw Error(path + ": array too large");
    a.shape.push_back(d);
    n *= size_t(d);
  }
  if (dims.find('-') != std::string::npos) throw Error(path + ": .npy shape has a negative dimension");
  struct Kind { const char* descr; size_t size; void (*conv)(const std::string&, std::vector<float>&); };
  static const Kind kinds[] = {{"<f4", 4, convert<float>},   {"<f8", 8, convert<double>}, {"<i8", 8, convert<int64_t>},
                               {"<i4", 4, convert<int32_t>}, {"<i2", 2, convert<int16_t>}, {"|i1", 1, convert<int8_t>},
                               {"|u1", 1, convert<uint8_t>}};
  const Kind* kind = nullptr;
  for (const auto& k : kinds)
    if (descr == k.descr) kind = &k;
  if (!kind) throw Error(fmt::format("{}: .npy dtype '{}' is not supported (float32/64 or little-endian ints)", path, descr));
  // The data must be there before anything that size is allocated.
  const auto here = f.tellg();
  f.seekg(0, std::ios::end);
  const auto end = f.tellg();
  f.seekg(here);
  if (here < 0 || end < here || size_t(end - here) < n * kind->size)
    throw Error(fmt::format("{}: holds fewer values than its shape ({}) needs", path, fmt::join(a.shape, "×")));
  std::string raw(n * kind->size, '\0');
  if (!f.read(raw.data(), std::streamsize(raw.size())))
    throw Error(fmt::format("{}: holds fewer values than its shape ({}) needs", path, fmt::join(a.shape, "×")));
  a.data.resize(n);
  kind->conv(raw, a.data);
  return a;
}

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_raw(path, "<f4", data, 4, shape);
}

void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape) {
  write_raw(path, "<i4", data, 4, shape);
}

}  // namespace evla::io
