// safetensors reading and writing. A file is validated completely before any
// tensor is handed out, so the rest of evla can trust every name, shape, size
// and pointer it gets from here (fuzz/fuzz_safetensors.cpp holds us to that).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "core/output_file.h"
#include "evla/error.h"

namespace evla::io {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swapping");

// Same bound as the reference implementation: a header larger than this is
// an attack or a corrupt length, never a real model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1}, {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& dtype_info(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  throw Error(fmt::format("invalid DType value {}", static_cast<int>(t)));
}

// Error messages quote JSON from the file; keep a hostile header from
// turning one message into megabytes.
std::string quote(const json& j) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) {
    size_t cut = 77;
    while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
    s = s.substr(0, cut) + "...";
  }
  return s;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const json& require(const json& entry, const char* key, const std::string& ctx) {
  auto it = entry.find(key);
  if (it == entry.end()) throw Error(fmt::format("{}: missing '{}'", ctx, key));
  return *it;
}

uint64_t as_u64(const json& v, const std::string& ctx, const char* field, const json& whole) {
  // nlohmann stores non-negative integer literals as number_unsigned; negative
  // ones, fractions and out-of-range values land in the other number kinds.
  if (!v.is_number_unsigned())
    throw Error(fmt::format("{}: {} {} must hold non-negative integers", ctx, field, quote(whole)));
  return v.get<uint64_t>();
}

std::vector<int64_t> parse_shape(const json& j, const std::string& ctx) {
  if (!j.is_array()) throw Error(fmt::format("{}: shape {} is not an array", ctx, quote(j)));
  std::vector<int64_t> shape;
  shape.reserve(j.size());
  for (const json& d : j) {
    uint64_t v = as_u64(d, ctx, "shape", j);
    if (v > uint64_t(std::numeric_limits<int64_t>::max()))
      throw Error(fmt::format("{}: shape {} has a dimension that is too large", ctx, quote(j)));
    shape.push_back(int64_t(v));
  }
  return shape;
}

// numel × element size, or an error when it does not fit in 63 bits.
uint64_t byte_size(const std::vector<int64_t>& shape, DType dtype, const std::string& ctx) {
  uint64_t n = 1;
  bool overflow = false;
  for (int64_t d : shape) overflow |= __builtin_mul_overflow(n, uint64_t(d), &n);
  overflow |= __builtin_mul_overflow(n, uint64_t(dtype_size(dtype)), &n);
  if (overflow || n > uint64_t(std::numeric_limits<int64_t>::max()))
    throw Error(fmt::format("{}: shape [{}] of {} is too large", ctx, fmt::join(shape, ", "),
                            dtype_name(dtype)));
  return n;
}

struct Span {
  uint64_t begin, end;
  const std::string* name;  // of the tensor, as stored in the file's map
};

TensorInfo parse_entry(const std::string& name, const json& entry, const std::string& file,
                       Span& span) {
  const std::string ctx = fmt::format("{}: tensor '{}'", file, name);
  if (!entry.is_object()) throw Error(fmt::format("{}: entry {} is not an object", ctx, quote(entry)));
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw Error(fmt::format("{}: unexpected field '{}'", ctx, key));
  }
  TensorInfo t;
  t.name = name;
  t.file = file;
  const json& dtype = require(entry, "dtype", ctx);
  if (!dtype.is_string()) throw Error(fmt::format("{}: dtype {} is not a string", ctx, quote(dtype)));
  t.dtype = parse_dtype(dtype.get<std::string>(), ctx);
  t.shape = parse_shape(require(entry, "shape", ctx), ctx);
  const uint64_t needed = byte_size(t.shape, t.dtype, ctx);

  const json& offs = require(entry, "data_offsets", ctx);
  if (!offs.is_array() || offs.size() != 2)
    throw Error(fmt::format("{}: data_offsets {} is not [begin, end]", ctx, quote(offs)));
  span.begin = as_u64(offs[0], ctx, "data_offsets", offs);
  span.end = as_u64(offs[1], ctx, "data_offsets", offs);
  if (span.end < span.begin)
    throw Error(fmt::format("{}: data_offsets [{}, {}] end before they begin", ctx, span.begin,
                            span.end));
  if (span.end - span.begin != needed)
    throw Error(fmt::format("{}: data_offsets [{}, {}] span {} bytes but shape {} of {} needs {}",
                            ctx, span.begin, span.end, span.end - span.begin, t.shape_str(),
                            dtype_name(t.dtype), needed));
  t.nbytes = size_t(needed);
  return t;
}

std::map<std::string, std::string> parse_metadata(const json& j, const std::string& file) {
  if (!j.is_object())
    throw Error(fmt::format("{}: __metadata__ {} is not an object", file, quote(j)));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : j.items()) {
    if (!value.is_string())
      throw Error(fmt::format("{}: __metadata__ value of '{}' is {}, not a string", file, key,
                              quote(value)));
    out[key] = value.get<std::string>();
  }
  return out;
}

// The tensors must cover the data buffer exactly: sorted by offset, each
// starts where the previous ended and the last ends at the buffer's end.
// Anything else means overlapping tensors, hidden bytes, or truncation.
void check_tiling(std::vector<Span> spans, uint64_t buffer_size, const std::string& file) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.end > buffer_size)  // named as such, not as a hole or an overlap on the way
      throw Error(fmt::format("{}: tensor '{}' ends at {} but the data buffer has only {} bytes "
                              "(file truncated?)",
                              file, *s.name, s.end, buffer_size));
    if (s.begin < pos)
      throw Error(fmt::format("{}: tensor '{}' [{}, {}] overlaps tensor '{}' [{}, {}]", file,
                              *s.name, s.begin, s.end, *prev->name, prev->begin, prev->end));
    if (s.begin > pos)
      throw Error(fmt::format("{}: bytes [{}, {}) of the data buffer belong to no tensor (hole "
                              "before tensor '{}')",
                              file, pos, s.begin, *s.name));
    pos = s.end;
    prev = &s;
  }
  if (pos < buffer_size)
    throw Error(fmt::format("{}: {} trailing bytes after the last tensor (data buffer is {} "
                            "bytes, tensors end at {})",
                            file, buffer_size - pos, buffer_size, pos));
}

// Half precision to single: sign, 5-bit exponent (bias 15), 10-bit mantissa.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    // Zero or subnormal: mant × 2^-24, exact in float.
    float f = float(mant) * 0x1p-24f;
    return sign ? -f : f;
  }
  uint32_t bits;
  if (exp == 31)
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  else
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  return std::bit_cast<float>(bits);
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // tensors need not be aligned in the file
  return v;
}

}  // namespace

size_t dtype_size(DType t) { return dtype_info(t).size; }
const char* dtype_name(DType t) { return dtype_info(t).name; }

DType parse_dtype(const std::string& s, const std::string& context) {
  for (const auto& d : kDTypes)
    if (s == d.name) return d.type;
  throw Error(fmt::format("{}: unknown dtype '{}'", context, s));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against overflow when read
  return n;
}

std::string TensorInfo::shape_str() const { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// ---- SafetensorsFile ----

std::unique_ptr<SafetensorsFile> SafetensorsFile::from_memory(const uint8_t* bytes, size_t size,
                                                              const std::string& name) {
  if (size < 8)
    throw Error(fmt::format("{}: file is {} bytes, too short for the 8-byte header length", name,
                            size));
  const uint64_t n = read_u64_le(bytes);
  if (n > kMaxHeaderBytes)
    throw Error(fmt::format("{}: header length {} exceeds the limit of {} bytes", name, n,
                            kMaxHeaderBytes));
  if (n > size - 8)
    throw Error(fmt::format("{}: header length {} exceeds the {} bytes after the length field "
                            "(file truncated?)",
                            name, n, size - 8));
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  if (n == 0 || text[0] != '{')
    throw Error(fmt::format("{}: header does not start with '{{'", name));
  const json header = parse_json(std::string_view(text, n), name + ": header", kMaxHeaderBytes);
  if (!header.is_object()) throw Error(fmt::format("{}: header is not a JSON object", name));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = name;
  const uint8_t* buffer = bytes + 8 + n;
  const uint64_t buffer_size = size - 8 - n;
  std::vector<Span> spans;
  spans.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      file->metadata_ = parse_metadata(value, name);
      continue;
    }
    Span span{};
    TensorInfo info = parse_entry(key, value, name, span);
    // data stays null until the tiling check has proven the span lies
    // inside the buffer.
    span.name = &(file->tensors_[key] = std::move(info)).name;
    spans.push_back(span);
  }
  check_tiling(spans, buffer_size, name);
  for (const Span& s : spans) file->tensors_[*s.name].data = buffer + s.begin;
  return file;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("{}: not a regular file", path));
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    return from_memory(nullptr, size, path);  // throws, with the usual message
  }
  // A private read-only map: pages are shared with the page cache, and the
  // weights are never copied unless converted. Every weight is read by the
  // first inference anyway, so the pages are mapped now in one pass
  // (MAP_POPULATE) rather than by thousands of page faults on the hot path.
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw Error(fmt::format("{}: cannot mmap: {}", path, std::strerror(err)));
  try {
    auto file = from_memory(static_cast<const uint8_t*>(map), size, path);
    file->map_ = map;
    file->map_size_ = size;
    std::error_code ec;
    file->identity_ = fmt::format("{}\t{}:{}\t{}\t{}.{:09}\t{}.{:09}", fs::absolute(path, ec).string(),
                                  uint64_t(st.st_dev), uint64_t(st.st_ino), size, int64_t(st.st_mtim.tv_sec),
                                  int64_t(st.st_mtim.tv_nsec), int64_t(st.st_ctim.tv_sec),
                                  int64_t(st.st_ctim.tv_nsec));
    return file;
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

// ---- TensorStore ----

namespace {

// Shard names come from an untrusted index. Only relative paths that stay
// inside the model directory are allowed. The check is lexical on purpose:
// the Hugging Face cache symlinks shards to blobs outside the directory.
bool stays_inside(const std::string& rel) {
  if (rel.empty() || rel.find('\0') != std::string::npos) return false;
  fs::path p(rel);
  if (p.has_root_path()) return false;
  for (const auto& part : p.lexically_normal())
    if (part == "..") return false;
  return true;
}

}  // namespace

std::vector<const SafetensorsFile*> TensorStore::files() const {
  std::vector<const SafetensorsFile*> out;
  for (const auto& f : files_) out.push_back(f.get());
  return out;
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore store;
  store.source_ = path;
  store.files_.push_back(SafetensorsFile::open(path));
  for (const auto& [name, info] : store.files_.back()->tensors()) store.index_[name] = &info;
  return store;
}

TensorStore TensorStore::open_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(fmt::format("{}: not a directory", dir));
  const fs::path single = fs::path(dir) / "model.safetensors";
  if (fs::exists(single, ec)) {
    TensorStore store = open_file(single.string());
    store.source_ = dir;
    return store;
  }
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  if (!fs::exists(index_path, ec))
    throw Error(fmt::format("{}: has neither model.safetensors nor model.safetensors.index.json",
                            dir));

  const std::string where = index_path.string();
  const json index = read_json_file(where);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw Error(fmt::format("{}: no \"weight_map\" object", where));

  TensorStore store;
  store.source_ = dir;
  std::map<std::string, SafetensorsFile*> shards;  // each shard opened once
  for (const auto& [name, shard_json] : index["weight_map"].items()) {
    if (!shard_json.is_string())
      throw Error(fmt::format("{}: weight_map entry of '{}' is {}, not a file name", where, name,
                              quote(shard_json)));
    const std::string& shard = shard_json.get_ref<const std::string&>();
    if (!stays_inside(shard))
      throw Error(fmt::format("{}: tensor '{}' names shard '{}', which is not a path inside {}",
                              where, name, shard, dir));
    SafetensorsFile*& file = shards[shard];
    if (!file) {
      const fs::path shard_path = fs::path(dir) / shard;
      if (!fs::exists(shard_path, ec))
        throw Error(fmt::format("{}: tensor '{}' is mapped to shard '{}', which does not exist",
                                where, name, shard));
      store.files_.push_back(SafetensorsFile::open(shard_path.string()));
      file = store.files_.back().get();
    }
    const TensorInfo* info = file->find(name);
    if (!info)
      throw Error(fmt::format("{}: tensor '{}' is mapped to shard '{}', which has no such tensor",
                              where, name, shard));
    store.index_[name] = info;
  }
  return store;
}

bool TensorStore::has(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& TensorStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(fmt::format("{}: no tensor '{}'", source_, name));
  return *it->second;
}

const TensorInfo& TensorStore::get(const std::string& name,
                                   const std::vector<int64_t>& shape) const {
  const TensorInfo& t = get(name);
  if (t.shape != shape)
    throw Error(fmt::format("{}: tensor '{}' has shape {} but [{}] is expected", source_, name,
                            t.shape_str(), fmt::join(shape, ", ")));
  return t;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, info] : index_) out.push_back(name);
  return out;
}

// ---- conversion ----

namespace {
void require_float(const TensorInfo& t) {
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16 &&
      t.dtype != DType::F64)
    throw Error(fmt::format("{}: tensor '{}' is {}, not a floating-point type", t.file, t.name,
                            dtype_name(t.dtype)));
}
}  // namespace

void to_f32(const TensorInfo& t, float* dst) {
  require_float(t);
  const size_t n = size_t(t.numel());
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      if (n) std::memcpy(dst, p, n * 4);
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(load<uint16_t>(p + 2 * i));
      return;
    case DType::BF16:
      // bfloat16 is the upper half of a float32.
      for (size_t i = 0; i < n; ++i)
        dst[i] = std::bit_cast<float>(uint32_t(load<uint16_t>(p + 2 * i)) << 16);
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = float(load<double>(p + 8 * i));
      return;
    default:
      return;  // excluded by require_float
  }
}

std::vector<float> to_f32(const TensorInfo& t) {
  require_float(t);
  std::vector<float> out(size_t(t.numel()));
  to_f32(t, out.data());
  return out;
}

// ---- SafetensorsWriter ----

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  std::vector<uint8_t> owned(p, p + nbytes);
  add_borrowed(name, dtype, std::move(shape), owned.data(), nbytes);
  entries_.back().owned = std::move(owned);  // the vector's buffer moves with it
}

void SafetensorsWriter::add_borrowed(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                     const void* data, size_t nbytes, bool zero_tail) {
  const std::string ctx = fmt::format("safetensors writer: tensor '{}'", name);
  if (name == "__metadata__") throw Error(ctx + ": name is reserved");
  for (const Entry& e : entries_)
    if (e.name == name) throw Error(ctx + ": added twice");
  for (int64_t d : shape)
    if (d < 0) throw Error(fmt::format("{}: negative dimension in [{}]", ctx, fmt::join(shape, ", ")));
  const uint64_t needed = byte_size(shape, dtype, ctx);
  if (zero_tail ? nbytes > needed : nbytes != needed)
    throw Error(fmt::format("{}: {} bytes given but shape [{}] of {} needs {}", ctx, nbytes,
                            fmt::join(shape, ", "), dtype_name(dtype), needed));
  entries_.push_back(Entry{name, dtype, std::move(shape), {}, static_cast<const uint8_t*>(data), nbytes,
                           size_t(needed), nullptr});
}

void SafetensorsWriter::add_streamed(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                     Producer produce) {
  const uint64_t needed = byte_size(shape, dtype, "safetensors writer: tensor '" + name + "'");
  add_borrowed(name, dtype, std::move(shape), nullptr, size_t(needed));
  entries_.back().produce = std::move(produce);
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape,
                                const float* data) {
  const uint64_t n = byte_size(shape, DType::F32, "safetensors writer: tensor '" + name + "'");
  add(name, DType::F32, std::move(shape), data, size_t(n));
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path, size_t alignment) const {
  // Larger element types first: with an 8-byte aligned header every tensor
  // then starts at a multiple of its element size, so readers may use the
  // mapped data in place.
  std::vector<const Entry*> order;
  for (const Entry& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const Entry* e : order) {
    header[e->name] = {{"dtype", dtype_name(e->dtype)},
                       {"shape", e->shape},
                       {"data_offsets", {offset, offset + e->size}}};
    offset += e->size;
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // names or metadata that are not UTF-8
    throw Error(fmt::format("{}: cannot encode header: {}", path, e.what()));
  }
  alignment = std::max<size_t>(alignment, 8);
  text.append((alignment - (8 + text.size()) % alignment) % alignment, ' ');

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  OutputFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  static const uint8_t zeros[256] = {};
  for (const Entry* e : order) {
    if (e->produce) {
      size_t written = 0;
      e->produce([&](const void* p, size_t n) {
        if (n > e->size - written)
          throw Error(fmt::format("{}: tensor '{}': more than its {} bytes produced", path, e->name, e->size));
        out.write(p, n);
        written += n;
      });
      if (written != e->size)
        throw Error(fmt::format("{}: tensor '{}': {} of its {} bytes produced", path, e->name, written, e->size));
      continue;
    }
    out.write(e->data, e->data_bytes);
    for (size_t left = e->size - e->data_bytes; left > 0; left -= std::min(left, sizeof zeros))
      out.write(zeros, std::min(left, sizeof zeros));
  }
  out.commit();
}

}  // namespace evla::io
