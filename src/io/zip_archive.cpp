#include "io/zip_archive.h"

#include <fmt/format.h>
#include <zip.h>

#include <algorithm>

#include "evla/error.h"

namespace evla::io {

namespace {

std::string zip_message(int code) {
  zip_error_t err;
  zip_error_init_with_code(&err, code);
  std::string msg = zip_error_strerror(&err);
  zip_error_fini(&err);
  return msg;
}

// A file handle of one entry, closed on every path.
struct EntryFile {
  zip_file_t* f = nullptr;
  ~EntryFile() {
    if (f) zip_fclose(f);
  }
};

}  // namespace

std::unique_ptr<ZipArchive> ZipArchive::open(const std::string& path) {
  std::unique_ptr<ZipArchive> a(new ZipArchive);
  a->path_ = path;
  int code = 0;
  a->zip_ = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  if (!a->zip_) throw Error(fmt::format("{}: not a readable zip archive: {}", path, zip_message(code)));
  a->index_entries();
  return a;
}

std::unique_ptr<ZipArchive> ZipArchive::from_memory(const uint8_t* bytes, size_t size, const std::string& name) {
  std::unique_ptr<ZipArchive> a(new ZipArchive);
  a->path_ = name;
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_buffer_create(bytes, size, 0, &err);
  if (!src) {
    std::string msg = zip_error_strerror(&err);
    zip_error_fini(&err);
    throw Error(name + ": " + msg);
  }
  a->zip_ = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err);
  if (!a->zip_) {
    zip_source_free(src);
    std::string msg = zip_error_strerror(&err);
    zip_error_fini(&err);
    throw Error(fmt::format("{}: not a readable zip archive: {}", name, msg));
  }
  zip_error_fini(&err);
  a->index_entries();
  return a;
}

ZipArchive::~ZipArchive() {
  if (zip_) zip_discard(zip_);
}

void ZipArchive::index_entries() {
  const zip_int64_t n = zip_get_num_entries(zip_, 0);
  if (n < 0) throw Error(path_ + ": cannot list the zip archive's entries");
  // A checkpoint has one entry per tensor storage: a million is far beyond any model.
  if (n > 1'000'000) throw Error(fmt::format("{}: {} entries (at most 1000000)", path_, n));
  entries_.reserve(size_t(n));
  for (zip_uint64_t i = 0; i < zip_uint64_t(n); ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(zip_, i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE))
      throw Error(fmt::format("{}: entry {} cannot be read: {}", path_, i, zip_strerror(zip_)));
    const bool compressed = !(st.valid & ZIP_STAT_COMP_METHOD) || st.comp_method != ZIP_CM_STORE;
    entries_.push_back(Entry{st.name, st.size, i, compressed});
    by_name_.emplace(entries_.back().name, entries_.size() - 1);
  }
}

const ZipArchive::Entry* ZipArchive::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::vector<uint8_t> ZipArchive::read_all(const Entry& e, uint64_t max_bytes) const {
  if (e.size > max_bytes)
    throw Error(fmt::format("{}: entry '{}' is {} bytes (at most {})", path_, e.name, e.size, max_bytes));
  std::vector<uint8_t> out;
  out.reserve(size_t(e.size));
  read_range(e, 0, e.size, [&](const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); });
  return out;
}

void ZipArchive::read_range(const Entry& e, uint64_t offset, uint64_t length,
                            const std::function<void(const uint8_t*, size_t)>& sink, size_t chunk) const {
  if (offset > e.size || length > e.size - offset)
    throw Error(fmt::format("{}: entry '{}' holds {} bytes, {} asked from offset {}", path_, e.name, e.size,
                            length, offset));
  EntryFile file;
  file.f = zip_fopen_index(zip_, e.index, 0);
  if (!file.f) throw Error(fmt::format("{}: cannot open entry '{}': {}", path_, e.name, zip_strerror(zip_)));
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(std::max<uint64_t>(length, 1), chunk)));
  uint64_t skip = offset;
  // Stored (uncompressed) entries, as PyTorch writes them, seek directly;
  // compressed ones are decompressed from the start.
  if (skip > 0 && zip_fseek(file.f, zip_int64_t(skip), SEEK_SET) == 0) skip = 0;
  while (skip > 0) {
    const zip_int64_t got = zip_fread(file.f, buf.data(), std::min<uint64_t>(skip, buf.size()));
    if (got <= 0) throw Error(fmt::format("{}: entry '{}' is truncated or corrupt", path_, e.name));
    skip -= uint64_t(got);
  }
  while (length > 0) {
    const zip_int64_t got = zip_fread(file.f, buf.data(), std::min<uint64_t>(length, buf.size()));
    if (got <= 0)
      throw Error(fmt::format("{}: entry '{}' is truncated or corrupt: {}", path_, e.name,
                              got < 0 ? zip_file_strerror(file.f) : "unexpected end of data"));
    sink(buf.data(), size_t(got));
    length -= uint64_t(got);
  }
}

}  // namespace evla::io
