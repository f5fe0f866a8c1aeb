// Helpers for the serve tests: msgpack observation builders and reply readers.
#pragma once
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <cstring>

#include <msgpack.hpp>

#include "evla/evla.h"

namespace evla::serve::testing {

using Packer = msgpack::packer<msgpack::sbuffer>;

inline std::string model_dir(const char* name) {
  return std::string(EVLA_SOURCE_DIR) + "/" + name;
}

// A deterministic test image.
// The two models the serve tests use: one image, no state; two images + state.
inline std::shared_ptr<const Model> tiny() {
  static auto m = Model::load(model_dir("models/evla-tiny-random"));
  return m;
}
inline std::shared_ptr<const Model> fixture() {
  static auto m = Model::load(model_dir("tests/fixtures/single_mha_nocfg"));
  return m;
}

inline Image test_image(int w, int h, int salt = 0) {
  Image img(w, h);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i * 7 + salt * 31) % 251);
  return img;
}

inline void pack_text(Packer& pk, const std::string& s, bool bin) {
  if (bin) {
    pk.pack_bin(uint32_t(s.size()));
    pk.pack_bin_body(s.data(), uint32_t(s.size()));
  } else {
    pk.pack_str(uint32_t(s.size()));
    pk.pack_str_body(s.data(), uint32_t(s.size()));
  }
}

// openpi msgpack_numpy array map; bin keys like numpy's packer unless str_keys.
inline void pack_ndarray(Packer& pk, const std::string& dtype, const std::vector<int64_t>& shape,
                         const void* data, size_t bytes, bool str_keys = false) {
  pk.pack_map(4);
  pack_text(pk, "__ndarray__", !str_keys);
  pk.pack_true();
  pack_text(pk, "data", !str_keys);
  pk.pack_bin(uint32_t(bytes));
  pk.pack_bin_body(static_cast<const char*>(data), uint32_t(bytes));
  pack_text(pk, "dtype", !str_keys);
  pk.pack(dtype);
  pack_text(pk, "shape", !str_keys);
  pk.pack_array(uint32_t(shape.size()));
  for (auto d : shape) pk.pack(d);
}

struct TestObs {
  std::vector<std::pair<std::string, Image>> images;
  std::optional<std::vector<float>> state;
  std::string state_key = "observation/state";
  std::optional<std::string> prompt = "put the eggplant in the basket";
  std::optional<uint64_t> seed;
  std::optional<std::string> unnorm_key;
  std::string image_dtype = "|u1";
  bool str_keys = false;

  std::string pack() const {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(uint32_t(images.size() + bool(state) + bool(prompt) + bool(seed) + bool(unnorm_key)));
    for (const auto& [key, img] : images) {
      pk.pack(key);
      pack_ndarray(pk, image_dtype, {img.height, img.width, 3}, img.rgb.data(), img.rgb.size(), str_keys);
    }
    if (state) {
      pk.pack(state_key);
      pack_ndarray(pk, "<f4", {int64_t(state->size())}, state->data(), state->size() * 4, str_keys);
    }
    if (prompt) {
      pk.pack(std::string("prompt"));
      pk.pack(*prompt);
    }
    if (seed) {
      pk.pack(std::string("seed"));
      pk.pack(*seed);
    }
    if (unnorm_key) {
      pk.pack(std::string("unnorm_key"));
      pk.pack(*unnorm_key);
    }
    return std::string(buf.data(), buf.size());
  }
  Observation to_observation() const {
    Observation o;
    for (const auto& im : images) o.images.push_back(im.second);
    if (state) o.state = *state;
    o.instruction = prompt.value_or("");
    o.seed = seed.value_or(0);
    return o;
  }
};

// A decoded reply or metadata frame.
struct Decoded {
  msgpack::object_handle oh;
  const msgpack::object& root() const { return oh.get(); }
  const msgpack::object* get(const std::string& key) const { return find(root(), key); }
  static const msgpack::object* find(const msgpack::object& m, const std::string& key) {
    if (m.type != msgpack::type::MAP) return nullptr;
    for (uint32_t i = 0; i < m.via.map.size; ++i) {
      const auto& k = m.via.map.ptr[i].key;
      std::string name = k.type == msgpack::type::STR   ? std::string(k.via.str.ptr, k.via.str.size)
                         : k.type == msgpack::type::BIN ? std::string(k.via.bin.ptr, k.via.bin.size)
                                                        : std::string();
      if (name == key) return &m.via.map.ptr[i].val;
    }
    return nullptr;
  }
};
inline Decoded decode(const std::string& bytes) { return Decoded{msgpack::unpack(bytes.data(), bytes.size())}; }

// Pulls float32 actions out of a reply's "actions" ndarray map.
inline std::vector<float> reply_actions(const Decoded& d, std::vector<int64_t>* shape = nullptr) {
  const auto* a = d.get("actions");
  if (!a) throw std::runtime_error("reply has no actions");
  const auto* data = Decoded::find(*a, "data");
  const auto* dtype = Decoded::find(*a, "dtype");
  const auto* shp = Decoded::find(*a, "shape");
  if (!data || !dtype || !shp || dtype->as<std::string>() != "<f4") throw std::runtime_error("bad actions map");
  if (shape) {
    shape->clear();
    for (uint32_t i = 0; i < shp->via.array.size; ++i) shape->push_back(shp->via.array.ptr[i].as<int64_t>());
  }
  std::vector<float> out(data->via.bin.size / 4);
  std::memcpy(out.data(), data->via.bin.ptr, out.size() * 4);
  return out;
}

}  // namespace evla::serve::testing
