// The pickle-free PyTorch checkpoint reader: a real torch.save file read to
// the value, and hostile or broken files refused with an error that names
// the problem (never executed, never a crash).
#include <gtest/gtest.h>
#include <zip.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "evla/error.h"
#include "io/dtype_convert.h"
#include "io/torch_checkpoint.h"

namespace fs = std::filesystem;
using evla::io::DType;
using evla::io::TorchCheckpoint;
using evla::io::TorchTensor;

namespace {

const std::string kFixture = std::string(EVLA_SOURCE_DIR) + "/tests/fixtures/torch/";

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("evla_torch_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A zip archive of the given entries, stored uncompressed as torch writes them.
void write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_NE(z, nullptr);
  for (const auto& [name, bytes] : entries) {
    zip_source_t* s = zip_source_buffer(z, bytes.data(), bytes.size(), 0);
    const zip_int64_t idx = zip_file_add(z, name.c_str(), s, ZIP_FL_OVERWRITE);
    ASSERT_GE(idx, 0);
    zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0);
  }
  ASSERT_EQ(zip_close(z), 0);
}

// Pickle pieces, protocol 2.
std::string str(const std::string& s) {
  std::string out = "X";
  for (int k = 0; k < 4; ++k) out += char((s.size() >> (8 * k)) & 0xff);
  return out + s;
}
std::string k1(int v) { return std::string("K") + char(v); }
std::string long1(int64_t v) {  // LONG1 with 8 bytes, little-endian two's complement
  std::string out = "\x8a\x08";
  for (int k = 0; k < 8; ++k) out += char((uint64_t(v) >> (8 * k)) & 0xff);
  return out;
}
std::string global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }
// {name: tensor of `size` floats viewing a FloatStorage of `storage_numel` elements, key "0"}
std::string tensor_pickle(int size, int storage_numel) {
  return std::string("\x80\x02}(") + str("w") + global("torch._utils", "_rebuild_tensor_v2") + "((" +
         str("storage") + global("torch", "FloatStorage") + str("0") + str("cpu") + k1(storage_numel) +
         "tQ" + k1(0) + k1(size) + "\x85" + k1(1) + "\x85\x89" + global("collections", "OrderedDict") +
         ")RtRu.";
}

std::vector<TorchTensor> parse(const std::string& pickle) {
  return evla::io::parse_torch_pickle(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), "test.pkl");
}

void expect_error(const std::function<void()>& f, const std::string& words) {
  try {
    f();
    FAIL() << "no error; expected one containing '" << words << "'";
  } catch (const evla::Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

double element(const uint8_t* p, DType t) {
  switch (t) {
    case DType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::F16: { float v; evla::io::convert_elements(t, p, DType::F32, reinterpret_cast<uint8_t*>(&v), 1); return v; }
    case DType::BF16: { uint16_t b; std::memcpy(&b, p, 2); return evla::io::bf16_to_float(b); }
    case DType::I64: { int64_t v; std::memcpy(&v, p, 8); return double(v); }
    case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::U8: case DType::BOOL: return *p;
    default: ADD_FAILURE() << "unexpected dtype"; return 0;
  }
}

}  // namespace

TEST(TorchCheckpoint, ReadsEveryTensorOfARealTorchSave) {
  auto ckpt = TorchCheckpoint::open(kFixture + "state.pt");
  const auto expected = nlohmann::json::parse(read_file(kFixture + "expected.json"));
  ASSERT_EQ(ckpt->tensors().size(), expected.size());
  const std::map<std::string, DType> dtypes = {{"float32", DType::F32}, {"float64", DType::F64}, {"float16", DType::F16},
                                               {"bfloat16", DType::BF16}, {"int64", DType::I64}, {"int32", DType::I32},
                                               {"uint8", DType::U8}, {"bool", DType::BOOL}};
  for (const TorchTensor& t : ckpt->tensors()) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(expected.contains(t.name));
    const auto& e = expected[t.name];
    EXPECT_EQ(t.dtype, dtypes.at(e["dtype"].get<std::string>()));
    EXPECT_EQ(t.shape, e["shape"].get<std::vector<int64_t>>());
    std::vector<uint8_t> bytes;
    ckpt->read(t, [&](const uint8_t* p, size_t n) { bytes.insert(bytes.end(), p, p + n); });
    const auto values = e["values"].get<std::vector<double>>();
    const size_t es = evla::io::dtype_size(t.dtype);
    ASSERT_EQ(bytes.size(), values.size() * es);
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(element(bytes.data() + i * es, t.dtype), values[i]) << i;
  }
}

TEST(TorchCheckpoint, StridedViewsAreGatheredRowMajor) {
  auto ckpt = TorchCheckpoint::open(kFixture + "state.pt");
  const TorchTensor* tr = nullptr;
  for (const auto& t : ckpt->tensors())
    if (t.name == "model.projector.transposed") tr = &t;
  ASSERT_NE(tr, nullptr);
  EXPECT_FALSE(tr->contiguous());
  EXPECT_EQ(tr->shape, (std::vector<int64_t>{4, 3}));
}

TEST(TorchCheckpoint, RefusesForeignGlobalsByName) {
  // pickle.dumps of an object whose __reduce__ is (os.system, ("ls",)).
  const std::string os_system = std::string("\x80\x02") + global("os", "system") + str("ls") + "\x85R.";
  expect_error([&] { parse(os_system); }, "refuses global 'os.system'");
  // The same through protocol 4's STACK_GLOBAL.
  const std::string eval = std::string("\x80\x04\x8c\x08") + "builtins" + "\x8c\x04" + "eval" + "\x93" + str("1") + "\x85R.";
  expect_error([&] { parse(eval); }, "refuses global 'builtins.eval'");
  // Allowed names cannot be called in a way a state dict never does.
  const std::string storage_call = std::string("\x80\x02") + global("torch", "FloatStorage") + ")R.";
  expect_error([&] { parse(storage_call); }, "'torch.FloatStorage' cannot be called");
}

TEST(TorchCheckpoint, RefusesMalformedPickles) {
  const std::string good = tensor_pickle(4, 4);
  EXPECT_EQ(parse(good).size(), 1u);
  expect_error([&] { parse(good.substr(0, good.size() / 2)); }, "test.pkl: pickle byte");
  expect_error([&] { parse(tensor_pickle(100, 4)); }, "tensor view reaches element 99 of a storage of 4");
  expect_error([&] { parse("\x80\x02I1\n."); }, "unsupported pickle opcode 0x49");
  expect_error([&] { parse("\x80\x02h\x05."); }, "memo key 5 was never stored");
  expect_error([&] { parse("\x80\x02t."); }, "no MARK");
  expect_error([&] { parse("\x80\x02N"); }, "unexpected end of data");
  expect_error([&] { parse(std::string("\x80\x02\x8a\x09") + std::string(9, '\1') + "."); }, "integer of 9 bytes");
  // Dicts nested 1000 deep: refused when walked, without recursion in the parser.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 1000; ++i) deep += "}" + str("k");
  deep += "N" + std::string(1000, 's') + ".";
  expect_error([&] { parse(deep); }, "dicts nested deeper than 32");
  // A view whose extent overflows 64 bits if multiplied unchecked (2^24 rows 2^40 apart).
  const std::string wrap = std::string("\x80\x02}(") + str("w") + global("torch._utils", "_rebuild_tensor_v2") + "((" +
                           str("storage") + global("torch", "FloatStorage") + str("0") + str("cpu") + k1(1) + "tQ" +
                           k1(0) + long1((int64_t(1) << 24) + 1) + "\x85" + long1(int64_t(1) << 40) + "\x85\x89" +
                           global("collections", "OrderedDict") + ")RtRu.";
  expect_error([&] { parse(wrap); }, "tensor view beyond 2^40 elements");
  // One dict reached by two keys (paths would multiply level by level): refused.
  const char shared[] = "\x80\x02}(X\x01\x00\x00\x00" "a}q\x01X\x01\x00\x00\x00" "bh\x01u.";
  expect_error([&] { parse(std::string(shared, sizeof shared - 1)); }, "also reached by another path");
  // A list that contains itself (the memo allows it): parsed, no tensors, no crash.
  const char self_list[] = "\x80\x02]q\x00h\x00" "a.";
  EXPECT_TRUE(parse(std::string(self_list, sizeof self_list - 1)).empty());
}

TEST(TorchCheckpoint, RefusesBrokenArchives) {
  const std::string pkl = tensor_pickle(4, 4);
  const std::string zip_path = tmp_path("a.pt");
  write_zip(zip_path, {{"a/data.pkl", pkl}});
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "storage entry data/0 is missing");
  write_zip(zip_path, {{"a/data.pkl", pkl}, {"a/data/0", std::string(8, '\0')}});
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "holds 8 bytes, 16 expected");
  write_zip(zip_path, {{"a/data.pkl", pkl}, {"a/data/0", std::string(16, '\0')}, {"a/byteorder", "big"}});
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "big-endian");
  {  // a compressed storage would be decompressed from its start for every view
    int err = 0;
    zip_t* z = zip_open(zip_path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    const std::string data(16, '\0');
    zip_file_add(z, "a/data.pkl", zip_source_buffer(z, pkl.data(), pkl.size(), 0), ZIP_FL_OVERWRITE);
    const zip_int64_t i = zip_file_add(z, "a/data/0", zip_source_buffer(z, data.data(), data.size(), 0), ZIP_FL_OVERWRITE);
    zip_set_file_compression(z, zip_uint64_t(i), ZIP_CM_DEFLATE, 9);
    ASSERT_EQ(zip_close(z), 0);
  }
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "is compressed");
  write_zip(zip_path, {{"a/other.pkl", pkl}});
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "no <archive>/data.pkl");
  // A real checkpoint cut short, and bytes that are no archive at all.
  const std::string whole = read_file(kFixture + "state.pt");
  std::ofstream(zip_path, std::ios::binary) << whole.substr(0, whole.size() * 2 / 3);
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "not a readable zip archive");
  std::ofstream(zip_path, std::ios::binary) << "not a zip";
  expect_error([&] { TorchCheckpoint::open(zip_path); }, "not a readable zip archive");
  fs::remove(zip_path);
}

TEST(DtypeConvert, RoundsToNearestEvenAndCountsNonFinite) {
  EXPECT_EQ(evla::io::float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(evla::io::float_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(evla::io::float_to_bf16(1.01171875f), 0x3f82);  // 1 + 3·2^-8: ties up to even
  EXPECT_EQ(evla::io::float_to_half(65504.f), 0x7bff);
  const float in[3] = {1.f, 1e6f, NAN};
  uint16_t out[3];
  EXPECT_EQ(evla::io::convert_elements(DType::F32, reinterpret_cast<const uint8_t*>(in), DType::F16,
                                       reinterpret_cast<uint8_t*>(out), 3),
            2u);  // 1e6 overflows half, NaN stays NaN
  EXPECT_EQ(evla::io::convert_elements(DType::F32, reinterpret_cast<const uint8_t*>(in), DType::BF16,
                                       reinterpret_cast<uint8_t*>(out), 2),
            0u);
}
