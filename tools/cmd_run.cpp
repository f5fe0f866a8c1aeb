// evla run: one observation in, one action chunk out.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "commands.h"
#include "evla/evla.h"
#include "io/npy.h"

namespace evla::cli {

namespace {

// One .npy per recorded tensor (flat float32, named as the parity fixtures
// name them), plus the token ids; the noise the inference used is among them.
void write_dump(const std::string& dir, const Recorder& rec) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error("--dump: cannot create directory " + dir);
  auto path = [&](const std::string& name) { return (fs::path(dir) / (name + ".npy")).string(); };
  for (const auto& [name, v] : rec.tensors) io::write_npy(path(name), v.data(), {int64_t(v.size())});
  std::vector<int32_t> ids(rec.prompt_ids.begin(), rec.prompt_ids.end());
  io::write_npy(path("token_ids"), ids.data(), {int64_t(ids.size())});
}

}  // namespace

void add_run_command(CLI::App& app) {
  struct Opts {
    std::string model, prompt, state, plan, unnorm_key, noise, step_noise, token_ids, dump;
    std::vector<std::string> images;
    uint64_t seed = 0;
    int threads = 0, repeat = 1;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("run", "Run the policy on one observation and print the action chunk");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--image,-i", o->images, "RGB image (PNG or JPEG); repeat for several cameras")->required();
  cmd->add_option("--prompt,-p", o->prompt, "Instruction, e.g. \"pick up the red block\"")->required();
  cmd->add_option("--state", o->state, "Robot state as comma-separated floats");
  cmd->add_option("--seed", o->seed, "Diffusion noise seed")->check(kSeed);
  cmd->add_option("--unnorm-key", o->unnorm_key, "Dataset whose action statistics un-normalise the actions");
  cmd->add_option("--threads,-t", o->threads, "Threads (default: all cores)")->check(kThreadCount);
  cmd->add_option("--plan", o->plan, "Acceleration plan (JSON)");
  cmd->add_option("--repeat", o->repeat, "Run N times and report the last timing")->check(CLI::Range(1, 100000));
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_option("--noise", o->noise, "Initial diffusion noise (.npy, chunk × action_dim values) instead of the seed's");
  cmd->add_option("--step-noise", o->step_noise, "DDPM: the noise added at each step (.npy, steps × chunk × action_dim)");
  cmd->add_option("--token-ids", o->token_ids, "The prompt's token ids (BOS … cognition token, comma-separated) "
                  "instead of tokenizing --prompt");
  cmd->add_option("--dump", o->dump, "Write every intermediate (towers' features, projected tokens, LM hiddens, "
                  "cognition, each sampling step, actions) and the token ids to DIR as .npy");
  cmd->callback([o] {
    LoadOptions lo;
    lo.tokenizer_optional = !o->token_ids.empty();  // ids given: nothing to tokenize
    auto model = Model::load(o->model, lo);
    Policy policy(model, PolicyOptions{o->threads});
    if (!o->plan.empty()) policy.set_plan(Plan::load(o->plan));
    Observation obs;
    for (const auto& path : o->images) {
      std::string conversion;
      obs.images.push_back(load_image(path, &conversion));
      if (!conversion.empty())
        fmt::print(stderr, "note: {}: {}\n", path, conversion);
    }
    obs.instruction = o->prompt;
    obs.seed = o->seed;
    obs.unnorm_key = o->unnorm_key;
    if (!o->state.empty()) obs.state = parse_floats(o->state, "--state");
    // An empty array would mean "none given" to the policy: refused here instead.
    auto noise_file = [](const std::string& path, const char* option) {
      std::vector<float> v = io::read_npy(path).data;
      if (v.empty()) throw Error(std::string(option) + ": " + path + " holds no values");
      return v;
    };
    if (!o->noise.empty()) obs.noise = noise_file(o->noise, "--noise");
    if (!o->step_noise.empty()) obs.step_noise = noise_file(o->step_noise, "--step-noise");
    if (!o->token_ids.empty()) obs.token_ids = parse_ints(o->token_ids, "--token-ids");
    std::set<Stage> stages = Recorder::fixture_stages();
    stages.insert({Stage::Noise, Stage::StepNoise});
    Recorder rec(stages);
    ActionChunk chunk;
    for (int r = 0; r < o->repeat; ++r) chunk = policy.infer(obs, o->dump.empty() ? nullptr : &rec);
    if (!o->dump.empty()) write_dump(o->dump, rec);
    const Timing& t = chunk.timing;
    if (o->json) {
      nlohmann::json j;
      j["model"] = model->name();
      j["plan"] = policy.plan().name;
      j["horizon"] = chunk.horizon;
      j["dim"] = chunk.dim;
      auto rows = nlohmann::json::array();
      for (int s = 0; s < chunk.horizon; ++s)
        rows.push_back(std::vector<float>(chunk.row(s), chunk.row(s) + chunk.dim));
      j["actions"] = rows;
      j["timing_ms"] = {{"vision", t.vision_ms}, {"projector", t.projector_ms}, {"llm", t.llm_ms},
                        {"action_head", t.action_head_ms}, {"total", t.total_ms}};
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("{} · \"{}\" · seed {} · plan {}\n", model->name(), o->prompt, o->seed, policy.plan().name);
    fmt::print("action chunk ({} steps × {} dims):\n", chunk.horizon, chunk.dim);
    for (int s = 0; s < chunk.horizon; ++s) {
      fmt::print("  {:2d}:", s);
      for (int d = 0; d < chunk.dim; ++d) fmt::print(" {:+.4f}", chunk.row(s)[d]);
      fmt::print("\n");
    }
    fmt::print("time: {:.1f} ms  (vision {:.1f}, projector {:.1f}, llm {:.1f}, action head {:.1f})\n",
               t.total_ms, t.vision_ms, t.projector_ms, t.llm_ms, t.action_head_ms);
  });
}

EVLA_COMMAND(10, add_run_command);

}  // namespace evla::cli
