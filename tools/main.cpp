// evla — command-line entry point. Subcommands register themselves (see
// commands.h); errors print one line naming the problem and exit 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "commands.h"
#include "core/comma_list.h"
#include "evla/error.h"

namespace evla::cli {

std::vector<std::string> split_csv(const std::string& csv, const std::string& what) {
  std::vector<std::string> out = comma_items(csv);
  for (const std::string& item : out)
    if (item.empty()) throw Error(what + ": empty item in '" + csv + "'");
  return out;
}

std::vector<float> parse_floats(const std::string& csv, const std::string& what) {
  std::vector<float> out;
  for (const std::string& item : split_csv(csv, what)) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0') throw Error(what + ": '" + item + "' is not a number");
    if (!std::isfinite(v)) throw Error(what + ": '" + item + "' is not a finite number");
    if (std::abs(v) > std::numeric_limits<float>::max())
      throw Error(what + ": '" + item + "' is out of range for a 32-bit float");
    out.push_back(float(v));
  }
  return out;
}

std::vector<int> parse_ints(const std::string& csv, const std::string& what) {
  std::vector<int> out;
  for (const std::string& item : split_csv(csv, what)) {
    long long v = 0;
    try {
      size_t used = 0;
      v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error(what + ": '" + item + "' is not an integer");
    }
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
      throw Error(what + ": '" + item + "' is out of range");
    out.push_back(int(v));
  }
  return out;
}

}  // namespace evla::cli

int main(int argc, char** argv) {
  CLI::App app{"evla: fast diffusion Vision-Language-Action policies on CPU"};
  app.require_subcommand(1);
  auto& reg = evla::cli::CommandRegistry::all();
  std::sort(reg.begin(), reg.end());
  for (auto& [order, add] : reg) add(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const evla::Error& e) {
    std::fprintf(stderr, "evla: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evla: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
