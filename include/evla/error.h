// evla — errors. Every failure the library can report is an evla::Error whose
// message names what was wrong (file, tensor, config key, plan field, ...).
#pragma once
#include <stdexcept>
#include <string>

namespace evla {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace evla
