#include "core/comma_list.h"

#include <algorithm>

namespace evla {

std::vector<std::string> comma_items(const std::string& csv) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= csv.size()) {
    const size_t end = std::min(csv.find(',', start), csv.size());
    items.push_back(csv.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

}  // namespace evla
