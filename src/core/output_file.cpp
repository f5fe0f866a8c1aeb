#include "core/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "evla/error.h"

namespace evla {

namespace fs = std::filesystem;

OutputFile::OutputFile(std::string target) : target_(std::move(target)) {
  struct stat st {};
  in_place_ = ::stat(target_.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
  if (in_place_ && S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    path_ = target_;
    fail("cannot write");
  }
  if (in_place_) {
    path_ = target_;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd_ < 0) fail("cannot open for writing");
    return;
  }
  // A name of its own (mkstemp), so writers of the same target in other
  // processes, even with equal pids in other containers, never share it.
  path_ = target_ + ".tmp.XXXXXX";
  fd_ = ::mkostemp(path_.data(), O_CLOEXEC);
  if (fd_ < 0) {
    path_ = target_;
    fail("cannot create");
  }
  if (::fchmod(fd_, 0644) != 0) {
    const int err = errno;
    ::close(fd_), fd_ = -1;
    ::unlink(path_.c_str());
    errno = err;
    fail("cannot chmod");
  }
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !in_place_) ::unlink(path_.c_str());
}

void OutputFile::write(const void* data, size_t n) {
  auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("cannot write");
    p += w;
    n -= size_t(w);
  }
}

void OutputFile::commit() {
  if (!in_place_ && ::fsync(fd_) != 0) fail("cannot sync");
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail("cannot close");
  if (!in_place_ && ::rename(path_.c_str(), target_.c_str()) != 0) fail("cannot rename to " + target_);
  committed_ = true;
}

void OutputFile::fail(const std::string& what) const {
  throw Error(fmt::format("{}: {}: {}", path_, what, std::strerror(errno)));
}

void write_file(const std::string& path, std::string_view contents) {
  OutputFile f(path);
  f.write(contents);
  f.commit();
}

void check_output_path(const std::string& path) {
  if (path.empty()) throw Error("output path is empty");
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_directory(st)) throw Error(path + ": is a directory, not a file to write");
  if (fs::exists(st) && !fs::is_regular_file(st)) {  // /dev/null, a FIFO: opened in place
    if (::access(path.c_str(), W_OK) != 0) throw Error(fmt::format("{}: cannot write: {}", path, std::strerror(errno)));
    return;
  }
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{}: cannot write: directory {} does not exist", path, dir.string()));
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error(fmt::format("{}: cannot write in {}: {}", path, dir.string(), std::strerror(errno)));
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(dir + ": cannot open directory: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw Error(dir + ": cannot sync directory: " + std::strerror(err));
}

}  // namespace evla
