#include "model/weight_cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "evla/evla.h"
#include "kernels/kernels.h"

namespace evla {

namespace fs = std::filesystem;

namespace {

// Bump when the layout of any derived array changes (packing, fusion order,
// conversion): older files then no longer match.
constexpr int kDerivedLayoutVersion = 1;

// Every array is stored padded to whole 64-byte lines, so that with the data
// buffer 64-byte aligned each one starts on a cache line.
size_t padded(size_t n) { return (n + 15) / 16 * 16; }

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// What the derived arrays depend on, besides the code: the checkpoint's files
// as they were mapped (an edited or replaced file changes its inode, size or
// times), and where they are (the file-name prefix).
std::string fingerprint(const io::TensorStore& checkpoint) {
  std::string f = fmt::format("evla derived weights v{}, packed panels of {}\n", kDerivedLayoutVersion,
                              kernels::kPackedPanel);
  for (const io::SafetensorsFile* file : checkpoint.files()) f += file->identity() + "\n";
  return f;
}

std::string location(const io::TensorStore& checkpoint) {
  std::string out;
  std::error_code ec;
  for (const io::SafetensorsFile* file : checkpoint.files()) out += fs::absolute(file->path(), ec).string() + "\n";
  return out;
}

}  // namespace

std::string default_weight_cache_dir() {
  if (const char* d = std::getenv("EVLA_CACHE_DIR")) return d;  // set but empty: no cache
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "evla").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "evla").string();
  return "";
}

WeightCache::WeightCache(const std::string& dir, const io::TensorStore& checkpoint) {
  if (dir.empty()) {
    status_ = "off";
    return;
  }
  fingerprint_ = fingerprint(checkpoint);
  // Named by the checkpoint's location, then by its state: save() removes the
  // files of the same location's earlier states.
  prefix_ = fmt::format("{:016x}-", fnv1a(location(checkpoint)));
  path_ = (fs::path(dir) / fmt::format("{}{:016x}.safetensors", prefix_, fnv1a(fingerprint_))).string();
  std::error_code ec;
  if (!fs::exists(path_, ec)) {
    status_ = "no file yet at " + path_;
    return;
  }
  try {
    file_ = io::SafetensorsFile::open(path_);
    auto it = file_->metadata().find("fingerprint");
    if (it == file_->metadata().end() || it->second != fingerprint_) {
      file_.reset();
      status_ = path_ + " belongs to other files (hash collision); replacing it";
      return;
    }
    status_ = fmt::format("read {} ({} arrays)", path_, file_->tensors().size());
  } catch (const std::exception& e) {  // damaged: derive afresh and replace it
    file_.reset();
    status_ = fmt::format("ignored {}: {}", path_, e.what());
  }
}

const float* WeightCache::find(const std::string& key, size_t n) {
  if (!file_) return nullptr;
  const io::TensorInfo* t = file_->find(key);
  if (!t || t->dtype != io::DType::F32 || t->shape.size() != 1 || size_t(t->shape[0]) != padded(n) ||
      reinterpret_cast<uintptr_t>(t->data) % 64 != 0)
    return nullptr;
  auto* p = reinterpret_cast<const float*>(t->data);
  arrays_[key] = {p, n};
  return p;
}

void WeightCache::add(const std::string& key, const float* data, size_t n) {
  if (!enabled()) return;
  arrays_[key] = {data, n};
  derived_any_ = true;
}

void WeightCache::save() {
  if (!enabled() || !derived_any_) return;
  derived_any_ = false;
  size_t bytes = 0;
  for (const auto& [key, a] : arrays_) bytes += padded(a.n) * sizeof(float);
  if (bytes > kMaxBytes) {
    status_ = fmt::format("not written: {} MB of derived weights, over the cache's limit of {} MB", bytes >> 20,
                          kMaxBytes >> 20);
    return;
  }
  try {
    io::SafetensorsWriter w;
    for (const auto& [key, a] : arrays_)
      w.add_borrowed(key, io::DType::F32, {int64_t(padded(a.n))}, a.data, a.n * sizeof(float), /*zero_tail=*/true);
    w.set_metadata("fingerprint", fingerprint_);
    fs::create_directories(fs::path(path_).parent_path());
    w.write(path_, 64);
    status_ = fmt::format("wrote {} ({} arrays)", path_, arrays_.size());
  } catch (const std::exception& e) {  // a read-only or full disk costs only the speed-up
    status_ = fmt::format("cannot write {}: {}", path_, e.what());
    return;
  }
  // One file per checkpoint location: drop those of its earlier states (not
  // files other processes are still writing).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(path_).parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix_, 0) == 0 && name.find(".tmp.") == std::string::npos && e.path() != fs::path(path_))
      fs::remove(e.path(), ec);
  }
}

}  // namespace evla
