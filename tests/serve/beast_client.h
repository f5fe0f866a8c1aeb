// A small Boost.Beast WebSocket/HTTP client for the serve tests; every
// operation has a deadline, so a misbehaving server fails a test, never hangs it.
#pragma once
#include <utility>  // before Asio (see server.cpp)

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include "serve_test_util.h"

namespace evla::serve::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

// Every operation runs the client's own io_context for at most `timeout`.
class Client {
 public:
  explicit Client(std::chrono::milliseconds timeout = std::chrono::seconds(20)) : timeout_(timeout) {}

  // TCP connect + WebSocket handshake; throws system_error (e.g. 401 refusal).
  void connect(int port, const std::string& authorization = "") {
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
    wait([&](auto h) { beast::get_lowest_layer(ws_).async_connect(ep, h); });
    if (!authorization.empty())
      ws_.set_option(websocket::stream_base::decorator(
          [authorization](websocket::request_type& req) { req.set(http::field::authorization, authorization); }));
    wait([&](auto h) { ws_.async_handshake("127.0.0.1", "/", h); });
  }
  // The next message; *text tells a text (error) frame from a binary one.
  std::string read(bool* text = nullptr) {
    beast::flat_buffer buf;
    wait([&](auto h) { ws_.async_read(buf, h); });
    if (text) *text = ws_.got_text();
    return beast::buffers_to_string(buf.data());
  }
  void write(const std::string& bytes, bool binary = true) {
    ws_.binary(binary);
    wait([&](auto h) { ws_.async_write(asio::buffer(bytes), h); });
  }
  // Sends an observation, returns the reply; throws on an error frame.
  Decoded infer(const std::string& obs) {
    write(obs);
    bool text = false;
    std::string r = read(&text);
    if (text) throw std::runtime_error("server error: " + r);
    return decode(r);
  }
  // Reads until the server closes; returns the close code (0 if none).
  int read_until_close(std::string* last_text = nullptr) {
    for (int i = 0; i < 8; ++i) {
      try {
        bool text = false;
        std::string m = read(&text);
        if (text && last_text) *last_text = m;
      } catch (const boost::system::system_error& e) {
        if (e.code() == websocket::error::closed) return int(ws_.reason().code);
        return 0;
      }
    }
    return 0;
  }
  void close() {
    wait([&](auto h) { ws_.async_close(websocket::close_code::normal, h); });
  }
  // Vanishes without a close frame.
  void drop() {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  template <class Start>
  void wait(Start start) {
    bool done = false;
    beast::error_code ec;
    start([&](beast::error_code e, auto&&...) {
      ec = e;
      done = true;
    });
    ioc_.restart();
    ioc_.run_for(timeout_);
    if (!done) {
      drop();
      ioc_.restart();
      ioc_.run_for(std::chrono::seconds(1));
      throw std::runtime_error("client operation timed out");
    }
    if (ec) throw boost::system::system_error(ec);
  }

  std::chrono::milliseconds timeout_;
  asio::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_{ioc_};
};

// One plain HTTP GET; returns {status, body}.
inline std::pair<int, std::string> http_get(int port, const std::string& target) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.expires_after(std::chrono::seconds(10));
  http::response<http::string_body> res;
  beast::flat_buffer buf;
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "127.0.0.1");
  beast::error_code result;
  stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)),
                       [&](beast::error_code ec) {
                         if (ec) return void(result = ec);
                         http::async_write(stream, req, [&](beast::error_code ec, size_t) {
                           if (ec) return void(result = ec);
                           http::async_read(stream, buf, res, [&](beast::error_code ec, size_t) { result = ec; });
                         });
                       });
  ioc.run();
  if (result) throw boost::system::system_error(result);
  return {int(res.result_int()), res.body()};
}

}  // namespace evla::serve::testing
