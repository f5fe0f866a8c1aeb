#include "model/weight_cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <utility>
#include <vector>

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

// Cache files are named "<location>-<state>[...]": every file of a location
// whose state is not the current one is stale.
std::string location_prefix(const io::TensorStore& checkpoint) {
  return fmt::format("{:016x}-", fnv1a(location(checkpoint)));
}
std::string state_prefix(const io::TensorStore& checkpoint) {
  return location_prefix(checkpoint) + fmt::format("{:016x}", fnv1a(fingerprint(checkpoint)));
}

// Which kernels read a plan's arrays decides their form (packed or plain
// int8 codes, packed fp32 panels).
std::string kernel_selection() { return "kernels: " + kernels::selection() + "\n"; }

bool is_temp(const std::string& name) { return name.find(".tmp.") != std::string::npos; }

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
  prefix_ = location_prefix(checkpoint);
  state_ = state_prefix(checkpoint);
  path_ = (fs::path(dir) / (state_ + ".safetensors")).string();
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
  // One state per checkpoint location: drop the files of its earlier states,
  // plans' included (not files other processes are still writing).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(path_).parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix_, 0) == 0 && name.rfind(state_, 0) != 0 && !is_temp(name)) fs::remove(e.path(), ec);
  }
}

PlanCache::PlanCache(const std::string& dir, const io::TensorStore& checkpoint, const std::string& plan_key) {
  if (dir.empty()) {
    status_ = "off";
    return;
  }
  fingerprint_ = fingerprint(checkpoint) + kernel_selection() + "plan: " + plan_key;
  location_prefix_ = location_prefix(checkpoint);
  for (const io::SafetensorsFile* file : checkpoint.files())
    for (const auto& [name, t] : file->tensors()) checkpoint_bytes_ += int64_t(t.nbytes);
  path_ = (fs::path(dir) / fmt::format("{}-plan-{:016x}.safetensors", state_prefix(checkpoint),
                                       fnv1a(kernel_selection() + plan_key)))
              .string();
}

std::unique_ptr<io::SafetensorsFile> PlanCache::open() {
  if (path_.empty()) return nullptr;
  std::error_code ec;
  if (!fs::exists(path_, ec)) {
    status_ = "no file yet at " + path_;
    return nullptr;
  }
  try {
    auto file = io::SafetensorsFile::open(path_);
    auto it = file->metadata().find("fingerprint");
    if (it == file->metadata().end() || it->second != fingerprint_) {
      status_ = path_ + " belongs to another plan or checkpoint (hash collision); replacing it";
      return nullptr;
    }
    status_ = fmt::format("read {} ({} arrays)", path_, file->tensors().size());
    return file;
  } catch (const std::exception& e) {
    status_ = fmt::format("ignored {}: {}", path_, e.what());
    return nullptr;
  }
}

void PlanCache::touch() {
  std::error_code ec;
  fs::last_write_time(path_, fs::file_time_type::clock::now(), ec);
}

void PlanCache::save(const DerivedArrays& arrays, double seconds, double min_seconds) {
  if (path_.empty()) return;
  const int64_t bytes = arrays.bytes();
  const int64_t limit = std::max<int64_t>(WeightCache::kMaxBytes, checkpoint_bytes_ / 2);
  std::error_code ec;
  const fs::path dir = fs::path(path_).parent_path();
  fs::create_directories(dir, ec);
  const fs::space_info space = fs::space(dir, ec);
  if (arrays.count() == 0) {
    status_ = "nothing derived";
    return;
  }
  if (seconds < min_seconds) {
    status_ = fmt::format("not written: derived in {:.3f} s, faster than reading a file back", seconds);
    return;
  }
  if (bytes > limit) {
    status_ = fmt::format("not written: {} MB of derived weights, over the limit of {} MB", bytes >> 20, limit >> 20);
    return;
  }
  if (!ec && int64_t(space.available) < bytes + (int64_t(1) << 30)) {
    status_ = fmt::format("not written: {} MB would leave under 1 GiB free on {}", bytes >> 20, dir.string());
    return;
  }
  try {
    arrays.save(path_, {{"fingerprint", fingerprint_}});
    status_ = fmt::format("wrote {} ({} arrays, {} MB)", path_, arrays.count(), bytes >> 20);
  } catch (const std::exception& e) {
    status_ = fmt::format("cannot write {}: {}", path_, e.what());
    return;
  }
  // Keep the most recently used plan files of this checkpoint location.
  std::vector<std::pair<fs::file_time_type, fs::path>> plans;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(location_prefix_, 0) == 0 && name.find("-plan-") != std::string::npos && !is_temp(name))
      plans.emplace_back(fs::last_write_time(e.path(), ec), e.path());
  }
  std::sort(plans.begin(), plans.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = kMaxPlanFiles; i < plans.size(); ++i) fs::remove(plans[i].second, ec);
}

}  // namespace evla
