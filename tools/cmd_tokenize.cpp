// evla tokenize: text to token ids with a SentencePiece model or a
// tokenizer.json, to check a tokenizer against another implementation.
#include <fmt/format.h>

#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/json_reader.h"
#include "io/tokenizer.h"

namespace evla::cli {

static void add_tokenize_command(CLI::App& app) {
  struct Opts {
    std::string tokenizer;
    std::vector<std::string> texts;
    bool json = false, no_special = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Text to token ids (SentencePiece model or tokenizer.json)");
  cmd->add_option("--tokenizer,-t", o->tokenizer, "tokenizer.model or tokenizer.json")->required();
  cmd->add_option("text", o->texts, "Texts, one line of ids each");
  cmd->add_flag("--json", o->json, "Read a JSON array of strings on stdin; write a JSON array of id arrays");
  cmd->add_flag("--no-special", o->no_special, "Without the BOS / post-processor tokens");
  cmd->callback([o] {
    auto tok = io::load_tokenizer(o->tokenizer);
    if (!o->json) {
      for (const std::string& t : o->texts) fmt::print("{}\n", fmt::join(tok->encode(t, !o->no_special), " "));
      return;
    }
    const std::string input{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    const nlohmann::json texts = parse_json(input, "stdin");
    if (!texts.is_array()) throw Error("stdin: expected a JSON array of strings");
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : texts) {
      if (!t.is_string()) throw Error("stdin: expected a JSON array of strings, found " + t.dump().substr(0, 40));
      out.push_back(tok->encode(t.get<std::string>(), !o->no_special));
    }
    fmt::print("{}\n", out.dump());
  });
}

EVLA_COMMAND(95, add_tokenize_command);

}  // namespace evla::cli
