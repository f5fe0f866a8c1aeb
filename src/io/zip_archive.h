// Read-only access to a ZIP archive (the container of PyTorch checkpoints),
// through libzip. Entries are read by byte range, so a tensor can be streamed
// out of a multi-gigabyte archive without holding it in memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

struct zip;  // libzip's archive handle

namespace evla::io {

class ZipArchive {
 public:
  struct Entry {
    std::string name;
    uint64_t size = 0;  // uncompressed bytes
    uint64_t index = 0;
    bool compressed = false;  // not stored as is (reads decompress from the start)
  };

  // Opens and checks the central directory; errors name the file and what is wrong.
  static std::unique_ptr<ZipArchive> open(const std::string& path);
  // The same over bytes in memory (the fuzzer); the bytes must outlive the archive.
  static std::unique_ptr<ZipArchive> from_memory(const uint8_t* bytes, size_t size, const std::string& name);
  ~ZipArchive();
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* find(const std::string& name) const;

  // Whole entry into memory; refuses entries larger than `max_bytes`.
  std::vector<uint8_t> read_all(const Entry& e, uint64_t max_bytes) const;
  // `length` bytes from `offset`, handed to `sink` in pieces of at most `chunk` bytes.
  // Checks that the entry really holds them (a truncated archive is an error).
  void read_range(const Entry& e, uint64_t offset, uint64_t length,
                  const std::function<void(const uint8_t*, size_t)>& sink,
                  size_t chunk = size_t(16) << 20) const;

 private:
  ZipArchive() = default;
  void index_entries();
  std::string path_;
  ::zip* zip_ = nullptr;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;  // first entry of each name
};

}  // namespace evla::io
