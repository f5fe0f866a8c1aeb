// The openpi wire protocol, without the sockets: msgpack observation maps in,
// msgpack action replies and the metadata frame out, plus the checks that
// turn a client's arrays into an evla::Observation with a clear message when
// they do not fit.
//
// numpy arrays travel as openpi's msgpack_numpy maps
//   {"__ndarray__": true, "data": <bin>, "dtype": "<f4", "shape": [h, w, 3]}
// whose keys are msgpack bin in the Python reference (str is tolerated on
// input; output uses bin so openpi's own client decodes it). Only msgpack is
// ever parsed: ext types anywhere in a message are rejected.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "evla/evla.h"

namespace evla::serve {

// A client's input did not fit; the message names the key and what was wrong
// and never repeats the payload.
class ProtocolError : public std::runtime_error {
 public:
  explicit ProtocolError(const std::string& what) : std::runtime_error(what) {}
};

// Which observation keys hold what. A key with '/' also matches nested maps
// ("observation/image" finds obs["observation"]["image"] when there is no
// flat key of that name).
struct ObsKeys {
  std::vector<std::string> images = {"observation/image", "observation/wrist_image"};
  std::string state = "observation/state";
  std::string prompt = "prompt";
  std::string seed = "seed";  // optional in every observation
  std::string unnorm = "unnorm_key";  // optional: which dataset's action statistics
};

// What the server announces on connect (and Python's Policy.metadata).
struct Metadata {
  std::string model;
  std::string family;  // Model::family()
  int action_horizon = 0, action_dim = 0;
  int action_steps = 0;  // rows to execute before the next request (the model's n_action_steps)
  std::vector<std::string> image_keys;  // the first num_images of ObsKeys::images
  int image_size = 0;                   // the model's input; other sizes are resized
  std::string state_key;                // empty when the model takes no state
  int state_dim = 0;
  std::string prompt_key, seed_key;
  std::string unnorm_key_key;            // where a request names its dataset
  std::vector<std::string> unnorm_keys;  // the model's datasets (empty: one unnamed set)
  std::string unnorm_default;            // used when a request names none
  std::string plan_name;
  bool plan_dense = true;
  std::string plan_summary;  // one line, e.g. "tokens keep 32 after layer 2; cache every 2 steps"
  int workers = 1;
};
// Throws evla::Error when the model needs more images than `keys` names, or
// `unnorm_default` is not one of the model's datasets.
Metadata make_metadata(const Model& model, const Plan& plan, const ObsKeys& keys, int workers,
                       const std::string& unnorm_default = "");
std::string plan_summary(const Plan& plan);

// A borrowed numpy array: dtype as numpy's dtype.str ("|u1", "<f4", ...).
struct ArrayView {
  std::string dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t size = 0;  // bytes
};
// uint8 H×W×3 only; any H, W (the policy resizes to the model's input).
Image image_from_array(const std::string& key, const ArrayView& a);
// Any real or integer dtype, one value per state dimension (shape [n] or [1, n]).
std::vector<float> state_from_array(const std::string& key, const ArrayView& a, int state_dim);

// Limits on what the decoder accepts besides the frame size.
inline constexpr int kMaxImageSide = 8192;

// Parses one msgpack observation and checks it against `meta`.
Observation decode_observation(const void* data, size_t size, const Metadata& meta);

struct ReplyTiming {
  double infer_ms = 0;                   // Policy::infer on the worker
  double queue_ms = 0;                   // waiting for a free worker
  std::optional<double> prev_total_ms;   // previous request, receive to sent (openpi)
};
// {"actions": ndarray float32 [horizon, dim], "server_timing": {...},
//  "policy_timing": {vision_ms, projector_ms, llm_ms, action_head_ms, total_ms}}
std::string encode_reply(const ActionChunk& chunk, const ReplyTiming& t);
std::string encode_metadata(const Metadata& meta);

}  // namespace evla::serve
