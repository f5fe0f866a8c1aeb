// The wire codec and the worker pool, without sockets.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <chrono>
#include <thread>

#include "model/model_impl.h"
#include "serve/protocol.h"
#include "serve/server.h"
#include "serve/worker_pool.h"
#include "serve_test_util.h"

using namespace evla;
using namespace evla::serve;
using namespace evla::serve::testing;

namespace {


TestObs tiny_obs() {
  TestObs o;
  o.images = {{"observation/image", test_image(64, 64)}};
  return o;
}
TestObs fixture_obs() {
  TestObs o;
  o.images = {{"observation/image", test_image(28, 28, 1)}, {"observation/wrist_image", test_image(28, 28, 2)}};
  o.state = std::vector<float>{0.1f, -0.2f, 0.3f, 0.0f, 1.0f};
  return o;
}

std::string decode_error(const std::string& bytes, const Metadata& meta) {
  try {
    decode_observation(bytes.data(), bytes.size(), meta);
  } catch (const ProtocolError& e) {
    return e.what();
  }
  return "";
}

TEST(ServeProtocol, MetadataNamesTheKeysTheModelUses) {
  Metadata t = make_metadata(*tiny(), Plan{}, ObsKeys{}, 2);
  EXPECT_EQ(t.image_keys, std::vector<std::string>{"observation/image"});
  EXPECT_EQ(t.state_key, "");
  EXPECT_EQ(t.action_horizon, tiny()->action_horizon());
  EXPECT_EQ(t.plan_summary, "dense");
  Metadata f = make_metadata(*fixture(), Plan{}, ObsKeys{}, 1);
  EXPECT_EQ(f.image_keys, (std::vector<std::string>{"observation/image", "observation/wrist_image"}));
  EXPECT_EQ(f.state_key, "observation/state");
  EXPECT_EQ(f.state_dim, 5);
  ObsKeys one;
  one.images = {"cam"};
  EXPECT_THROW(make_metadata(*fixture(), Plan{}, one, 1), Error);

  Decoded d = decode(encode_metadata(f));
  EXPECT_EQ(d.get("model")->as<std::string>(), "single_mha_nocfg");
  EXPECT_EQ(d.get("action_dim")->as<int>(), 4);
  EXPECT_EQ(d.get("action_steps")->as<int>(), fixture()->action_steps());
  EXPECT_EQ(d.get("image_keys")->as<std::vector<std::string>>().size(), 2u);
  EXPECT_TRUE(Decoded::find(*d.get("plan"), "dense")->as<bool>());
}

// A copy of the tiny model whose config holds two datasets' statistics.
std::shared_ptr<const Model> two_datasets() {
  static std::shared_ptr<const Model> m = [] {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("evla_serve_two_datasets_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::copy(model_dir("models/evla-tiny-random"), dir);
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    nlohmann::json one = cfg["action_normalization"];
    one.erase("gripper_index");
    cfg["action_normalization"] = {{"gripper_index", 6}, {"datasets", {{"bridge_orig", one}, {"fractal", one}}}};
    std::ofstream(dir / "config.json") << cfg.dump();
    auto model = Model::load(dir.string());
    fs::remove_all(dir);
    return model;
  }();
  return m;
}

TEST(ServeProtocol, UnnormKeyChoosesTheDatasetAndIsChecked) {
  Metadata m = make_metadata(*two_datasets(), Plan{}, ObsKeys{}, 1);
  EXPECT_EQ(m.unnorm_keys, (std::vector<std::string>{"bridge_orig", "fractal"}));
  Decoded d = decode(encode_metadata(m));
  EXPECT_EQ(d.get("unnorm_keys")->as<std::vector<std::string>>().size(), 2u);
  TestObs o = tiny_obs();
  EXPECT_NE(decode_error(o.pack(), m).find("unnorm_key: required: the model has statistics for 2 datasets"),
            std::string::npos);
  o.unnorm_key = "fractal";
  const std::string bytes = o.pack();
  EXPECT_EQ(decode_observation(bytes.data(), bytes.size(), m).unnorm_key, "fractal");
  o.unnorm_key = "nope";
  EXPECT_NE(decode_error(o.pack(), m).find("not one of the model's datasets"), std::string::npos);
  // A server default applies to requests that name none.
  Metadata d2 = make_metadata(*two_datasets(), Plan{}, ObsKeys{}, 1, "bridge_orig");
  o.unnorm_key.reset();
  const std::string plain = o.pack();
  EXPECT_EQ(decode_observation(plain.data(), plain.size(), d2).unnorm_key, "bridge_orig");
  EXPECT_THROW(make_metadata(*two_datasets(), Plan{}, ObsKeys{}, 1, "nope"), Error);
  EXPECT_THROW(make_metadata(*tiny(), Plan{}, ObsKeys{}, 1, "bridge_orig"), Error);
  // The tiny model's one unnamed set takes no key.
  Metadata t = make_metadata(*tiny(), Plan{}, ObsKeys{}, 1);
  EXPECT_TRUE(t.unnorm_keys.empty());
  o.unnorm_key = "fractal";
  EXPECT_NE(decode_error(o.pack(), t).find("not one of the model's datasets"), std::string::npos);
}

TEST(ServeProtocol, DecodesBothModelShapes) {
  Metadata t = make_metadata(*tiny(), Plan{}, ObsKeys{}, 1);
  TestObs to = tiny_obs();
  to.seed = 42;
  std::string tb = to.pack();
  Observation o = decode_observation(tb.data(), tb.size(), t);
  ASSERT_EQ(o.images.size(), 1u);
  EXPECT_EQ(o.images[0].rgb, to.images[0].second.rgb);
  EXPECT_EQ(o.instruction, "put the eggplant in the basket");
  EXPECT_EQ(o.seed, 42u);
  EXPECT_TRUE(o.state.empty());

  Metadata f = make_metadata(*fixture(), Plan{}, ObsKeys{}, 1);
  TestObs fo = fixture_obs();
  fo.str_keys = true;  // str keys in the ndarray maps are tolerated
  std::string bytes = fo.pack();
  o = decode_observation(bytes.data(), bytes.size(), f);
  ASSERT_EQ(o.images.size(), 2u);
  EXPECT_EQ(o.images[1].rgb, fo.images[1].second.rgb);
  EXPECT_EQ(o.state, *fo.state);
}

TEST(ServeProtocol, AcceptsNestedKeysStateListsAndNumpyScalarSeeds) {
  Metadata f = make_metadata(*fixture(), Plan{}, ObsKeys{}, 1);
  msgpack::sbuffer buf;
  Packer pk(buf);
  Image a = test_image(40, 30), b = test_image(28, 28);
  pk.pack_map(3);
  pk.pack(std::string("observation"));  // {"observation": {"image":…, "wrist_image":…, "state": [..]}}
  pk.pack_map(3);
  pk.pack(std::string("image"));
  pack_ndarray(pk, "|u1", {30, 40, 3}, a.rgb.data(), a.rgb.size());
  pk.pack(std::string("wrist_image"));
  pack_ndarray(pk, "uint8", {28, 28, 3}, b.rgb.data(), b.rgb.size());
  pk.pack(std::string("state"));
  pk.pack(std::vector<double>{1, 2, 3, 4, 5});
  pk.pack(std::string("prompt"));
  pk.pack(std::string("pick up the can"));
  pk.pack(std::string("seed"));
  pk.pack_map(3);
  pack_text(pk, "__npgeneric__", true);
  pk.pack_true();
  pack_text(pk, "data", true);
  pk.pack(7);
  pack_text(pk, "dtype", true);
  pk.pack(std::string("<i8"));
  Observation o = decode_observation(buf.data(), buf.size(), f);
  EXPECT_EQ(o.images[0].width, 40);  // any size: the policy resizes
  EXPECT_EQ(o.images[0].height, 30);
  EXPECT_EQ(o.state, (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ(o.seed, 7u);
}

TEST(ServeProtocol, StateDtypesConvert) {
  const double d[3] = {0.5, -1.5, 2};
  const int64_t i[3] = {1, -2, 3};
  EXPECT_EQ(state_from_array("s", ArrayView{"<f8", {3}, reinterpret_cast<const uint8_t*>(d), 24}, 3),
            (std::vector<float>{0.5f, -1.5f, 2.f}));
  EXPECT_EQ(state_from_array("s", ArrayView{"<i8", {1, 3}, reinterpret_cast<const uint8_t*>(i), 24}, 3),
            (std::vector<float>{1.f, -2.f, 3.f}));
  EXPECT_THROW(state_from_array("s", ArrayView{"<f8", {3}, reinterpret_cast<const uint8_t*>(d), 24}, 4),
               ProtocolError);
  const float nan[1] = {std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(state_from_array("s", ArrayView{"<f4", {1}, reinterpret_cast<const uint8_t*>(nan), 4}, 1),
               ProtocolError);
  // Finite as float64 but beyond float32: refused by name, never turned into inf.
  const double big[1] = {1e300};
  try {
    state_from_array("s", ArrayView{"<f8", {1}, reinterpret_cast<const uint8_t*>(big), 8}, 1);
    ADD_FAILURE() << "1e300 was accepted";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("outside float32's range"), std::string::npos) << e.what();
  }
}

TEST(ServeProtocol, BadInputsGetClearMessages) {
  Metadata f = make_metadata(*fixture(), Plan{}, ObsKeys{}, 1);
  auto expect = [&](const TestObs& o, const std::string& part) {
    std::string msg = decode_error(o.pack(), f);
    EXPECT_NE(msg.find(part), std::string::npos) << "got: '" << msg << "', wanted: " << part;
  };
  TestObs o = fixture_obs();
  o.images.pop_back();
  expect(o, "missing key 'observation/wrist_image'");
  o = fixture_obs();
  o.state.reset();
  expect(o, "missing key 'observation/state'");
  o = fixture_obs();
  o.prompt.reset();
  expect(o, "missing key 'prompt'");
  o = fixture_obs();
  o.state = std::vector<float>{1, 2};
  expect(o, "observation/state: expected 5 values");
  o = fixture_obs();
  o.image_dtype = "<f4";
  expect(o, "images must be uint8");
  o = fixture_obs();
  o.image_dtype = "object";
  expect(o, "unsupported dtype");

  // Shape / data mismatch, channels first, grayscale.
  Image img = test_image(28, 28);
  auto pack_image = [&](const std::string& dtype, std::vector<int64_t> shape, size_t bytes) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(1);
    pk.pack(std::string("observation/image"));
    pack_ndarray(pk, dtype, shape, img.rgb.data(), bytes);
    return std::string(buf.data(), buf.size());
  };
  EXPECT_NE(decode_error(pack_image("|u1", {28, 28, 3}, 100), f).find("shape needs 2352 bytes but data has 100"),
            std::string::npos);
  EXPECT_NE(decode_error(pack_image("|u1", {3, 28, 28}, img.rgb.size()), f).find("H×W×3"), std::string::npos);
  EXPECT_NE(decode_error(pack_image("|u1", {28, 84}, img.rgb.size()), f).find("H×W×3"), std::string::npos);
  EXPECT_NE(decode_error(pack_image("|u1", {1u << 31, 1u << 31, 3}, img.rgb.size()), f).find("shape"),
            std::string::npos);

  EXPECT_NE(decode_error("\xc1 not msgpack", f).find("not a valid msgpack"), std::string::npos);
  EXPECT_NE(decode_error(std::string("\x93\x01\x02\x03", 4), f).find("must be a msgpack map"), std::string::npos);
  std::string ok = fixture_obs().pack();
  EXPECT_NE(decode_error(ok + "x", f).find("trailing bytes"), std::string::npos);
  EXPECT_NE(decode_error(ok.substr(0, ok.size() / 2), f).find("not a valid msgpack"), std::string::npos);
}

TEST(ServeProtocol, ExtTypesAreRejectedAnywhere) {
  Metadata t = make_metadata(*tiny(), Plan{}, ObsKeys{}, 1);
  msgpack::sbuffer buf;
  Packer pk(buf);
  pk.pack_map(2);
  pk.pack(std::string("prompt"));
  pk.pack(std::string("x"));
  pk.pack(std::string("extra"));  // not even a key the server uses
  pk.pack_ext(4, 1);
  pk.pack_ext_body("abcd", 4);
  EXPECT_NE(decode_error(std::string(buf.data(), buf.size()), t).find("ext types"), std::string::npos);
}

TEST(ServeProtocol, DeepNestingIsRefused) {
  Metadata t = make_metadata(*tiny(), Plan{}, ObsKeys{}, 1);
  std::string deep(100000, '\x91');  // [[[[...]]]]
  deep += '\xc0';
  EXPECT_NE(decode_error(deep, t).find("not a valid msgpack"), std::string::npos);
  std::string huge_array("\xdd\xff\xff\xff\xff", 5);  // claims 4 billion elements
  EXPECT_NE(decode_error(huge_array, t).find("not a valid msgpack"), std::string::npos);
}

TEST(ServeProtocol, ReplyIsOpenpiShaped) {
  ActionChunk c;
  c.horizon = 2;
  c.dim = 3;
  c.actions = {1, 2, 3, 4, 5, 6};
  c.timing.total_ms = 4.5;
  Decoded d = decode(encode_reply(c, ReplyTiming{3.0, 0.5, std::nullopt}));
  std::vector<int64_t> shape;
  EXPECT_EQ(reply_actions(d, &shape), c.actions);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3}));
  // numpy's packer writes bin keys; openpi's client looks them up as bytes.
  const auto& amap = d.get("actions")->via.map;
  for (uint32_t i = 0; i < amap.size; ++i) EXPECT_EQ(amap.ptr[i].key.type, msgpack::type::BIN);
  const auto* st = d.get("server_timing");
  EXPECT_DOUBLE_EQ(Decoded::find(*st, "infer_ms")->as<double>(), 3.0);
  EXPECT_EQ(Decoded::find(*st, "prev_total_ms"), nullptr);  // absent on the first reply, as in openpi
  EXPECT_DOUBLE_EQ(Decoded::find(*d.get("policy_timing"), "total_ms")->as<double>(), 4.5);
  Decoded d2 = decode(encode_reply(c, ReplyTiming{3.0, 0.5, 9.0}));
  EXPECT_DOUBLE_EQ(Decoded::find(*d2.get("server_timing"), "prev_total_ms")->as<double>(), 9.0);
}

TEST(ServeProtocol, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("Api-Key abc", "Api-Key abc"));
  EXPECT_FALSE(constant_time_equal("Api-Key abd", "Api-Key abc"));
  EXPECT_FALSE(constant_time_equal("Api-Key ab", "Api-Key abc"));
  EXPECT_FALSE(constant_time_equal("", "Api-Key abc"));
  EXPECT_FALSE(constant_time_equal(std::string("Api-Key abc\0", 12), "Api-Key abc"));
}

TEST(ServeWorkerPool, RunsEveryJobOnceAndMatchesADirectPolicy) {
  WorkerPool pool(tiny(), Plan{}, 2, 1, 64);
  TestObs to = tiny_obs();
  Observation obs = to.to_observation();
  Policy direct(tiny(), PolicyOptions{1});
  std::vector<float> expected = direct.infer(obs).actions;

  std::atomic<int> done{0}, same{0};
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(pool.submit(obs, [&](InferResult r) {
      same += r.error.empty() && r.chunk.actions == expected;
      ++done;
    }));
  for (int i = 0; i < 500 && done < 6; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(done.load(), 6);
  EXPECT_EQ(same.load(), 6);
}

// Two workers on an int8 plan with a compacted MLP hold one planned model:
// its weights were derived once, and both hold that very copy.
TEST(ServeWorkerPool, WorkersShareOnePlannedModel) {
  auto model = Model::load(model_dir("models/evla-tiny-random"));
  const Plan plan = Plan::from_json(R"({"evla_plan": 1, "llm": {"num_layers": 4, "int8_layers": [1, 2, 3],
    "intermediate_size": 344, "mlp_channels": {"0": [1, 2, 3, 100, 300]}}})", "int8");
  WorkerPool pool(model, plan, 2, 1, 8);
  EXPECT_EQ(model->impl().derivations(), 1);
  const std::shared_ptr<const PlannedModel> held = model->impl().planned(plan);
  EXPECT_EQ(held.use_count(), 3);  // the two workers' and this one
  EXPECT_GT(held->derived->count(), 0u);
  EXPECT_EQ(model->impl().derivations(), 1);
}

TEST(ServeWorkerPool, FullQueueRefusesAndStopAnswersTheQueued) {
  WorkerPool pool(tiny(), Plan{}, 1, 1, 2);
  Observation obs = tiny_obs().to_observation();
  std::atomic<int> answered{0};
  int accepted = 0;
  for (int i = 0; i < 20; ++i) accepted += pool.submit(obs, [&](InferResult) { ++answered; });
  EXPECT_LT(accepted, 20);  // 1 running + 2 queued at most while submitting quickly
  pool.stop();
  EXPECT_EQ(answered.load(), accepted);  // ran or answered "shutting down"
  EXPECT_FALSE(pool.submit(obs, [](InferResult) {}));
}

// A request with a long prompt grows the worker's buffers; they are freed
// after it, and a usual request afterwards needs no more than before.
TEST(ServeWorkerPool, ALongPromptsMemoryIsReturnedAfterTheRequest) {
  WorkerPool pool(tiny(), Plan{}, 1, 1, 4);
  Observation usual = tiny_obs().to_observation(), long_prompt = usual;
  long_prompt.instruction.clear();
  for (int i = 0; i < 300; ++i) long_prompt.instruction += "put the eggplant in the basket ";
  auto run = [&](const Observation& obs) {
    std::atomic<bool> got{false};
    InferResult out;
    pool.submit(obs, [&](InferResult r) {
      out = std::move(r);
      got = true;
    });
    for (int i = 0; i < 1000 && !got; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_TRUE(out.error.empty()) << out.error;
    return out;
  };
  const InferResult before = run(usual);
  const InferResult after_long = run(long_prompt);
  const InferResult after = run(usual);
  std::printf("worker scratch: usual %lld B, after the long prompt %lld B, then %lld B\n",
              (long long)before.scratch_bytes, (long long)after_long.scratch_bytes, (long long)after.scratch_bytes);
  EXPECT_GT(before.scratch_bytes, 0);
  EXPECT_EQ(after_long.scratch_bytes, 0);  // released
  EXPECT_LE(after.scratch_bytes, before.scratch_bytes);
  EXPECT_EQ(after.chunk.actions, before.chunk.actions);
}

TEST(ServeWorkerPool, PolicyErrorsComeBackAsText) {
  WorkerPool pool(fixture(), Plan{}, 1, 1, 4);
  Observation obs = fixture_obs().to_observation();
  obs.state.pop_back();  // the policy itself rejects it
  std::atomic<bool> got{false};
  std::string error;
  pool.submit(obs, [&](InferResult r) {
    error = r.error;
    got = true;
  });
  for (int i = 0; i < 500 && !got; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(error.find("state"), std::string::npos) << error;
}

}  // namespace
