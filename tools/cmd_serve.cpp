// evla serve: the policy behind an openpi-compatible WebSocket server.
#include <fmt/format.h>

#include <cstdlib>

#include "commands.h"
#include "evla/evla.h"
#include "serve/server.h"

namespace evla::cli {

void add_serve_command(CLI::App& app) {
  struct Opts {
    std::string model, plan;
    serve::ServerOptions server;
    double max_message_mb = 16;
  };
  auto o = std::make_shared<Opts>();
  auto& s = o->server;
  CLI::App* cmd = app.add_subcommand("serve", "Serve the policy over WebSocket (openpi protocol)");
  cmd->add_option("--model,-m", o->model, "Model directory")->required();
  cmd->add_option("--plan", o->plan, "Acceleration plan (JSON)");
  cmd->add_option("--host", s.host, "Address to bind (loopback by default)")->capture_default_str();
  cmd->add_option("--port", s.port, "TCP port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", s.api_key, "Require 'Authorization: Api-Key KEY'")
      ->envname("EVLA_API_KEY")
      ->check(CLI::Validator(
          [](std::string& key) {
            return key.empty() ? std::string("an empty key would turn authentication off; leave the option out instead")
                               : std::string();
          },
          "KEY"));
  cmd->add_option("--max-message-mb", o->max_message_mb, "Largest observation accepted, MiB")
      ->capture_default_str()->check(CLI::Range(0.001, 1024.0));
  cmd->add_option("--workers", s.workers, "Policy sessions sharing the model")->capture_default_str()->check(kThreadCount);
  cmd->add_option("--threads,-t", s.threads_per_worker, "Threads per worker (default: cores / workers)")->check(kThreadCount);
  cmd->add_option("--max-queue", s.max_queue, "Pending requests before answering 'server busy'")->capture_default_str();
  cmd->add_option("--image-key", s.keys.images, "Observation key of each image, in model order (repeat)")
      ->default_str(fmt::format("{}", fmt::join(s.keys.images, " ")));
  cmd->add_option("--state-key", s.keys.state, "Observation key of the robot state")->capture_default_str();
  cmd->add_option("--prompt-key", s.keys.prompt, "Observation key of the instruction")->capture_default_str();
  cmd->add_option("--seed-key", s.keys.seed, "Observation key of the optional noise seed")->capture_default_str();
  cmd->add_option("--unnorm-key", s.unnorm_key,
                  "Dataset whose action statistics un-normalise requests that name none (key 'unnorm_key')");
  cmd->add_option("--idle-timeout", s.idle_timeout_s, "Seconds before a silent, unresponsive client is dropped")
      ->capture_default_str()->check(CLI::Range(2, 86400));
  cmd->callback([o] {
    if (const char* env = std::getenv("EVLA_API_KEY"); env && !*env && o->server.api_key.empty())
      throw Error("EVLA_API_KEY is set but empty, which would turn authentication off; unset it instead");
    auto model = Model::load(o->model);
    Plan plan = o->plan.empty() ? Plan{} : Plan::load(o->plan);
    o->server.max_message_bytes = size_t(o->max_message_mb * 1024 * 1024);
    o->server.handle_signals = true;
    if (o->server.api_key.empty() && o->server.host != "127.0.0.1" && o->server.host != "::1" &&
        o->server.host != "localhost")
      fmt::print(stderr, "warning: serving on {} without --api-key\n", o->server.host);
    if (o->server.host == "localhost") o->server.host = "127.0.0.1";
    serve::Server server(model, plan, o->server);
    server.start();
    server.wait();  // until SIGINT/SIGTERM
    auto st = server.stats();
    fmt::print(stderr, "evla serve: stopped after {} connections, {} requests, {} errors\n", st.connections,
               st.requests, st.errors);
  });
}

EVLA_COMMAND(60, add_serve_command);

}  // namespace evla::cli
