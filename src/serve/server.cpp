#include "serve/server.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <functional>
#include <optional>
#include <set>
#include <thread>
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include "serve/worker_pool.h"

namespace evla::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using Ws = websocket::stream<beast::tcp_stream>;

bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned diff = a.size() != b.size();
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    diff |= unsigned(i < a.size() ? uint8_t(a[i]) : 0) ^ unsigned(i < b.size() ? uint8_t(b[i]) : 0);
  return diff == 0;
}

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

void log_stderr(const std::string& line) {
  std::fprintf(stderr, "%s evla serve: %s\n", fmt::format("{:%Y-%m-%dT%H:%M:%S}", fmt::localtime(std::time(nullptr))).c_str(),
               line.c_str());
}

// Runs the observation on the pool and resumes the calling coroutine on its
// own executor with the result (an error result if the queue is full).
template <class Token>
auto async_infer(WorkerPool& pool, Observation obs, Token&& token) {
  return asio::async_initiate<Token, void(InferResult)>(
      [&pool](auto handler, Observation obs) {
        using H = decltype(handler);
        auto h = std::make_shared<H>(std::move(handler));
        auto ex = asio::get_associated_executor(*h);
        auto resume = [h, ex](InferResult r) {
          asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
        };
        if (!pool.submit(std::move(obs), resume)) {
          InferResult busy;
          busy.error = "server busy: the request queue is full, retry later";
          resume(std::move(busy));
        }
      },
      token, std::move(obs));
}

}  // namespace

// Per connection. Shared between its coroutine and, on shutdown, a close
// operation that may outlive the coroutine (Beast needs the stream until then).
struct Session : std::enable_shared_from_this<Session> {
  std::function<void()> on_destroy;  // the server forgets it only once nothing uses the stream
  ~Session() { on_destroy(); }
  std::string peer;
  beast::tcp_stream* tcp = nullptr;  // during the HTTP phase (lives in the coroutine)
  std::optional<Ws> ws;              // after the upgrade
  bool reading = false;              // waiting for the next request
  bool closing = false;              // shutdown asked: close at the next chance
  bool close_sent = false;           // a close frame is on its way
};

struct Server::Impl {
  ServerOptions opts;
  Metadata meta;
  std::atomic<uint64_t> open{0}, connections{0}, requests{0}, errors{0};
  std::set<Session*> sessions;  // I/O thread only
  bool stopping = false;        // I/O thread only
  std::unique_ptr<WorkerPool> pool;
  // Declared after the state above: destroying the io_context destroys any
  // coroutine frames left, whose destructors touch `sessions`.
  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  asio::signal_set signals{ioc};
  asio::steady_timer grace{ioc};
  std::thread thread;
  std::mutex join_mu;
  int port = 0;

  // Members die after this body: a Session released while the io_context is
  // torn down must not touch `grace`, which is already gone by then.
  ~Impl() { stopping = false; }

  void log(const std::string& line) { opts.log ? opts.log(line) : log_stderr(line); }

  awaitable<void> accept_loop();
  awaitable<void> serve(tcp::socket sock);
  awaitable<void> serve_websocket(Session& s);
  awaitable<bool> read_message(Ws& ws, beast::flat_buffer& buf, std::string* error);
  bool authorized(const http::request<http::string_body>& req) const;
  void begin_shutdown();
  void force_close();
};

awaitable<void> Server::Impl::accept_loop() {
  while (!stopping) {
    beast::error_code ec;
    tcp::socket sock = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      asio::co_spawn(ioc, serve(std::move(sock)), asio::detached);
      continue;
    }
    if (stopping || ec == asio::error::operation_aborted) break;
    log(fmt::format("accept failed: {}", ec.message()));  // e.g. out of file descriptors
    asio::steady_timer pause(ioc, std::chrono::milliseconds(100));
    co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

bool Server::Impl::authorized(const http::request<http::string_body>& req) const {
  if (opts.api_key.empty()) return true;
  auto it = req.find(http::field::authorization);
  std::string got = it == req.end() ? std::string() : std::string(it->value());
  return constant_time_equal(got, "Api-Key " + opts.api_key);
}

awaitable<void> Server::Impl::serve(tcp::socket sock) {
  auto sp = std::make_shared<Session>();
  Session& s = *sp;
  s.on_destroy = [this, p = sp.get()] {
    sessions.erase(p);
    --open;
    if (stopping && sessions.empty()) grace.cancel();
  };
  sessions.insert(&s);
  ++open;
  ++connections;
  beast::error_code ec;
  auto ep = sock.remote_endpoint(ec);
  s.peer = ec ? "?" : fmt::format("{}:{}", ep.address().to_string(), ep.port());

  beast::tcp_stream stream(std::move(sock));
  s.tcp = &stream;
  std::string outcome;
  try {
    beast::flat_buffer buf;
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(4096);
    stream.expires_after(std::chrono::seconds(15));
    co_await http::async_read(stream, buf, parser, use_awaitable);
    auto req = parser.release();

    auto respond = [&](http::status status, std::string body) -> awaitable<void> {
      http::response<http::string_body> res{status, req.version()};
      res.set(http::field::server, "evla");
      res.set(http::field::content_type, "text/plain");
      if (status == http::status::unauthorized) res.set(http::field::www_authenticate, "Api-Key");
      res.keep_alive(false);
      res.body() = std::move(body);
      res.prepare_payload();
      co_await http::async_write(stream, res, use_awaitable);
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    };

    if (!websocket::is_upgrade(req)) {
      // Plain HTTP: only the health check (no auth, so load balancers can probe).
      if (req.target() == "/healthz") co_await respond(http::status::ok, "OK\n");
      else co_await respond(http::status::not_found, "not found; this is a WebSocket policy server\n");
      co_return;
    }
    if (!authorized(req)) {
      ++errors;
      log(fmt::format("{}: refused: missing or wrong API key", s.peer));
      co_await respond(http::status::unauthorized, "missing or wrong API key\n");
      co_return;
    }
    if (stopping) {
      co_await respond(http::status::service_unavailable, "server shutting down\n");
      co_return;
    }

    Ws& ws = s.ws.emplace(std::move(stream));
    s.tcp = nullptr;
    beast::get_lowest_layer(ws).expires_never();  // the websocket has its own timeouts
    websocket::stream_base::timeout t{};
    t.handshake_timeout = std::chrono::seconds(15);
    t.idle_timeout = std::chrono::seconds(std::max(opts.idle_timeout_s, 2));
    t.keep_alive_pings = true;  // a live client answers pings; a vanished one is dropped
    ws.set_option(t);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "evla"); }));
    ws.read_message_max(0);  // read_message() enforces our limit and reports it the openpi way
    ws.auto_fragment(false);
    co_await ws.async_accept(req, use_awaitable);
    co_await serve_websocket(s);
    outcome = s.closing ? "closed for shutdown" : "closed after an error";
  } catch (const boost::system::system_error& e) {
    const auto& c = e.code();
    if (c == websocket::error::closed) outcome = "closed by the client";
    else if (c == asio::error::eof || c == http::error::end_of_stream) outcome = "dropped by the client (no close frame)";
    else outcome = "dropped (" + c.message() + ")";
    if (s.closing) outcome = "closed for shutdown";
  } catch (const std::exception& e) {  // never let one connection take the I/O thread down
    ++errors;
    outcome = std::string("failed: ") + e.what();
  }
  if (s.ws)  // plain HTTP requests (health checks) are not worth a line each
    log(fmt::format("{}: connection {}", s.peer, outcome));
}

// One observation per iteration, as openpi's server loop. Returns when the
// client closes (or on shutdown); throws on I/O errors.
awaitable<void> Server::Impl::serve_websocket(Session& s) {
  Ws& ws = *s.ws;
  ws.binary(true);
  co_await ws.async_write(asio::buffer(encode_metadata(meta)), use_awaitable);
  uint64_t served = 0;
  std::optional<double> prev_total_ms;
  beast::flat_buffer buf;

  auto fail = [&](const std::string& what) -> awaitable<void> {
    // openpi: the error as a text frame, then close 1011 (internal error).
    ++errors;
    log(fmt::format("{}: error after {} requests: {}", s.peer, served, what.substr(0, 300)));
    ws.text(true);
    co_await ws.async_write(asio::buffer("evla serve error: " + what), use_awaitable);
    co_await ws.async_close(websocket::close_reason(websocket::close_code::internal_error,
                                                    "Internal server error. Details in the previous frame."),
                            use_awaitable);
  };

  for (;;) {
    if (s.closing) {  // shutdown came while we were busy: say goodbye now
      if (!s.close_sent) {
        s.close_sent = true;
        co_await ws.async_close(websocket::close_code::going_away, use_awaitable);
      }
      co_return;
    }
    auto t0 = Clock::now();  // openpi's prev_total_ms also starts before the receive
    buf.clear();
    std::string error;
    s.reading = true;
    bool ok = co_await read_message(ws, buf, &error);
    s.reading = false;
    if (s.close_sent) co_return;  // shutdown's close frame crossed this request; Beast finishes the close
    if (!ok) {
      co_await fail(error);
      co_return;
    }
    Observation obs;
    try {
      const auto* data = static_cast<const uint8_t*>(buf.data().data());
      obs = decode_observation(data, buf.size(), meta);
    } catch (const std::exception& e) {  // ProtocolError, or bad_alloc on a hostile message
      error = e.what();  // (no co_await inside a catch block)
    }
    if (!error.empty()) {
      co_await fail(error);
      co_return;
    }
    InferResult r = co_await async_infer(*pool, std::move(obs), use_awaitable);
    if (!r.error.empty()) {
      co_await fail("inference failed: " + r.error);
      co_return;
    }
    std::string reply = encode_reply(r.chunk, ReplyTiming{r.infer_ms, r.queue_ms, prev_total_ms});
    ws.binary(true);
    co_await ws.async_write(asio::buffer(reply), use_awaitable);
    ++served;
    ++requests;
    prev_total_ms = ms_since(t0);
  }
}

// Reads one whole binary message into `buf`, refusing (false, *error) text
// frames and anything over max_message_bytes before buffering it all.
awaitable<bool> Server::Impl::read_message(Ws& ws, beast::flat_buffer& buf, std::string* error) {
  const size_t max = opts.max_message_bytes;
  do {
    co_await ws.async_read_some(buf, 64 * 1024, use_awaitable);
    if (ws.got_text()) {
      *error = "expected a binary msgpack frame, got a text frame";
      co_return false;
    }
    if (buf.size() > max) {
      *error = fmt::format("message larger than the limit of {} bytes (--max-message-mb)", max);
      co_return false;
    }
  } while (!ws.is_message_done());
  co_return true;
}

void Server::Impl::begin_shutdown() {
  if (stopping) return;
  stopping = true;
  beast::error_code ec;
  acceptor.close(ec);
  signals.cancel(ec);
  for (Session* s : sessions) {
    s->closing = true;
    if (s->tcp) {
      s->tcp->socket().close(ec);
    } else if (s->ws && s->reading) {
      // Idle in a read: Beast lets a close run beside it; the read then ends
      // with "closed". The handler keeps the stream alive until the close is done.
      s->close_sent = true;
      s->ws->async_close(websocket::close_code::going_away, [keep = s->shared_from_this()](beast::error_code) {});
    }  // else busy (handshake, inference, reply): it closes itself at the top of its loop
  }
  if (sessions.empty()) return;
  grace.expires_after(std::chrono::milliseconds(opts.shutdown_grace_ms));
  grace.async_wait([this](beast::error_code ec) {
    if (!ec) force_close();
  });
}

// Grace period over: fail whatever is still queued and cut the sockets.
void Server::Impl::force_close() {
  pool->stop();  // in-flight inferences finish; queued ones resume with an error
  beast::error_code ec;
  for (Session* s : sessions) {
    if (s->ws) beast::get_lowest_layer(*s->ws).socket().close(ec);
    if (s->tcp) s->tcp->socket().close(ec);
  }
}

Server::Server(std::shared_ptr<const Model> model, const Plan& plan, ServerOptions opts)
    : impl_(std::make_unique<Impl>()) {
  impl_->opts = std::move(opts);
  impl_->meta = make_metadata(*model, plan, impl_->opts.keys, std::max(impl_->opts.workers, 1), impl_->opts.unnorm_key);
  impl_->pool = std::make_unique<WorkerPool>(model, plan, impl_->opts.workers, impl_->opts.threads_per_worker,
                                             impl_->opts.max_queue);
}

Server::~Server() { stop(); }

void Server::start() {
  Impl& m = *impl_;
  try {
    tcp::endpoint ep(asio::ip::make_address(m.opts.host), static_cast<unsigned short>(m.opts.port));
    m.acceptor.open(ep.protocol());
    m.acceptor.set_option(asio::socket_base::reuse_address(true));
    m.acceptor.bind(ep);
    m.acceptor.listen(asio::socket_base::max_listen_connections);
    m.port = m.acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    throw Error(fmt::format("cannot listen on {}:{}: {}", m.opts.host, m.opts.port, e.code().message()));
  }
  if (m.opts.handle_signals) {
    m.signals.add(SIGINT);
    m.signals.add(SIGTERM);
    m.signals.async_wait([&m](beast::error_code ec, int sig) {
      if (ec) return;
      m.log(fmt::format("{}: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM"));
      m.begin_shutdown();
    });
  }
  asio::co_spawn(m.ioc, m.accept_loop(), asio::detached);
  m.log(fmt::format("serving {} (plan {}, {} worker{}) on ws://{}:{}", m.meta.model, m.meta.plan_name,
                    m.pool->workers(), m.pool->workers() > 1 ? "s" : "", m.opts.host, m.port));
  m.thread = std::thread([&m] { m.ioc.run(); });
}

int Server::port() const { return impl_->port; }
const Metadata& Server::metadata() const { return impl_->meta; }

ServerStats Server::stats() const {
  return {impl_->open.load(), impl_->connections.load(), impl_->requests.load(), impl_->errors.load()};
}

void Server::wait() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.join_mu);
    if (m.thread.joinable() && m.thread.get_id() != std::this_thread::get_id()) m.thread.join();
  }
  m.pool->stop();
}

void Server::stop() {
  Impl& m = *impl_;
  if (m.thread.joinable()) asio::post(m.ioc, [&m] { m.begin_shutdown(); });
  wait();
}

}  // namespace evla::serve
