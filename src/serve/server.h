// `evla serve`: an openpi-compatible WebSocket policy server.
//
//   auto model = evla::Model::load("models/evla-tiny-random");
//   evla::serve::ServerOptions opts;          // 127.0.0.1:8000, 1 worker
//   evla::serve::Server server(model, evla::Plan{}, opts);
//   server.start();                           // binds; serves on its own thread
//   server.wait();                            // until stop() or SIGINT/SIGTERM
//
// One I/O thread runs every connection as a coroutine (parsing and encoding
// are cheap); inference runs on the WorkerPool, so a slow or vanished client
// only ever holds its own connection. Boost.Beast stays inside server.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "evla/evla.h"
#include "serve/protocol.h"

namespace evla::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";        // loopback unless asked otherwise
  int port = 8000;                       // 0: an ephemeral port, see Server::port()
  std::string api_key;                   // non-empty: require "Authorization: Api-Key <key>"
  size_t max_message_bytes = 16u << 20;  // larger observations are refused
  int workers = 1;                       // Policy sessions sharing the model
  int threads_per_worker = 0;            // 0: cores / workers
  size_t max_queue = 256;                // pending requests before "server busy"
  ObsKeys keys;
  std::string unnorm_key;      // dataset of requests that name none ("" : the model's only one)
  int idle_timeout_s = 60;     // ping a silent client at half of this, drop it at the end
  int shutdown_grace_ms = 2000;  // on stop, in-flight replies get this long
  bool handle_signals = false;   // SIGINT/SIGTERM stop the server (the CLI sets this)
  // One line per connection and per error, never payload. Default: stderr.
  std::function<void(const std::string&)> log;
};

struct ServerStats {
  uint64_t open_connections = 0, connections = 0, requests = 0, errors = 0;
};

class Server {
 public:
  // Builds the worker pool (evla::Error if the plan or keys do not fit).
  Server(std::shared_ptr<const Model> model, const Plan& plan, ServerOptions opts);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens (evla::Error if the address is taken), then serves on
  // a background thread.
  void start();
  int port() const;
  const Metadata& metadata() const;
  ServerStats stats() const;
  // Blocks until the server has stopped (stop() or a signal).
  void wait();
  // Stops accepting, closes every connection (1001 going away) after its
  // in-flight reply, and joins. Safe from any thread, idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Constant-time comparison for secrets (time depends only on the lengths).
bool constant_time_equal(const std::string& a, const std::string& b);

}  // namespace evla::serve
