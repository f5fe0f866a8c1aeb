// evla convert cogact: a released CogACT checkpoint into an evla model directory.
#include <fmt/format.h>

#include <chrono>
#include <fstream>

#include <unistd.h>

#include "commands.h"
#include "convert/cogact.h"
#include "core/memory_info.h"

namespace evla::cli {


void add_convert_command(CLI::App& app) {
  CLI::App* convert = app.add_subcommand("convert", "Convert a released checkpoint into an evla model directory");
  convert->require_subcommand(1);
  auto o = std::make_shared<convert::CogactConvertOptions>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* cmd = convert->add_subcommand(
      "cogact", "A CogACT checkpoint (torch.save .pt, read without executing it, or safetensors)");
  cmd->add_option("--checkpoint,-c", o->checkpoint, "checkpoints/*.pt, a .safetensors file or a directory of them")
      ->required();
  cmd->add_option("--config", o->config, "The model repository's config.json (names the base VLM and DiT size)");
  cmd->add_option("--stats", o->stats, "dataset_statistics.json: every dataset's action statistics");
  cmd->add_option("--tokenizer", o->tokenizer, "Llama-2 tokenizer.model, copied into the model directory");
  cmd->add_option("--dtype", o->dtype, "Weights as f32, bf16 or f16, or int8: the LM layers' matrices as int8 with one scale per row, the rest bf16 (default: as stored)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "int8"}));
  cmd->add_option("--set", o->sets, "Override a field of the written config.json: key.path=value (repeatable)");
  cmd->add_flag("--ema", o->use_ema, "Use the EMA action head (ema_diffusion) instead of action_model");
  cmd->add_option("--shard-gb", [o](const CLI::results_t& r) {
        const double gb = std::stod(r.at(0));
        if (!(gb >= 0.001 && gb <= 1024)) return false;
        o->shard_bytes = uint64_t(gb * double(1ull << 30));
        return true;
      }, "Largest safetensors shard, GiB (default 4)");
  cmd->add_option("--output,-o", o->output, "New model directory")->required();
  cmd->add_flag("--quiet,-q", *quiet, "No progress line (shown only on a terminal)");
  cmd->callback([o, quiet] {
    const auto t0 = std::chrono::steady_clock::now();
    const bool show = !*quiet && ::isatty(2);
    const auto progress = [&](const std::string& name, int64_t done, int64_t total) {
      if (show) fmt::print(stderr, "\r[{}/{}] {:<70.70}", done, total, name);
    };
    const convert::CogactConvertReport r = convert::convert_cogact(*o, progress);
    if (show) fmt::print(stderr, "\n");
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const std::string& n : r.notes) fmt::print("note: {}\n", n);
    if (!r.skipped_groups.empty()) fmt::print("not converted: {}\n", fmt::join(r.skipped_groups, ", "));
    fmt::print("wrote {}: {} tensors, {:.3f} B parameters, {:.2f} GB in {:.1f} s (peak memory {:.2f} GB)\n",
               o->output, r.tensors, double(r.params) / 1e9, double(r.bytes) / 1e9, s, double(peak_rss_bytes()) / 1e9);
  });
}

EVLA_COMMAND(15, add_convert_command);

}  // namespace evla::cli
