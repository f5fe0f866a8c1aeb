// evla lm: run a bare Llama checkpoint (Hugging Face layout) — token ids in,
// logits / greedy continuation out — to check it against other runtimes.
#include <fmt/format.h>

#include <filesystem>

#include "commands.h"
#include "evla/evla.h"
#include "io/tokenizer.h"

namespace evla::cli {

static void add_lm_command(CLI::App& app) {
  struct Opts {
    std::string model, ids, prompt, tokenizer;
    int generate = 0, threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("lm", "Run a Llama checkpoint on its own (ids or text in, greedy tokens out)");
  cmd->add_option("--model,-m", o->model, "Hugging Face Llama directory")->required();
  cmd->add_option("--ids", o->ids, "Comma-separated token ids (default: BOS)");
  cmd->add_option("--prompt,-p", o->prompt, "Text, encoded with the tokenizer");
  cmd->add_option("--tokenizer", o->tokenizer, "SentencePiece model or tokenizer.json (default: MODEL/tokenizer.model)");
  cmd->add_option("--generate,-n", o->generate, "Greedy tokens to append")->check(CLI::Range(0, 4096));
  cmd->add_option("--threads,-t", o->threads, "Threads")->check(kThreadCount);
  cmd->callback([o] {
    auto lm = LanguageModel::load(o->model);
    std::unique_ptr<io::Tokenizer> tok;
    std::string tok_path = o->tokenizer.empty() ? o->model + "/tokenizer.model" : o->tokenizer;
    if (std::filesystem::exists(tok_path)) tok = io::load_tokenizer(tok_path);
    std::vector<int> ids;
    if (!o->prompt.empty()) {
      if (!tok) throw Error("--prompt needs a tokenizer; none at " + tok_path);
      ids = tok->encode(o->prompt, true);
    } else if (!o->ids.empty()) {
      ids = parse_ints(o->ids, "--ids");
    } else {
      ids = {1};
    }
    std::vector<int> out = lm->generate_greedy(ids, o->generate, o->threads);
    fmt::print("ids: {}\n", fmt::join(out, ","));
    if (tok) fmt::print("text: {}\n", tok->decode(out));
  });
}

EVLA_COMMAND(90, add_lm_command);

}  // namespace evla::cli
