// The server over real loopback sockets (ephemeral ports), driven by a small
// Beast client with deadlines.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "beast_client.h"
#include "serve/server.h"

using namespace evla;
using namespace evla::serve;
using namespace evla::serve::testing;

namespace {


TestObs tiny_obs(uint64_t seed = 3) {
  TestObs o;
  o.images = {{"observation/image", test_image(64, 64)}};
  o.seed = seed;
  return o;
}
TestObs fixture_obs() {
  TestObs o;
  o.images = {{"observation/image", test_image(28, 28, 1)}, {"observation/wrist_image", test_image(28, 28, 2)}};
  o.state = std::vector<float>{0.1f, -0.2f, 0.3f, 0.0f, 1.0f};
  o.seed = 11;
  return o;
}

std::vector<float> direct(const std::shared_ptr<const Model>& m, const TestObs& o) {
  Policy p(m, PolicyOptions{1});  // the server's workers run 1 thread each here
  return p.infer(o.to_observation()).actions;
}

// A server on an ephemeral loopback port whose log lines the test can read.
struct Live {
  std::mutex mu;
  std::vector<std::string> lines;
  std::unique_ptr<Server> server;

  explicit Live(std::shared_ptr<const Model> m, ServerOptions o = {}) {
    o.port = 0;
    o.threads_per_worker = 1;
    o.log = [this](const std::string& l) {
      std::lock_guard lock(mu);
      lines.push_back(l);
    };
    server = std::make_unique<Server>(std::move(m), Plan{}, std::move(o));
    server->start();
  }
  int port() const { return server->port(); }
  std::string log() {
    std::lock_guard lock(mu);
    std::string all;
    for (auto& l : lines) all += l + "\n";
    return all;
  }
  // Connection bookkeeping happens on the server thread; give it a moment.
  bool settles(int open) {
    for (int i = 0; i < 300; ++i) {
      if (server->stats().open_connections == uint64_t(open)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

Decoded connect(Client& c, int port, const std::string& auth = "") {
  c.connect(port, auth);
  bool text = true;
  std::string meta = c.read(&text);
  EXPECT_FALSE(text);
  return decode(meta);
}

TEST(ServeServer, RoundTripMatchesTheLibrary) {
  Live live(tiny());
  Client c;
  Decoded meta = connect(c, live.port());
  EXPECT_EQ(meta.get("model")->as<std::string>(), "evla-tiny-random");
  EXPECT_EQ(meta.get("action_horizon")->as<int>(), tiny()->action_horizon());
  EXPECT_EQ(meta.get("action_dim")->as<int>(), tiny()->action_dim());
  EXPECT_EQ(meta.get("image_keys")->as<std::vector<std::string>>(), std::vector<std::string>{"observation/image"});
  EXPECT_EQ(Decoded::find(*meta.get("plan"), "name")->as<std::string>(), "dense");

  TestObs o = tiny_obs();
  Decoded r = c.infer(o.pack());
  std::vector<int64_t> shape;
  EXPECT_EQ(reply_actions(r, &shape), direct(tiny(), o));  // bit-identical
  EXPECT_EQ(shape, (std::vector<int64_t>{tiny()->action_horizon(), tiny()->action_dim()}));
  EXPECT_GT(Decoded::find(*r.get("server_timing"), "infer_ms")->as<double>(), 0.0);
  EXPECT_EQ(Decoded::find(*r.get("server_timing"), "prev_total_ms"), nullptr);
  Decoded r2 = c.infer(o.pack());
  EXPECT_NE(Decoded::find(*r2.get("server_timing"), "prev_total_ms"), nullptr);
  c.close();
  EXPECT_TRUE(live.settles(0));
  EXPECT_EQ(live.server->stats().requests, 2u);
  EXPECT_EQ(live.server->stats().errors, 0u);
}

TEST(ServeServer, TwoImagesStateAndFullSizeFrames) {
  Live live(fixture());
  Client c;
  Decoded meta = connect(c, live.port());
  EXPECT_EQ(meta.get("state_dim")->as<int>(), 5);
  TestObs o = fixture_obs();
  EXPECT_EQ(reply_actions(c.infer(o.pack())), direct(fixture(), o));
  // Camera-sized frames are resized by the policy, as documented.
  o.images[0].second = test_image(160, 120, 5);
  o.images[1].second = test_image(64, 48, 6);
  EXPECT_EQ(reply_actions(c.infer(o.pack())), direct(fixture(), o));
}

TEST(ServeServer, HealthzAndOtherPaths) {
  ServerOptions opts;
  opts.api_key = "k";  // the health check stays open for load balancers
  Live live(tiny(), opts);
  auto [status, body] = http_get(live.port(), "/healthz");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body, "OK\n");
  EXPECT_EQ(http_get(live.port(), "/nope").first, 404);
}

TEST(ServeServer, ApiKey) {
  ServerOptions opts;
  opts.api_key = "s3cret-key";
  Live live(tiny(), opts);
  Client good;
  connect(good, live.port(), "Api-Key s3cret-key");
  EXPECT_EQ(reply_actions(good.infer(tiny_obs().pack())).size(), size_t(tiny()->action_horizon() * tiny()->action_dim()));

  for (std::string auth : {"Api-Key wrong-key", "", "Bearer s3cret-key", "Api-Key s3cret-key2"}) {
    Client bad;
    try {
      bad.connect(live.port(), auth);
      ADD_FAILURE() << "handshake accepted with '" << auth << "'";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), websocket::error::upgrade_declined) << e.code().message();
    }
  }
  EXPECT_NE(live.log().find("refused: missing or wrong API key"), std::string::npos);
  EXPECT_EQ(live.log().find("wrong-key"), std::string::npos);
  // The authorised client was not disturbed.
  EXPECT_NO_THROW(good.infer(tiny_obs(4).pack()));
}

struct BadCase {
  std::string name, payload, expect;
  bool binary = true;
};

TEST(ServeServer, BadInputGetsErrorFrameAnd1011AndOthersKeepGoing) {
  ServerOptions opts;
  opts.max_message_bytes = 64 * 1024;
  Live live(fixture(), opts);
  Client bystander;  // stays connected throughout
  connect(bystander, live.port());

  TestObs wrong_dtype = fixture_obs(), wrong_shape = fixture_obs(), missing = fixture_obs(), bad_state = fixture_obs();
  wrong_dtype.image_dtype = "<f4";
  wrong_shape.images[1].second = Image();  // shape (0, 0, 3)
  missing.prompt.reset();
  bad_state.state = std::vector<float>{1, 2, 3};
  msgpack::sbuffer ext;
  Packer pk(ext);
  pk.pack_map(1);
  pk.pack(std::string("prompt"));
  pk.pack_ext(3, 9);
  pk.pack_ext_body("abc", 3);
  TestObs long_prompt = fixture_obs();  // bounded by the model's maximum, not by quadratic time
  long_prompt.prompt = std::string();
  for (int i = 0; i < 3000; ++i) *long_prompt.prompt += "pick ";
  TestObs big = fixture_obs();
  big.images[0].second = test_image(200, 200);  // 120 kB > 64 kB

  std::vector<BadCase> cases = {
      {"not msgpack", "\xc1 is never used in msgpack", "not a valid msgpack"},
      {"msgpack int", "this is not msgpack", "trailing bytes"},  // 't' is a fixint
      {"wrong dtype", wrong_dtype.pack(), "images must be uint8"},
      {"wrong shape", wrong_shape.pack(), "image side"},
      {"missing key", missing.pack(), "missing key 'prompt'"},
      {"bad state", bad_state.pack(), "expected 5 values"},
      {"ext type", std::string(ext.data(), ext.size()), "ext types"},
      {"oversized", big.pack(), "larger than the limit"},
      {"prompt too long", long_prompt.pack(), "more than the model's llm.max_position_embeddings"},
      {"text frame", "{\"prompt\": \"hi\"}", "expected a binary msgpack frame", false},
  };
  for (const auto& bc : cases) {
    SCOPED_TRACE(bc.name);
    Client c;
    connect(c, live.port());
    c.write(bc.payload, bc.binary);
    std::string text;
    EXPECT_EQ(c.read_until_close(&text), 1011);
    EXPECT_NE(text.find(bc.expect), std::string::npos) << text;
  }
  EXPECT_NO_THROW(bystander.infer(fixture_obs().pack()));
  EXPECT_EQ(live.server->stats().errors, cases.size());
  Client after;
  connect(after, live.port());
  EXPECT_EQ(reply_actions(after.infer(fixture_obs().pack())), direct(fixture(), fixture_obs()));
}

TEST(ServeServer, LogsNeverHoldThePayload) {
  Live live(tiny());
  Client c;
  connect(c, live.port());
  TestObs o = tiny_obs();
  o.prompt = "SECRET-PROMPT-1234";
  c.infer(o.pack());
  o.image_dtype = "<f4";
  c.write(o.pack());
  EXPECT_EQ(c.read_until_close(), 1011);
  EXPECT_TRUE(live.settles(0));
  std::string log = live.log();
  EXPECT_NE(log.find("images must be uint8"), std::string::npos) << log;
  EXPECT_EQ(log.find("SECRET"), std::string::npos) << log;
}

TEST(ServeServer, VanishingAndStallingClientsDoNotStallOthers) {
  ServerOptions opts;
  opts.workers = 1;
  Live live(tiny(), opts);
  // 1: sends a request and vanishes before the reply.
  Client gone;
  connect(gone, live.port());
  gone.write(tiny_obs().pack());
  gone.drop();
  // 2: half an HTTP request, then silence.
  asio::io_context ioc;
  tcp::socket half(ioc);
  half.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(live.port())));
  asio::write(half, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\n")));
  // 3: connected, never sends anything.
  Client idle;
  connect(idle, live.port());
  // 4: TCP connect and immediate close.
  { tcp::socket s(ioc); s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(live.port()))); }

  Client c(std::chrono::seconds(10));
  connect(c, live.port());
  for (uint64_t seed = 0; seed < 3; ++seed) EXPECT_NO_THROW(c.infer(tiny_obs(seed).pack()));
  c.close();
  idle.close();
  half.close();
  EXPECT_TRUE(live.settles(0));
  EXPECT_NE(live.log().find("dropped"), std::string::npos) << live.log();
}

TEST(ServeServer, ConcurrentClientsGetTheirOwnAnswers) {
  ServerOptions opts;
  opts.workers = 2;
  Live live(tiny(), opts);
  const int clients = 4, requests = 5;
  std::vector<std::vector<float>> expected;
  for (int i = 0; i < clients * requests; ++i) expected.push_back(direct(tiny(), tiny_obs(uint64_t(i))));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      try {
        Client c;
        connect(c, live.port());
        for (int r = 0; r < requests; ++r) {
          int i = t * requests + r;
          ok += reply_actions(c.infer(tiny_obs(uint64_t(i)).pack())) == expected[size_t(i)];
        }
        c.close();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "client " << t << ": " << e.what();
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), clients * requests);
  EXPECT_EQ(live.server->stats().requests, uint64_t(clients * requests));
}

TEST(ServeServer, StopClosesClientsWithGoingAway) {
  Live live(tiny());
  Client idle, busy;
  connect(idle, live.port());
  connect(busy, live.port());
  busy.write(tiny_obs().pack());  // in flight (or queued) when stop() comes
  auto t0 = std::chrono::steady_clock::now();
  std::thread stopper([&] { live.server->stop(); });
  EXPECT_EQ(idle.read_until_close(), 1001);
  EXPECT_EQ(busy.read_until_close(), 1001);  // after its reply, if it was being served
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_THROW(Client().connect(live.port()), std::exception);
}

TEST(ServeServer, PortInUseIsAClearError) {
  Live live(tiny());
  ServerOptions opts;
  opts.port = live.port();
  Server second(tiny(), Plan{}, opts);
  try {
    second.start();
    FAIL() << "bound a taken port";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1"), std::string::npos);
  }
}

}  // namespace
