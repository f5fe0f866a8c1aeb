// evla — RGB images as the policy sees them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace evla {

// Interleaved 8-bit RGB, row-major, height x width x 3.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h) : width(w), height(h), rgb(size_t(w) * h * 3, 0) {}
  uint8_t* pixel(int x, int y) { return &rgb[(size_t(y) * width + x) * 3]; }
  const uint8_t* pixel(int x, int y) const { return &rgb[(size_t(y) * width + x) * 3]; }
  bool empty() const { return width == 0 || height == 0; }
};

// PNG or JPEG, chosen by the file's magic bytes. Throws evla::Error naming the file.
// Other pixel formats are converted as PIL's Image.convert("RGB") converts
// them; `conversion`, when given, receives what was done ("grey replicated
// to RGB", "alpha dropped, not composited", ...), empty for 8-bit RGB.
Image load_image(const std::string& path, std::string* conversion = nullptr);
// Decodes a PNG or JPEG held in memory.
Image decode_image(const uint8_t* data, size_t size, const std::string& what = "image",
                   std::string* conversion = nullptr);
void save_png(const std::string& path, const Image& img);
// Bicubic (Catmull-Rom, antialiased when shrinking) resize, as PIL's BICUBIC.
Image resize_bicubic(const Image& img, int width, int height);

}  // namespace evla
