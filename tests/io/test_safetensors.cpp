// safetensors: writer -> reader round trips, fp16/bf16 conversion, and one
// test per kind of corrupt file, each checking that the error names the
// problem.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>

#include "evla/error.h"
#include "io/safetensors.h"

namespace evla::io {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("evla_io_") + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A raw file image: 8-byte little-endian length, header text, data bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char(n >> (8 * i));
  return out + header + std::string(data_bytes, '\x01');
}

std::unique_ptr<SafetensorsFile> parse(const std::string& bytes) {
  return SafetensorsFile::from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                      bytes.size(), "model.safetensors");
}

// Parsing must fail with a message containing every one of `parts`.
void expect_rejected(const std::string& bytes, std::initializer_list<const char*> parts) {
  try {
    parse(bytes);
    ADD_FAILURE() << "accepted, expected an error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("model.safetensors: ", 0), 0u) << msg;
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
  }
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// ---- round trips ----

TEST(SafetensorsRoundTrip, EveryDtype) {
  TempDir dir;
  struct Case {
    const char* name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Case> cases = {
      {"f64", DType::F64, {2, 3}}, {"f32", DType::F32, {4}},      {"f16", DType::F16, {3, 1}},
      {"bf16", DType::BF16, {5}},  {"i64", DType::I64, {1, 2}},   {"i32", DType::I32, {3}},
      {"i16", DType::I16, {7}},    {"i8", DType::I8, {2, 2, 2}},  {"u8", DType::U8, {9}},
      {"bool", DType::BOOL, {3}},  {"scalar", DType::F32, {}},    {"empty", DType::F16, {0, 4}},
  };
  SafetensorsWriter w;
  std::map<std::string, std::vector<uint8_t>> bytes;
  for (const Case& c : cases) {
    int64_t n = 1;
    for (int64_t d : c.shape) n *= d;
    std::vector<uint8_t> b(size_t(n) * dtype_size(c.dtype));
    for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(i * 37 + c.name[0]);
    if (c.dtype == DType::BOOL)
      for (auto& v : b) v &= 1;
    w.add(c.name, c.dtype, c.shape, b.data(), b.size());
    bytes[c.name] = b;
  }
  w.set_metadata("instruction", "pick up the red block");
  w.set_metadata("format", "pt");
  const fs::path path = dir / "all.safetensors";
  w.write(path.string());

  // The writer pads the header so that the data starts 8-byte aligned.
  std::ifstream in(path, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  EXPECT_EQ(len[0] % 8, 0);

  auto f = SafetensorsFile::open(path.string());
  EXPECT_EQ(f->path(), path.string());
  ASSERT_EQ(f->tensors().size(), cases.size());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const TensorInfo* t = f->find(c.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, c.dtype);
    EXPECT_EQ(t->shape, c.shape);
    EXPECT_EQ(t->nbytes, bytes[c.name].size());
    EXPECT_EQ(t->file, path.string());
    // Larger element types are laid out first, so every tensor is aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % dtype_size(c.dtype), 0u);
    EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), bytes[c.name]);
  }
  EXPECT_EQ(f->find("missing"), nullptr);
  EXPECT_EQ(f->metadata().at("instruction"), "pick up the red block");
  EXPECT_EQ(f->metadata().at("format"), "pt");

  // Atomic write: no temp file is left beside the result.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(SafetensorsRoundTrip, AddF32AndStore) {
  TempDir dir;
  const std::vector<float> a = {1.5f, -2.f, 3.25f, 0.f, 1e-8f, -7.f};
  SafetensorsWriter w;
  w.add_f32("layer.weight", {2, 3}, a.data());
  w.write((dir / "model.safetensors").string());

  TensorStore store = TensorStore::open_dir(dir.path().string());
  EXPECT_EQ(store.source(), dir.path().string());
  EXPECT_TRUE(store.has("layer.weight"));
  EXPECT_FALSE(store.has("layer.bias"));
  EXPECT_EQ(store.names(), std::vector<std::string>{"layer.weight"});
  EXPECT_EQ(to_f32(store.get("layer.weight", {2, 3})), a);

  TensorStore single = TensorStore::open_file((dir / "model.safetensors").string());
  EXPECT_EQ(single.get("layer.weight").shape, (std::vector<int64_t>{2, 3}));
}

TEST(SafetensorsRoundTrip, EmptyFile) {
  TempDir dir;
  SafetensorsWriter().write((dir / "empty.safetensors").string());
  auto f = SafetensorsFile::open((dir / "empty.safetensors").string());
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(SafetensorsRoundTrip, ReadsUnpaddedHeaderAndUnalignedData) {
  // Other writers need not align: a 3-byte I8 tensor followed by an F32.
  const std::string header =
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[3,7]},)"
      R"("a":{"dtype":"I8","shape":[3],"data_offsets":[0,3]}})";
  std::string bytes = raw_file(header, 0) + std::string("\x01\x02\x03", 3);
  const float v = 2.5f;
  bytes.append(reinterpret_cast<const char*>(&v), 4);
  auto f = parse(bytes);
  EXPECT_EQ(to_f32(*f->find("b")), std::vector<float>{2.5f});
}

// ---- conversions ----

TensorInfo view(DType dtype, const void* data, int64_t n) {
  TensorInfo t;
  t.name = "t";
  t.dtype = dtype;
  t.shape = {n};
  t.data = static_cast<const uint8_t*>(data);
  t.nbytes = size_t(n) * dtype_size(dtype);
  return t;
}

TEST(SafetensorsConvert, HalfToFloat) {
  const std::vector<uint16_t> h = {
      0x3C00,  // 1
      0xC000,  // -2
      0x3555,  // 0.333251953125 = 1365/4096
      0x7BFF,  // 65504, largest normal
      0x0400,  // 2^-14, smallest normal
      0x03FF,  // 1023 * 2^-24, largest subnormal
      0x0001,  // 2^-24, smallest subnormal
      0x8001,  // -2^-24
      0x0000,  // +0
      0x8000,  // -0
      0x7C00,  // +inf
      0xFC00,  // -inf
  };
  const std::vector<float> want = {1.f,          -2.f,       0.333251953125f,   65504.f,
                                   0x1p-14f,     1023 * 0x1p-24f, 0x1p-24f,  -0x1p-24f,
                                   0.f,          -0.f,       INFINITY,          -INFINITY};
  const std::vector<float> got = to_f32(view(DType::F16, h.data(), int64_t(h.size())));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << "half 0x" << std::hex << h[i];
    EXPECT_EQ(std::signbit(got[i]), std::signbit(want[i])) << "half 0x" << std::hex << h[i];
  }
  const uint16_t nans[] = {0x7E00, 0xFC01};
  for (float f : to_f32(view(DType::F16, nans, 2))) EXPECT_TRUE(std::isnan(f));
}

TEST(SafetensorsConvert, BFloat16IsUpperHalf) {
  const uint16_t b[] = {0x3F80, 0xC040, 0x4049, 0x7F80, 0xFF80, 0x0001, 0x8000};
  const std::vector<float> want = {1.f, -3.f, 3.140625f, INFINITY, -INFINITY, 0x1p-133f, -0.f};
  const std::vector<float> got = to_f32(view(DType::BF16, b, 7));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << i;
  EXPECT_TRUE(std::signbit(got[6]));
  const uint16_t nan = 0x7FC1;
  EXPECT_TRUE(std::isnan(to_f32(view(DType::BF16, &nan, 1))[0]));
}

TEST(SafetensorsConvert, F64AndF32) {
  const double d[] = {0.1, -1e300, 1.0 / 3};
  EXPECT_EQ(to_f32(view(DType::F64, d, 3)), (std::vector<float>{0.1f, -INFINITY, 1.f / 3}));
  const float f[] = {1.f, -0.f, 3.5f};
  float out[3];
  to_f32(view(DType::F32, f, 3), out);
  EXPECT_EQ(std::memcmp(out, f, sizeof f), 0);
}

TEST(SafetensorsConvert, IntegerTensorIsAnError) {
  const int64_t v = 3;
  try {
    to_f32(view(DType::I64, &v, 1));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'t' is I64"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsDType, NamesAndSizes) {
  EXPECT_EQ(parse_dtype("BF16", "x"), DType::BF16);
  EXPECT_STREQ(dtype_name(DType::BOOL), "BOOL");
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::I16), 2u);
  EXPECT_THROW(parse_dtype("f32", "x"), Error);
}

// ---- corrupt files: one test per kind ----

const char* kTensor = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

std::string valid_file() { return raw_file(std::string("{") + kTensor + "}", 8); }

TEST(SafetensorsCorrupt, ValidBaseline) { EXPECT_EQ(parse(valid_file())->tensors().size(), 1u); }

TEST(SafetensorsCorrupt, TooShortForLength) {
  expect_rejected(std::string("\x05\0\0", 3), {"3 bytes", "too short"});
  expect_rejected("", {"0 bytes"});
}

TEST(SafetensorsCorrupt, TruncatedData) {
  std::string f = valid_file();
  f.pop_back();
  expect_rejected(f, {"tensor 'w' ends at 8", "only 7 bytes", "truncated"});
  // Offsets past the end were reported as a hole before the tensor.
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[100,108]}})",
                           8),
                  {"tensor 'b' ends at 108 but the data buffer has only 8 bytes (file truncated?)"});
}

TEST(SafetensorsCorrupt, TruncatedHeader) {
  expect_rejected(valid_file().substr(0, 20), {"header length", "exceeds the 12 bytes"});
}

TEST(SafetensorsCorrupt, HeaderLengthOverLimit) {
  std::string f = valid_file();
  f[3] = 0x7f;  // length ~2 GB
  expect_rejected(f, {"exceeds the limit of 100000000"});
}

TEST(SafetensorsCorrupt, HeaderNotJson) {
  expect_rejected(raw_file("{\"w\": oops}", 0), {"header is not valid JSON"});
  expect_rejected(raw_file("{} trailing", 0), {"not valid JSON"});
  expect_rejected(raw_file("{\"\xff\xfe\": 1}", 0), {"not valid JSON"});  // not UTF-8
  expect_rejected(raw_file("", 0), {"does not start with '{'"});
}

TEST(SafetensorsCorrupt, DeepNesting) {
  const std::string deep = std::string(R"({"w":{"dtype":"U8","shape":)") +
                           std::string(100000, '[') + std::string(100000, ']') +
                           R"(,"data_offsets":[0,0]}})";
  expect_rejected(raw_file(deep, 0), {"header nests deeper than 32 levels"});
}

TEST(SafetensorsCorrupt, SpacePaddingIsAllowed) {
  EXPECT_NO_THROW(parse(raw_file(std::string("{") + kTensor + "}     ", 8)));
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  expect_rejected(raw_file("[1, 2]", 0), {"does not start with '{'"});
  expect_rejected(raw_file("  {}", 0), {"does not start with '{'"});
}

TEST(SafetensorsCorrupt, EntryNotAnObject) {
  expect_rejected(raw_file(R"({"w": [1, 2]})", 0), {"tensor 'w'", "not an object"});
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  expect_rejected(raw_file(R"({"w":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}})", 2),
                  {"tensor 'w'", "unknown dtype 'F8'"});
  expect_rejected(raw_file(R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,2]}})", 2),
                  {"tensor 'w'", "dtype 7 is not a string"});
}

TEST(SafetensorsCorrupt, MissingAndUnexpectedFields) {
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","data_offsets":[0,2]}})", 2),
                  {"tensor 'w'", "missing 'shape'"});
  expect_rejected(
      raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"stride":[1]}})", 2),
      {"tensor 'w'", "unexpected field 'stride'"});
}

TEST(SafetensorsCorrupt, BadShape) {
  for (const char* shape : {"[-1]", "[2.5]", "[\"2\"]", "[1e30]", "[null]"}) {
    SCOPED_TRACE(shape);
    expect_rejected(
        raw_file(std::string(R"({"w":{"dtype":"U8","shape":)") + shape + R"(,"data_offsets":[0,0]}})",
                 0),
        {"tensor 'w'", "shape", "non-negative integers"});
  }
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":3,"data_offsets":[0,3]}})", 3),
                  {"tensor 'w'", "shape 3 is not an array"});
}

TEST(SafetensorsCorrupt, ShapeOverflow) {
  expect_rejected(
      raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
      {"tensor 'w'", "too large"});
  expect_rejected(
      raw_file(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0),
      {"tensor 'w'", "too large"});
}

TEST(SafetensorsCorrupt, OffsetsMismatchShape) {
  const std::string header =
      R"({"blocks.0.attn.qkv.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,12]}})";
  try {
    parse(raw_file(header, 12));
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "model.safetensors: tensor 'blocks.0.attn.qkv.weight': data_offsets [0, 12] span "
                 "12 bytes but shape [3, 4] of F32 needs 48");
  }
}

TEST(SafetensorsCorrupt, BadOffsets) {
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", 2),
                  {"tensor 'w'", "is not [begin, end]"});
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[4,2]}})", 4),
                  {"tensor 'w'", "end before they begin"});
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[-2,0]}})", 2),
                  {"tensor 'w'", "data_offsets", "non-negative integers"});
}

TEST(SafetensorsCorrupt, Overlap) {
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12),
                  {"tensor 'b' [4, 12] overlaps tensor 'a' [0, 8]"});
}

TEST(SafetensorsCorrupt, Hole) {
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                           20),
                  {"bytes [8, 12)", "belong to no tensor", "before tensor 'b'"});
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                  {"bytes [0, 4)", "before tensor 'a'"});
}

TEST(SafetensorsCorrupt, TrailingBytes) {
  expect_rejected(valid_file() + "junk", {"4 trailing bytes", "tensors end at 8"});
  expect_rejected(raw_file("{}", 1), {"1 trailing bytes"});
}

TEST(SafetensorsCorrupt, DuplicateNames) {
  expect_rejected(raw_file(std::string("{") + kTensor + "," + kTensor + "}", 8),
                  {"header names 'w' twice"});
  expect_rejected(
      raw_file(R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1),
      {"header has key 'dtype' twice in one object"});
}

TEST(SafetensorsCorrupt, MetadataNotStringMap) {
  expect_rejected(raw_file(R"({"__metadata__":{"a":"ok","step":5}})", 0),
                  {"__metadata__ value of 'step' is 5, not a string"});
  expect_rejected(raw_file(R"({"__metadata__":["a"]})", 0), {"__metadata__", "not an object"});
}

TEST(SafetensorsCorrupt, OpenErrorsNameTheFile) {
  TempDir dir;
  const std::string missing = (dir / "nope.safetensors").string();
  try {
    SafetensorsFile::open(missing);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing + ": cannot open"), std::string::npos);
  }
  const std::string bad = (dir / "bad.safetensors").string();
  write_file(bad, valid_file() + "x");
  try {
    SafetensorsFile::open(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad + ": 1 trailing bytes"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(SafetensorsFile::open(dir.path().string()), Error);  // a directory
}

// ---- writer errors ----

TEST(SafetensorsWriterErrors, BadInput) {
  SafetensorsWriter w;
  const float x[4] = {};
  EXPECT_THROW(w.add("a", DType::F32, {3}, x, 16), Error);  // 12 bytes needed
  EXPECT_THROW(w.add("a", DType::F32, {-1}, x, 0), Error);
  EXPECT_THROW(w.add("__metadata__", DType::F32, {4}, x, 16), Error);
  w.add("a", DType::F32, {4}, x, 16);
  EXPECT_THROW(w.add("a", DType::F32, {4}, x, 16), Error);
  // JSON cannot carry a name that is not UTF-8.
  w.add("bad\xff", DType::F32, {4}, x, 16);
  const fs::path path = fs::temp_directory_path() / "evla_io_bad_name.safetensors";
  EXPECT_THROW(w.write(path.string()), Error);
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsWriterErrors, UnwritablePath) {
  TempDir dir;
  SafetensorsWriter w;
  const std::string path = (dir / "no_such_dir" / "x.safetensors").string();
  try {
    w.write(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot create"), std::string::npos) << e.what();
  }
}

// ---- TensorStore ----

void write_shard(const fs::path& path, std::initializer_list<const char*> names) {
  SafetensorsWriter w;
  const float v[2] = {1.f, 2.f};
  for (const char* n : names) w.add_f32(n, {2}, v);
  w.write(path.string());
}

TEST(TensorStoreTest, ShardedIndex) {
  TempDir dir;
  write_shard(dir / "model-00001-of-00002.safetensors", {"a", "b"});
  write_shard(dir / "model-00002-of-00002.safetensors", {"c"});
  write_file(dir / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 24}, "weight_map": {
                 "a": "model-00001-of-00002.safetensors",
                 "b": "model-00001-of-00002.safetensors",
                 "c": "model-00002-of-00002.safetensors"}})");
  TensorStore s = TensorStore::open_dir(dir.path().string());
  EXPECT_EQ(s.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(to_f32(s.get("c", {2})), (std::vector<float>{1.f, 2.f}));
  EXPECT_NE(s.get("c").file.find("00002"), std::string::npos);
}

// open_dir must fail with a message containing every one of `parts`.
void expect_dir_rejected(const fs::path& dir, std::initializer_list<const char*> parts) {
  try {
    TensorStore::open_dir(dir.string());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(TensorStoreTest, IndexNamesMissingShard) {
  TempDir dir;
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "gone.safetensors"}})");
  expect_dir_rejected(dir.path(), {"index.json", "tensor 'a'", "'gone.safetensors'", "does not exist"});
}

TEST(TensorStoreTest, IndexNamesMissingTensor) {
  TempDir dir;
  write_shard(dir / "s1.safetensors", {"a"});
  write_file(dir / "model.safetensors.index.json",
             R"({"weight_map": {"a": "s1.safetensors", "zz": "s1.safetensors"}})");
  expect_dir_rejected(dir.path(), {"tensor 'zz'", "'s1.safetensors'", "has no such tensor"});
}

TEST(TensorStoreTest, IndexPathEscapes) {
  TempDir dir;
  write_shard(dir.path().parent_path() / "evla_outside.safetensors", {"a"});
  for (const char* shard : {"../evla_outside.safetensors", "/tmp/evla_outside.safetensors",
                            "sub/../../evla_outside.safetensors", ""}) {
    SCOPED_TRACE(shard);
    write_file(dir / "model.safetensors.index.json",
               std::string(R"({"weight_map": {"a": ")") + shard + "\"}}");
    expect_dir_rejected(dir.path(), {"tensor 'a'", "not a path inside"});
  }
  fs::remove(dir.path().parent_path() / "evla_outside.safetensors");
}

TEST(TensorStoreTest, IndexMalformed) {
  TempDir dir;
  write_file(dir / "model.safetensors.index.json", R"({"weights": {}})");
  expect_dir_rejected(dir.path(), {"index.json", "no \"weight_map\""});
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  expect_dir_rejected(dir.path(), {"'a'", "not a file name"});
  write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "x", "a": "y"}})");
  expect_dir_rejected(dir.path(), {"index.json has key 'a' twice"});
  write_file(dir / "model.safetensors.index.json", "{oops");
  expect_dir_rejected(dir.path(), {"index.json", "not valid JSON"});
}

TEST(TensorStoreTest, EmptyDirectory) {
  TempDir dir;
  expect_dir_rejected(dir.path(), {"neither model.safetensors nor"});
  expect_dir_rejected(dir / "absent", {"not a directory"});
}

TEST(TensorStoreTest, GetErrorsNameTensorAndShapes) {
  TempDir dir;
  write_shard(dir / "model.safetensors", {"w"});
  TensorStore s = TensorStore::open_dir(dir.path().string());
  try {
    s.get("v");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.path().string() + ": no tensor 'v'");
  }
  try {
    s.get("w", {2, 1});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              dir.path().string() + ": tensor 'w' has shape [2] but [2, 1] is expected");
  }
}

}  // namespace
}  // namespace evla::io
