// The one comma-list splitter (task lists, variants factors, CLI plan and number lists).
#pragma once
#include <string>
#include <vector>

namespace evla {

// The items of a comma list, empty ones included ("a," gives "a" and ""), so
// that each caller can reject an empty item with its own message.
std::vector<std::string> comma_items(const std::string& csv);

}  // namespace evla
