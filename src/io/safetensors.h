// safetensors: memory-mapped, fully validated reading; writing for tools and
// datasets. Format: 8-byte little-endian header length N, N bytes of JSON,
// then the data buffer that the JSON's data_offsets index into.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace evla::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "F32", "BF16", ...
DType parse_dtype(const std::string& s, const std::string& context);  // throws on unknown

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t nbytes = 0;
  std::string file;  // for error messages

  int64_t numel() const;
  std::string shape_str() const;  // "[3, 4]"
};

// One validated .safetensors file. Read-only memory map, kept alive by this object.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Validates an in-memory image of a file (used by open() and the fuzzer).
  // The bytes must outlive the returned object.
  static std::unique_ptr<SafetensorsFile> from_memory(const uint8_t* bytes, size_t size,
                                                      const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // The mapped file as it was when mapped: absolute path, device, inode, size,
  // modification and change times (empty for from_memory). Equal identities
  // mean the same bytes unless the file was rewritten in place with both
  // times forged.
  const std::string& identity() const { return identity_; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_, identity_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json.
class TensorStore {
 public:
  static TensorStore open_dir(const std::string& dir);
  static TensorStore open_file(const std::string& path);

  bool has(const std::string& name) const;
  // Throws evla::Error naming the tensor and the directory when absent.
  const TensorInfo& get(const std::string& name) const;
  // get() plus a shape check; the error names tensor, expected and found shape.
  const TensorInfo& get(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
  const std::string& source() const { return source_; }
  // The files the tensors come from.
  std::vector<const SafetensorsFile*> files() const;

 private:
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
};

// Converts any floating tensor (F32, F16, BF16, F64) to fp32 into dst (numel floats).
void to_f32(const TensorInfo& t, float* dst);
std::vector<float> to_f32(const TensorInfo& t);

class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* data);
  // Without a copy: `data` must stay valid until write(). With zero_tail,
  // nbytes may be short of the shape's size and the rest is written as zeros
  // (padding that keeps the next tensor aligned).
  void add_borrowed(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                    size_t nbytes, bool zero_tail = false);
  // The bytes come from `produce` during write(), which must hand the sink
  // exactly the shape's size: a tensor streamed from another file is never
  // held whole in memory.
  using Sink = std::function<void(const void*, size_t)>;
  using Producer = std::function<void(const Sink&)>;
  void add_streamed(const std::string& name, DType dtype, std::vector<int64_t> shape, Producer produce);
  void set_metadata(const std::string& key, const std::string& value);
  // Writes atomically (temp file + rename). Throws evla::Error on I/O failure.
  // The header is padded with spaces so that the data buffer starts at a
  // multiple of `alignment` bytes (a power of two, at least 8).
  void write(const std::string& path, size_t alignment = 8) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> owned;  // empty for borrowed data
    const uint8_t* data;         // data_bytes bytes, then zeros up to size
    size_t data_bytes, size;
    Producer produce;            // instead of data, when set
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace evla::io
