// The one way evla writes a file. Output goes to a temp file beside the
// target and is renamed over it only when complete, so a failed or
// interrupted write never leaves a partial file or touches the old one.
// Every write error (a full disk, /dev/full) is an error naming the file.
// A target that exists and is not a regular file (/dev/null, a FIFO) is
// written in place.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace evla {

class OutputFile {
 public:
  explicit OutputFile(std::string target);
  ~OutputFile();  // removes the temp file unless committed
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Data reaches the disk before the rename makes it visible, so a crash
  // leaves either the old file or the complete new one.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what) const;
  std::string target_, path_;
  int fd_ = -1;
  bool in_place_ = false, committed_ = false;
};

// Writes `contents` to `path` through an OutputFile.
void write_file(const std::string& path, std::string_view contents);

// Flushes a directory's entries to disk (after files were created or
// renamed in it), so a rename that made them visible survives a crash.
void sync_directory(const std::string& dir);

// Fails now, naming the path, when `path` could not be written later: it is a
// directory, or its directory does not exist or is not writable. Commands
// call it for every output before long work starts.
void check_output_path(const std::string& path);

}  // namespace evla
