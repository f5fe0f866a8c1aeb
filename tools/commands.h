// Each `evla <subcommand>` lives in its own tools/cmd_<name>.cpp: it parses
// its options, calls the library and prints. A file adds its subcommand to
// the CLI with one EVLA_COMMAND(order, function) line.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

#include "evla/evla.h"

namespace evla::cli {

using CommandAdder = void (*)(CLI::App& app);

struct CommandRegistry {
  static std::vector<std::pair<int, CommandAdder>>& all() {
    static std::vector<std::pair<int, CommandAdder>> list;
    return list;
  }
};

struct RegisterCommand {
  RegisterCommand(int order, CommandAdder f) { CommandRegistry::all().emplace_back(order, f); }
};

// Bounds of the counts commands take (docs/format.md, Limits); CLI11 checks
// a value given on the command line, never a default.
inline constexpr int kMaxThreads = 256;  // ThreadPool::kMaxThreads
inline constexpr int kMaxEpisodes = 100000;
inline constexpr int kMaxImageSide = 4096;
inline const CLI::Range kThreadCount(1, kMaxThreads);
inline const CLI::Range kEpisodeCount(1, kMaxEpisodes);
// Seeds are unsigned 64-bit: "-1" would wrap silently.
inline const CLI::Validator kSeed(
    [](std::string& s) { return s.starts_with('-') ? "must be a non-negative integer, got " + s : std::string(); },
    "SEED");

// An option bound to a library field through the library's parser of its
// text (an enum, a list): `parse` turns the text into the value and throws
// evla::Error naming what is wrong. `o` owns `field` and lives as long as the
// command (its callbacks hold it).
template <typename T, typename Parse>
CLI::Option* add_parsed(CLI::App* cmd, const std::string& name, T& field, Parse parse, const std::string& help,
                        const std::string& default_text = "") {
  CLI::Option* opt =
      cmd->add_option_function<std::string>(name, [&field, parse](const std::string& s) { field = parse(s); }, help);
  if (!default_text.empty()) opt->default_str(default_text);
  return opt;
}

// Shared helpers for subcommands.
// Comma lists from the command line; an empty item is an error naming `what`.
std::vector<std::string> split_csv(const std::string& csv, const std::string& what);
std::vector<float> parse_floats(const std::string& csv, const std::string& what);
std::vector<int> parse_ints(const std::string& csv, const std::string& what);
// The observation timing runs use (tools/synthetic_observation.cpp).
Observation synthetic_observation(const Model& m);

}  // namespace evla::cli

#define EVLA_COMMAND(order, fn) static ::evla::cli::RegisterCommand evla_register_##fn(order, fn)
