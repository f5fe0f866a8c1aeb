// Output files: complete or absent, never partial; write errors are errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <iterator>

#include "core/output_file.h"
#include "evla/error.h"

namespace evla {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct ScratchDir {
  fs::path dir = fs::temp_directory_path() / ("evla_output_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(dir); }
  ~ScratchDir() { fs::remove_all(dir); }
  size_t entries() const { return size_t(std::distance(fs::directory_iterator(dir), {})); }
};

TEST(OutputFile, WritesAndReplacesWholeFiles) {
  ScratchDir s;
  const std::string path = (s.dir / "out.json").string();
  write_file(path, "old");
  write_file(path, "new contents");
  EXPECT_EQ(read(path), "new contents");
  EXPECT_EQ(s.entries(), 1u);  // no temp file left behind
}

TEST(OutputFile, AnUncommittedWriteLeavesTheOldFile) {
  ScratchDir s;
  const std::string path = (s.dir / "out.json").string();
  write_file(path, "old");
  {
    OutputFile f(path);
    f.write("half of the new");
  }  // an exception before commit()
  EXPECT_EQ(read(path), "old");
  EXPECT_EQ(s.entries(), 1u);
}

// `plan -o /dev/full` and `eval --json /dev/full` reported success.
TEST(OutputFile, AFullDeviceIsAnError) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string msg = error_of([] { write_file("/dev/full", std::string(1 << 16, 'x')); });
  EXPECT_NE(msg.find("/dev/full: cannot write: No space left on device"), std::string::npos) << msg;
  EXPECT_TRUE(fs::is_character_file("/dev/full"));  // written in place, never replaced
  EXPECT_NO_THROW(write_file("/dev/null", "fine"));
}

TEST(OutputFile, BadPathsAreNamedBeforeAnyWork) {
  ScratchDir s;
  EXPECT_EQ(error_of([] { check_output_path("/nonexistent/a.json"); }),
            "/nonexistent/a.json: cannot write: directory /nonexistent does not exist");
  EXPECT_NE(error_of([&] { check_output_path(s.dir.string()); }).find("is a directory"), std::string::npos);
  EXPECT_EQ(error_of([&] { check_output_path((s.dir / "ok.json").string()); }), "");
  EXPECT_EQ(error_of([] { check_output_path("relative.json"); }), "");
  EXPECT_EQ(error_of([] { check_output_path("/dev/null"); }), "");
  EXPECT_NE(error_of([] { write_file("/nonexistent/a.json", "x"); }).find("/nonexistent/a.json: cannot create"),
            std::string::npos);
  EXPECT_EQ(s.entries(), 0u);
}

}  // namespace
}  // namespace evla
