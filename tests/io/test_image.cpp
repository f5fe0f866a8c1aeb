// Images: PNG/JPEG decoding with PIL's convert("RGB") semantics, PNG writing,
// and PIL-exact bicubic resizing.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>

#include <jpeglib.h>
#include <png.h>

#include "evla/error.h"
#include "evla/image.h"

namespace evla {
namespace {

namespace fs = std::filesystem;

// The same pseudo-random image the reference values below were made from
// (Python: x = (x * 1103515245 + 12345) & 0x7fffffff; byte = (x >> 16) & 0xff).
Image lcg_image(int w, int h, uint32_t seed) {
  Image img(w, h);
  uint32_t x = seed;
  for (auto& v : img.rgb) {
    x = (x * 1103515245u + 12345u) & 0x7fffffffu;
    v = uint8_t(x >> 16);
  }
  return img;
}

uint64_t fnv1a(const std::vector<uint8_t>& b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Encodes `pixels` (channels per pixel given by `format`) with libpng's
// simplified writer, which can produce grey, alpha, 16-bit and palette files.
std::vector<uint8_t> encode_png(int w, int h, png_uint_32 format, const void* pixels,
                                const void* colormap = nullptr, int colormap_entries = 0) {
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = png_uint_32(w);
  pi.height = png_uint_32(h);
  pi.format = format;
  pi.colormap_entries = png_uint_32(colormap_entries);
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&pi, nullptr, &size, 0, pixels, 0, colormap));
  std::vector<uint8_t> out(size);
  EXPECT_TRUE(png_image_write_to_memory(&pi, out.data(), &size, 0, pixels, 0, colormap))
      << pi.message;
  out.resize(size);
  return out;
}

// Baseline JPEG via libjpeg; components 1 (grey) or 3 (RGB).
std::vector<uint8_t> encode_jpeg(int w, int h, int components, const uint8_t* pixels) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* mem = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &mem, &size);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = components;
  c.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels) + size_t(c.next_scanline) * w * components;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(mem, mem + size);
  jpeg_destroy_compress(&c);
  std::free(mem);
  return out;
}

Image decode(const std::vector<uint8_t>& bytes) { return decode_image(bytes.data(), bytes.size()); }

void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<const char*> parts) {
  try {
    decode_image(bytes.data(), bytes.size(), "cam.png");
    ADD_FAILURE() << "decoded, expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("cam.png: ", 0), 0u) << msg;
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() /
         ("evla_io_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
          "_" + name);
}

// ---- decoding ----

TEST(ImageIo, PngRoundTrip) {
  const Image img = lcg_image(13, 7, 5);
  const fs::path path = temp_path("rt.png");
  save_png(path.string(), img);
  const Image back = load_image(path.string());
  fs::remove(path);
  EXPECT_EQ(back.width, 13);
  EXPECT_EQ(back.height, 7);
  EXPECT_EQ(back.rgb, img.rgb);
}

TEST(ImageIo, GreyIsReplicated) {
  const uint8_t grey[6] = {0, 50, 100, 150, 200, 255};
  const Image img = decode(encode_png(3, 2, PNG_FORMAT_GRAY, grey));
  ASSERT_EQ(img.width, 3);
  ASSERT_EQ(img.height, 2);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[i * 3 + c], grey[i]);
}

TEST(ImageIo, AlphaIsDroppedNotComposited) {
  // Like PIL's convert("RGB"): colour kept even where fully transparent.
  const uint8_t rgba[8] = {10, 20, 30, 0, 200, 100, 50, 128};
  const Image img = decode(encode_png(2, 1, PNG_FORMAT_RGBA, rgba));
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{10, 20, 30, 200, 100, 50}));
  const uint8_t ga[4] = {77, 0, 99, 255};
  EXPECT_EQ(decode(encode_png(2, 1, PNG_FORMAT_GA, ga)).rgb,
            (std::vector<uint8_t>{77, 77, 77, 99, 99, 99}));
}

TEST(ImageIo, SixteenBitKeepsHighByte) {
  const uint16_t rgb16[6] = {0x0000, 0x12ff, 0xffff, 0x8000, 0x80ff, 0x0100};
  const Image img = decode(encode_png(2, 1, PNG_FORMAT_LINEAR_RGB, rgb16));
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{0x00, 0x12, 0xff, 0x80, 0x80, 0x01}));
}

TEST(ImageIo, PaletteIsExpanded) {
  const uint8_t palette[6] = {255, 0, 0, 0, 128, 255};
  const uint8_t index[4] = {0, 1, 1, 0};
  const Image img = decode(encode_png(2, 2, PNG_FORMAT_RGB_COLORMAP, index, palette, 2));
  EXPECT_EQ(img.rgb,
            (std::vector<uint8_t>{255, 0, 0, 0, 128, 255, 0, 128, 255, 255, 0, 0}));
}

TEST(ImageIo, JpegDecodes) {
  // A smooth image survives JPEG at quality 95 to within a few levels.
  Image src(16, 16);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) {
      uint8_t* p = src.pixel(x, y);
      p[0] = uint8_t(x * 16);
      p[1] = uint8_t(y * 16);
      p[2] = 128;
    }
  const fs::path path = temp_path("a.jpg");
  const std::vector<uint8_t> jpg = encode_jpeg(16, 16, 3, src.rgb.data());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(jpg.data()),
                                              std::streamsize(jpg.size()));
  const Image img = load_image(path.string());
  fs::remove(path);
  ASSERT_EQ(img.width, 16);
  ASSERT_EQ(img.height, 16);
  int worst = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i)
    worst = std::max(worst, std::abs(int(img.rgb[i]) - int(src.rgb[i])));
  EXPECT_LE(worst, 12);
}

TEST(ImageIo, GreyJpegIsReplicated) {
  std::vector<uint8_t> grey(8 * 8, 90);
  const Image img = decode(encode_jpeg(8, 8, 1, grey.data()));
  for (size_t i = 0; i < img.rgb.size(); ++i) EXPECT_NEAR(img.rgb[i], 90, 1);
}

// Each conversion is named, so a caller can say what happened to its image.
TEST(ImageIo, ConversionsAreNamed) {
  auto conversion = [](const std::vector<uint8_t>& bytes) {
    std::string c = "unset";
    decode_image(bytes.data(), bytes.size(), "image", &c);
    return c;
  };
  const uint8_t px[16] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 0, 0, 0, 0};
  const uint16_t px16[6] = {1, 2, 3, 4, 5, 6};
  const uint8_t palette[6] = {255, 0, 0, 0, 128, 255};
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_RGB, px)), "");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_GRAY, px)), "grey replicated to RGB");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_RGBA, px)), "alpha dropped, not composited");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_GA, px)), "grey replicated to RGB; alpha dropped, not composited");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_LINEAR_RGB, px16)), "16-bit samples cut to their high byte");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_LINEAR_Y, px16)),
            "grey replicated to RGB; 16-bit samples cut to their high byte (PIL clips 16-bit grey to 255 instead)");
  EXPECT_EQ(conversion(encode_png(2, 1, PNG_FORMAT_RGB_COLORMAP, px, palette, 2)), "palette expanded");
  EXPECT_EQ(conversion(encode_jpeg(8, 8, 3, std::vector<uint8_t>(8 * 8 * 3, 90).data())), "");
  EXPECT_EQ(conversion(encode_jpeg(8, 8, 1, std::vector<uint8_t>(8 * 8, 90).data())), "grey replicated to RGB");
}

TEST(ImageIo, CorruptInputs) {
  expect_error({'G', 'I', 'F', '8', '9', 'a'}, {"not a PNG or JPEG", "47 49 46 38 39 61"});
  expect_error({}, {"not a PNG or JPEG", "none"});

  const uint8_t rgb[12 * 3] = {};
  std::vector<uint8_t> png = encode_png(4, 3, PNG_FORMAT_RGB, rgb);
  png.resize(png.size() / 2);
  expect_error(png, {"invalid PNG"});
  png = encode_png(4, 3, PNG_FORMAT_RGB, rgb);
  png[20] ^= 0xff;  // IHDR payload: the CRC no longer matches
  expect_error(png, {"invalid PNG"});

  std::vector<uint8_t> jpg = encode_jpeg(4, 3, 3, rgb);
  jpg.resize(jpg.size() - 20);
  expect_error(jpg, {"invalid JPEG", "Premature end"});
  expect_error({0xFF, 0xD8, 0xFF, 0x00, 0x01}, {"invalid JPEG"});
}

TEST(ImageIo, OversizedImageIsRefused) {
  std::vector<uint8_t> row(20000, 0);
  expect_error(encode_png(20000, 1, PNG_FORMAT_GRAY, row.data()), {"invalid PNG", "width"});
}

TEST(ImageIo, FileErrorsNameThePath) {
  try {
    load_image("/nonexistent/evla.png");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/evla.png"), std::string::npos);
  }
  EXPECT_THROW(save_png("/nonexistent/dir/x.png", lcg_image(2, 2, 1)), Error);
  EXPECT_THROW(save_png(temp_path("empty.png").string(), Image()), Error);
}

// ---- resizing ----

TEST(ImageResize, SameSizeIsIdentity) {
  const Image img = lcg_image(9, 4, 3);
  EXPECT_EQ(resize_bicubic(img, 9, 4).rgb, img.rgb);
}

TEST(ImageResize, ConstantStaysConstant) {
  Image img(37, 23);
  for (int i = 0; i < 37 * 23; ++i) {
    img.rgb[i * 3] = 12;
    img.rgb[i * 3 + 1] = 200;
    img.rgb[i * 3 + 2] = 255;
  }
  for (auto [w, h] : {std::pair{11, 7}, {50, 40}, {37, 5}, {1, 1}, {224, 224}}) {
    const Image out = resize_bicubic(img, w, h);
    ASSERT_EQ(out.width, w);
    ASSERT_EQ(out.height, h);
    for (int i = 0; i < w * h; ++i) {
      ASSERT_EQ(out.rgb[i * 3], 12);
      ASSERT_EQ(out.rgb[i * 3 + 1], 200);
      ASSERT_EQ(out.rgb[i * 3 + 2], 255);
    }
  }
}

Image row_image(std::initializer_list<uint8_t> values) {
  Image img(int(values.size()), 1);
  int i = 0;
  for (uint8_t v : values) img.rgb[i++ * 3] = v;
  return img;
}

std::vector<uint8_t> red_channel(const Image& img) {
  std::vector<uint8_t> r;
  for (size_t i = 0; i < img.rgb.size(); i += 3) r.push_back(img.rgb[i]);
  return r;
}

TEST(ImageResize, HandCheckedUpscale) {
  // [0, 255] -> 4 samples at centres 0.25, 0.75, 1.25, 1.75 of the input.
  // Output 1: Catmull-Rom weights k(0.25) = 0.8671875 on 0 and k(0.75) =
  // 0.2265625 on 255, normalised by their sum: 255 * 0.2265625 / 1.09375 =
  // 52.8 -> 53. Outputs 0 and 3 overshoot (-22.5, 277.5) and are clamped.
  EXPECT_EQ(red_channel(resize_bicubic(row_image({0, 255}), 4, 1)),
            (std::vector<uint8_t>{0, 53, 202, 255}));
}

TEST(ImageResize, HandCheckedDownscaleWidensKernel) {
  // Halving: the kernel is stretched by 2, so output 0 (centre 1.0) sees all
  // four inputs with weights k(0.25), k(0.25), k(0.75), k(1.25):
  // (100 * 0.8671875 + 200 * 0.2265625 - 255 * 0.0703125) / 1.890625 = 60.4.
  EXPECT_EQ(red_channel(resize_bicubic(row_image({0, 100, 200, 255}), 2, 1)),
            (std::vector<uint8_t>{60, 221}));
}

// Reference outputs from Pillow 9.4 Image.resize(size, Image.BICUBIC).
TEST(ImageResize, MatchesPillow) {
  const Image img = lcg_image(7, 5, 1);
  EXPECT_EQ(resize_bicubic(img, 3, 2).rgb,
            (std::vector<uint8_t>{138, 95, 125, 135, 127, 182, 134, 95, 137, 125, 139, 64, 180,
                                  148, 130, 113, 134, 130}));
  const std::vector<uint8_t> up = resize_bicubic(img, 4, 9).rgb;
  EXPECT_EQ(std::vector<uint8_t>(up.begin(), up.begin() + 12),
            (std::vector<uint8_t>{159, 108, 187, 224, 215, 155, 172, 61, 229, 72, 118, 134}));
  EXPECT_EQ(std::vector<uint8_t>(up.end() - 6, up.end()),
            (std::vector<uint8_t>{188, 54, 151, 114, 120, 87}));

  struct Case {
    int w, h;
    uint64_t hash;
  };
  for (const Case& c : {Case{64, 48, 0x5bf753b4c9d496e2ull}, Case{300, 200, 0xc0cae710ede533d1ull},
                        Case{640, 480, 0xc962ae6fa0bc1434ull}, Case{225, 223, 0x7eb59834151fc377ull}}) {
    SCOPED_TRACE(std::to_string(c.w) + "x" + std::to_string(c.h));
    EXPECT_EQ(fnv1a(resize_bicubic(lcg_image(c.w, c.h, uint32_t(c.w * c.h)), 224, 224).rgb), c.hash);
  }
}

TEST(ImageResize, InvalidArguments) {
  const Image img = lcg_image(4, 4, 1);
  EXPECT_THROW(resize_bicubic(img, 0, 4), Error);
  EXPECT_THROW(resize_bicubic(img, 4, -1), Error);
  EXPECT_THROW(resize_bicubic(Image(), 4, 4), Error);
  Image broken(4, 4);
  broken.rgb.pop_back();
  EXPECT_THROW(resize_bicubic(broken, 2, 2), Error);
}

}  // namespace
}  // namespace evla
