// Image decoding, PNG writing and PIL-compatible bicubic resizing.
//
// Decoding goes through libpng and libjpeg-turbo, the libraries PIL itself
// uses, so pixels match the Python reference's Image.open(p).convert("RGB"):
// palettes and low bit depths expand, 16-bit samples keep their high byte,
// alpha is dropped (not composited), grey is replicated, no gamma is applied.
// (One deviation: PIL clips 16-bit *grey* to 255 instead of scaling it.)
//
// Both libraries report errors by longjmp. The functions that call setjmp
// below hold no C++ objects with destructors: buffers and messages live in
// the caller, so a jump skips nothing that needs cleaning up.
#include "evla/image.h"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include <fmt/format.h>

#include "core/output_file.h"
#include "evla/error.h"

namespace evla {
namespace {

// Larger images are not camera frames; refusing them bounds the memory a
// hostile header can make us allocate (16384² RGB = 768 MiB).
constexpr int kMaxSide = 16384;
constexpr size_t kMaxFileBytes = size_t(1) << 30;

// ---- PNG ----

struct PngState {
  const uint8_t* data = nullptr;
  size_t size = 0;
  Image* out = nullptr;
  size_t pos = 0;
  char message[256] = "";
  char warning[256] = "";  // libpng explains some errors only in a warning before them
  char conversion[160] = "";  // what was converted (a plain array: png_decode longjmps)
  std::vector<png_bytep> rows;
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(st->message, sizeof st->message, "%s", msg);
  png_longjmp(png, 1);
}

// Warnings are not errors (PIL ignores them too), but the last one is kept:
// an error such as "Invalid IHDR data" follows a warning that says why.
void png_on_warning(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(st->warning, sizeof st->warning, "%s", msg);
}

void png_on_read(png_structp png, png_bytep dst, size_t n) {
  auto* st = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > st->size - st->pos) png_error(png, "file is truncated");
  std::memcpy(dst, st->data + st->pos, n);
  st->pos += n;
}

bool png_decode(png_structp png, png_infop info, PngState& st) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_user_limits(png, kMaxSide, kMaxSide);
  png_read_info(png, info);
  const int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  const bool alpha = (type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS);
  const bool grey16 = depth == 16 && type == PNG_COLOR_TYPE_GRAY;  // the one case PIL converts otherwise
  std::snprintf(st.conversion, sizeof st.conversion, "%s%s%s%s",
                (type & PNG_COLOR_MASK_COLOR) ? "" : "grey replicated to RGB; ",
                type == PNG_COLOR_TYPE_PALETTE ? "palette expanded; " : "",
                alpha ? "alpha dropped, not composited; " : "",
                grey16        ? "16-bit samples cut to their high byte (PIL clips 16-bit grey to 255 instead); "
                : depth == 16 ? "16-bit samples cut to their high byte; "
                              : "");
  png_set_expand(png);       // palette -> RGB(A), grey < 8 bits -> 8, tRNS -> alpha
  png_set_strip_16(png);     // high byte, as PIL
  png_set_strip_alpha(png);  // dropped, as PIL's convert("RGB")
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info);
  const png_uint_32 h = png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != size_t(w) * 3) png_error(png, "unexpected pixel layout");
  st.out->width = int(w);
  st.out->height = int(h);
  st.out->rgb.resize(size_t(w) * h * 3);
  st.rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) st.rows[y] = st.out->pixel(0, int(y));
  png_read_image(png, st.rows.data());
  return true;
}

struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReader() { png_destroy_read_struct(&png, &info, nullptr); }
};

Image decode_png(const uint8_t* data, size_t size, const std::string& what, std::string* conversion) {
  Image img;
  PngState st;
  st.data = data;
  st.size = size;
  st.out = &img;
  PngReader r;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
  if (r.png) r.info = png_create_info_struct(r.png);
  if (!r.info) throw Error(fmt::format("{}: cannot initialise libpng", what));
  png_set_read_fn(r.png, &st, png_on_read);
  if (!png_decode(r.png, r.info, st)) {
    const std::string why = st.warning[0] ? fmt::format(" ({})", st.warning) : "";
    throw Error(fmt::format("{}: invalid PNG: {}{}", what, st.message, why));
  }
  if (conversion) {
    *conversion = st.conversion;
    if (conversion->size() >= 2) conversion->resize(conversion->size() - 2);  // the last "; "
  }
  return img;
}

// ---- JPEG ----

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// libjpeg only warns when the data ends early and then pads the image with
// grey; PIL refuses such files, and so do we. Other warnings are ignored.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

bool jpeg_decode(jpeg_decompress_struct& cinfo, JpegError& err, const uint8_t* data, size_t size,
                 Image& out) {
  if (setjmp(err.jump)) return false;
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width > unsigned(kMaxSide) || cinfo.image_height > unsigned(kMaxSide)) {
    std::snprintf(err.message, sizeof err.message, "%ux%u exceeds the limit of %d per side",
                  cinfo.image_width, cinfo.image_height, kMaxSide);
    return false;
  }
  cinfo.out_color_space = JCS_RGB;  // from YCbCr or grey; CMYK is refused by libjpeg
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != 3) {
    std::snprintf(err.message, sizeof err.message, "unsupported colour space");
    return false;
  }
  out.width = int(cinfo.output_width);
  out.height = int(cinfo.output_height);
  out.rgb.resize(size_t(out.width) * out.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.pixel(0, int(cinfo.output_scanline));
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  return true;
}

struct JpegReader {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  ~JpegReader() { jpeg_destroy_decompress(&cinfo); }  // safe on a struct never created
};

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& what, std::string* conversion) {
  Image img;
  JpegReader r;
  r.cinfo.err = jpeg_std_error(&r.err.mgr);
  r.err.mgr.error_exit = jpeg_on_error;
  r.err.mgr.emit_message = jpeg_on_message;
  if (!jpeg_decode(r.cinfo, r.err, data, size, img))
    throw Error(fmt::format("{}: invalid JPEG: {}", what, r.err.message));
  if (conversion) *conversion = r.cinfo.jpeg_color_space == JCS_GRAYSCALE ? "grey replicated to RGB" : "";
  return img;
}

void check_image(const Image& img, const std::string& what) {
  if (img.width <= 0 || img.height <= 0 || img.width > kMaxSide || img.height > kMaxSide ||
      img.rgb.size() != size_t(img.width) * img.height * 3)
    throw Error(fmt::format("{}: invalid image {}x{} with {} bytes", what, img.width, img.height,
                            img.rgb.size()));
}

// ---- PIL's bicubic resampling ----
//
// A transcription of Pillow's libImaging/Resample.c for 8-bit images, so our
// preprocessing matches the Python reference bit for bit: Catmull-Rom kernel
// (a = -0.5) of support 2, widened by the scale factor when shrinking
// (antialiasing); per-output weights normalised to sum 1, then quantised to
// fixed point; a horizontal pass into an 8-bit image, then a vertical pass,
// each rounding and clamping to 0..255.

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output index: the first input index, how many inputs, and their
// fixed-point weights (ksize slots per output).
struct Taps {
  int ksize;
  std::vector<int> first, count;
  std::vector<int32_t> weight;
};

Taps compute_taps(int in_size, int out_size) {
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  Taps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weight.assign(size_t(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // PIL rounds the window ends by truncating x + 0.5.
    const int xmin = std::max(int(center - support + 0.5), 0);
    const int n = std::min(int(center + support + 0.5), in_size) - xmin;
    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      w[x] = bicubic_kernel((x + xmin - center + 0.5) / filterscale);
      sum += w[x];
    }
    for (int x = 0; x < n; ++x) {
      const double v = (sum != 0.0 ? w[x] / sum : w[x]) * (1 << kPrecisionBits);
      t.weight[size_t(xx) * t.ksize + x] = int32_t(v < 0 ? v - 0.5 : v + 0.5);
    }
    t.first[xx] = xmin;
    t.count[xx] = n;
  }
  return t;
}

uint8_t clip8(int64_t acc) {
  if (acc >= (int64_t(1) << kPrecisionBits << 8)) return 255;
  if (acc <= 0) return 0;
  return uint8_t(acc >> kPrecisionBits);
}

// One pass along x (stride 3 bytes) or y (stride one row); `in` and `out`
// have the same extent in the other direction.
Image resample(const Image& in, int out_w, int out_h, bool horizontal) {
  const Taps t = horizontal ? compute_taps(in.width, out_w) : compute_taps(in.height, out_h);
  const size_t step = horizontal ? 3 : size_t(in.width) * 3;
  Image out(out_w, out_h);
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      const int o = horizontal ? x : y;
      const uint8_t* src = horizontal ? in.pixel(t.first[o], y) : in.pixel(x, t.first[o]);
      const int32_t* k = &t.weight[size_t(o) * t.ksize];
      int64_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1),
                        1 << (kPrecisionBits - 1)};
      for (int i = 0; i < t.count[o]; ++i, src += step)
        for (int c = 0; c < 3; ++c) acc[c] += int64_t(src[c]) * k[i];
      uint8_t* dst = out.pixel(x, y);
      for (int c = 0; c < 3; ++c) dst[c] = clip8(acc[c]);
    }
  }
  return out;
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& what, std::string* conversion) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return decode_png(data, size, what, conversion);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg(data, size, what, conversion);
  std::string head;
  for (size_t i = 0; i < std::min<size_t>(size, 8); ++i) head += fmt::format(" {:02x}", data[i]);
  throw Error(fmt::format("{}: not a PNG or JPEG file (first bytes:{})", what,
                          head.empty() ? " none" : head));
}

Image load_image(const std::string& path, std::string* conversion) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(fmt::format("{}: not found or not a regular file", path));
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxFileBytes)
    throw Error(fmt::format("{}: image file is unreadable or larger than 1 GiB", path));
  std::vector<uint8_t> bytes(size);
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size)))
    throw Error(fmt::format("{}: cannot read image", path));
  return decode_image(bytes.data(), bytes.size(), path, conversion);
}

void save_png(const std::string& path, const Image& img) {
  check_image(img, path);
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = png_uint_32(img.width);
  pi.height = png_uint_32(img.height);
  pi.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(pi, size, 0, img.rgb.data(), 0, nullptr))
    throw Error(fmt::format("{}: cannot encode PNG: {}", path, pi.message));
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&pi, bytes.data(), &size, 0, img.rgb.data(), 0, nullptr))
    throw Error(fmt::format("{}: cannot encode PNG: {}", path, pi.message));
  bytes.resize(size);
  write_file(path, bytes);
}

Image resize_bicubic(const Image& img, int width, int height) {
  check_image(img, "resize_bicubic: input");
  if (width <= 0 || height <= 0 || width > kMaxSide || height > kMaxSide)
    throw Error(fmt::format("resize_bicubic: invalid target size {}x{}", width, height));
  // Like PIL, a pass runs only when its dimension changes: same size is a copy.
  Image out = img;
  if (width != out.width) out = resample(out, width, out.height, true);
  if (height != out.height) out = resample(out, out.width, height, false);
  return out;
}

}  // namespace evla
