#include "serve/protocol.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <msgpack.hpp>

namespace evla::serve {
namespace {

// A float64 beyond float32's range would turn into inf (undefined behaviour in C++).
float to_float(double v, const std::string& key, size_t i) {
  if (!std::isfinite(v)) throw ProtocolError(fmt::format("{}: value {} is not finite", key, i));
  if (std::fabs(v) > double(std::numeric_limits<float>::max()))
    throw ProtocolError(fmt::format("{}: value {} ({}) is outside float32's range", key, i, v));
  return float(v);
}

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

// Client-chosen text quoted in an error (a dtype, a key): printable, short.
std::string quote(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 24)) out += (c >= 32 && c < 127) ? c : '?';
  return "'" + out + (s.size() > 24 ? "...'" : "'");
}

struct DType {
  char kind;  // 'u', 'i', 'f', 'b'
  int size;   // bytes
};

// numpy's dtype.str ("<f4", "|u1", "=i8") or a plain name ("float32").
DType parse_dtype(const std::string& key, const std::string& s) {
  static const std::pair<const char*, DType> names[] = {
      {"uint8", {'u', 1}},   {"uint16", {'u', 2}}, {"uint32", {'u', 4}}, {"uint64", {'u', 8}},
      {"int8", {'i', 1}},    {"int16", {'i', 2}},  {"int32", {'i', 4}},  {"int64", {'i', 8}},
      {"float32", {'f', 4}}, {"float64", {'f', 8}}, {"bool", {'b', 1}}};
  for (const auto& [n, d] : names)
    if (s == n) return d;
  std::string_view v = s;
  char order = '|';
  if (!v.empty() && std::strchr("<>|=", v[0])) order = v[0], v.remove_prefix(1);
  if (v.size() == 2 && std::strchr("uifb", v[0]) && std::strchr("1248", v[1])) {
    DType d{v[0], v[1] - '0'};
    bool ok = (d.kind == 'b') ? d.size == 1 : (d.kind != 'f' || d.size >= 4);
    if (ok && order == '>' && d.size > 1)
      throw ProtocolError(key + ": big-endian dtype " + quote(s) + " is not supported; send little-endian");
    if (ok) return d;
  }
  throw ProtocolError(key + ": unsupported dtype " + quote(s));
}

// Number of elements, checked against the byte size without overflowing.
size_t checked_count(const std::string& key, const ArrayView& a, int itemsize) {
  size_t n = 1;
  bool overflow = false;
  for (int64_t d : a.shape) {
    if (d < 0) throw ProtocolError(key + ": bad shape");
    overflow |= __builtin_mul_overflow(n, size_t(d), &n);
  }
  size_t bytes = 0;
  overflow |= __builtin_mul_overflow(n, size_t(itemsize), &bytes);
  if (overflow || bytes != a.size)
    throw ProtocolError(overflow ? key + ": shape is too large"
                                 : fmt::format("{}: shape needs {} bytes but data has {}", key, bytes, a.size));
  return n;
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("({}{})", fmt::join(s, ", "), s.size() == 1 ? "," : "");
}

bool key_is(const msgpack::object& k, std::string_view name) {
  if (k.type == msgpack::type::STR) return std::string_view(k.via.str.ptr, k.via.str.size) == name;
  if (k.type == msgpack::type::BIN) return std::string_view(k.via.bin.ptr, k.via.bin.size) == name;
  return false;
}

const msgpack::object* find_key(const msgpack::object& map, std::string_view name) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i)
    if (key_is(map.via.map.ptr[i].key, name)) return &map.via.map.ptr[i].val;
  return nullptr;
}

// Flat key first, then "a/b" as obj["a"]["b"] (openpi's nested observations).
const msgpack::object* lookup(const msgpack::object& root, std::string_view path) {
  if (const auto* v = find_key(root, path)) return v;
  for (size_t p = path.find('/'); p != std::string_view::npos; p = path.find('/', p + 1))
    if (const auto* sub = find_key(root, path.substr(0, p)); sub && sub->type == msgpack::type::MAP)
      if (const auto* v = lookup(*sub, path.substr(p + 1))) return v;
  return nullptr;
}

bool is_tagged(const msgpack::object& o, std::string_view tag) {
  const auto* t = find_key(o, tag);
  return t && t->type == msgpack::type::BOOLEAN && t->via.boolean;
}

std::string as_text(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return std::string(o.via.str.ptr, o.via.str.size);
  if (o.type == msgpack::type::BIN) return std::string(o.via.bin.ptr, o.via.bin.size);
  throw ProtocolError("expected a string");
}

// An openpi msgpack_numpy array map, or nullopt if `o` is something else.
std::optional<ArrayView> as_array(const std::string& key, const msgpack::object& o) {
  if (o.type != msgpack::type::MAP || !is_tagged(o, "__ndarray__")) return std::nullopt;
  const auto* data = find_key(o, "data");
  const auto* dtype = find_key(o, "dtype");
  const auto* shape = find_key(o, "shape");
  if (!data || !dtype || !shape) throw ProtocolError(key + ": numpy array map lacks data, dtype or shape");
  if (data->type != msgpack::type::BIN) throw ProtocolError(key + ": numpy array data must be bytes");
  if (dtype->type != msgpack::type::STR && dtype->type != msgpack::type::BIN)
    throw ProtocolError(key + ": numpy array dtype must be a string");
  if (shape->type != msgpack::type::ARRAY) throw ProtocolError(key + ": numpy array shape must be a list");
  ArrayView a;
  a.dtype = as_text(*dtype).substr(0, 64);
  for (uint32_t i = 0; i < shape->via.array.size; ++i) {
    const auto& d = shape->via.array.ptr[i];
    if (d.type != msgpack::type::POSITIVE_INTEGER) throw ProtocolError(key + ": bad shape");
    a.shape.push_back(int64_t(std::min<uint64_t>(d.via.u64, uint64_t(1) << 40)));
  }
  a.data = reinterpret_cast<const uint8_t*>(data->via.bin.ptr);
  a.size = data->via.bin.size;
  return a;
}

// Executable or opaque payloads have no business here.
void reject_ext(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::EXT:
      throw ProtocolError("msgpack ext types are not accepted");
    case msgpack::type::ARRAY:
      for (uint32_t i = 0; i < o.via.array.size; ++i) reject_ext(o.via.array.ptr[i]);
      break;
    case msgpack::type::MAP:
      for (uint32_t i = 0; i < o.via.map.size; ++i) {
        reject_ext(o.via.map.ptr[i].key);
        reject_ext(o.via.map.ptr[i].val);
      }
      break;
    default:
      break;
  }
}

// Large str/bin payloads (images) stay in the frame buffer instead of being copied.
bool reference_blobs(msgpack::type::object_type t, size_t, void*) {
  return t == msgpack::type::STR || t == msgpack::type::BIN;
}

uint64_t decode_seed(const std::string& key, const msgpack::object& o) {
  const msgpack::object* v = &o;
  if (is_tagged(o, "__npgeneric__")) v = find_key(o, "data");  // np.int64(7)
  if (v && v->type == msgpack::type::POSITIVE_INTEGER) return v->via.u64;
  throw ProtocolError(key + ": expected a non-negative integer");
}

void pack_key(msgpack::packer<msgpack::sbuffer>& pk, std::string_view s) {
  pk.pack_str(uint32_t(s.size()));
  pk.pack_str_body(s.data(), uint32_t(s.size()));
}
void pack_bin_key(msgpack::packer<msgpack::sbuffer>& pk, std::string_view s) {
  pk.pack_bin(uint32_t(s.size()));
  pk.pack_bin_body(s.data(), uint32_t(s.size()));
}

}  // namespace

std::string plan_summary(const Plan& plan) {
  if (plan.is_dense()) return "dense";
  std::vector<std::string> parts;
  int attn_off = 0, mlp_off = 0, mlp_pruned = 0;
  for (const auto& l : plan.llm) {
    attn_off += !l.attn;
    mlp_off += !l.mlp;
    mlp_pruned += l.mlp && l.mlp_keep < 1.0f;
  }
  if (attn_off || mlp_off) parts.push_back(fmt::format("llm skips {} attention, {} mlp", attn_off, mlp_off));
  if (mlp_pruned) parts.push_back(fmt::format("{} mlp pruned", mlp_pruned));
  if (plan.tokens.enabled)
    parts.push_back(fmt::format("tokens keep {} after layer {}", plan.tokens.keep, plan.tokens.after_layer));
  if (plan.cache.interval > 1) parts.push_back(fmt::format("cache every {} steps", plan.cache.interval));
  return parts.empty() ? "custom" : fmt::format("{}", fmt::join(parts, "; "));
}

Metadata make_metadata(const Model& model, const Plan& plan, const ObsKeys& keys, int workers,
                       const std::string& unnorm_default) {
  if (int(keys.images.size()) < model.num_images())
    throw Error(fmt::format("the model takes {} images but only {} image keys are configured",
                            model.num_images(), keys.images.size()));
  Metadata m;
  m.model = model.name();
  m.family = model.family();
  m.action_horizon = model.action_horizon();
  m.action_steps = model.action_steps();
  m.action_dim = model.action_dim();
  m.image_keys.assign(keys.images.begin(), keys.images.begin() + model.num_images());
  m.image_size = model.image_size();
  m.state_dim = model.state_dim();
  if (m.state_dim > 0) m.state_key = keys.state;
  m.prompt_key = keys.prompt;
  m.seed_key = keys.seed;
  m.unnorm_key_key = keys.unnorm;
  m.unnorm_keys = model.unnorm_keys();
  if (!unnorm_default.empty() &&
      std::find(m.unnorm_keys.begin(), m.unnorm_keys.end(), unnorm_default) == m.unnorm_keys.end())
    throw Error(fmt::format("unnorm_key '{}': the model's datasets are: {}", unnorm_default,
                            m.unnorm_keys.empty() ? std::string("(one unnamed set)") : fmt::format("{}", fmt::join(m.unnorm_keys, ", "))));
  m.unnorm_default = unnorm_default;
  m.plan_name = plan.name;
  m.plan_dense = plan.is_dense();
  m.plan_summary = plan_summary(plan);
  m.workers = workers;
  return m;
}

Image image_from_array(const std::string& key, const ArrayView& a) {
  DType d = parse_dtype(key, a.dtype);
  if (d.kind != 'u' || d.size != 1)
    throw ProtocolError(fmt::format("{}: images must be uint8, got dtype {}", key, quote(a.dtype)));
  if (a.shape.size() != 3 || a.shape[2] != 3)
    throw ProtocolError(fmt::format("{}: images must be H×W×3 (RGB, channels last), got shape {}", key,
                                    shape_str(a.shape)));
  checked_count(key, a, 1);
  if (a.shape[0] < 1 || a.shape[1] < 1 || a.shape[0] > kMaxImageSide || a.shape[1] > kMaxImageSide)
    throw ProtocolError(fmt::format("{}: image side must be 1..{}, got shape {}", key, kMaxImageSide,
                                    shape_str(a.shape)));
  Image img(int(a.shape[1]), int(a.shape[0]));
  std::memcpy(img.rgb.data(), a.data, a.size);
  return img;
}

std::vector<float> state_from_array(const std::string& key, const ArrayView& a, int state_dim) {
  DType d = parse_dtype(key, a.dtype);
  size_t n = checked_count(key, a, d.size);
  bool flat = a.shape.size() == 1 || (a.shape.size() == 2 && a.shape[0] == 1);
  if (!flat || n != size_t(state_dim))
    throw ProtocolError(fmt::format("{}: expected {} values (shape ({},)), got shape {}", key, state_dim,
                                    state_dim, shape_str(a.shape)));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = a.data + i * d.size;
    double v = 0;
    auto load = [p]<class T>(T) { T x; std::memcpy(&x, p, sizeof x); return double(x); };
    switch (d.kind * 16 + d.size) {
      case 'f' * 16 + 4: v = load(float{}); break;
      case 'f' * 16 + 8: v = load(double{}); break;
      case 'i' * 16 + 1: v = load(int8_t{}); break;
      case 'i' * 16 + 2: v = load(int16_t{}); break;
      case 'i' * 16 + 4: v = load(int32_t{}); break;
      case 'i' * 16 + 8: v = load(int64_t{}); break;
      case 'u' * 16 + 1: case 'b' * 16 + 1: v = load(uint8_t{}); break;
      case 'u' * 16 + 2: v = load(uint16_t{}); break;
      case 'u' * 16 + 4: v = load(uint32_t{}); break;
      case 'u' * 16 + 8: v = load(uint64_t{}); break;
    }
    out[i] = to_float(v, key, i);
  }
  return out;
}

Observation decode_observation(const void* data, size_t size, const Metadata& meta) {
  msgpack::object_handle oh;
  try {
    // Small containers only; depth 16 bounds the recursion below.
    msgpack::unpack_limit limits(/*array*/ 1 << 16, /*map*/ 1024, /*str*/ 1 << 20, /*bin*/ 0xffffffff,
                                 /*ext*/ 0, /*depth*/ 16);
    size_t off = 0;
    oh = msgpack::unpack(static_cast<const char*>(data), size, off, reference_blobs, nullptr, limits);
    if (off != size) throw ProtocolError("trailing bytes after the msgpack observation");
  } catch (const ProtocolError&) {
    throw;
  } catch (const msgpack::ext_size_overflow&) {
    throw ProtocolError("msgpack ext types are not accepted");
  } catch (const std::exception& e) {
    throw ProtocolError(std::string("not a valid msgpack message (") + e.what() + ")");
  }
  const msgpack::object& root = oh.get();
  if (root.type != msgpack::type::MAP) throw ProtocolError("the observation must be a msgpack map");
  reject_ext(root);

  auto need = [&](const std::string& key) -> const msgpack::object& {
    const auto* v = lookup(root, key);
    if (!v) throw ProtocolError("missing key '" + key + "'");
    return *v;
  };
  Observation obs;
  for (const auto& key : meta.image_keys) {
    auto a = as_array(key, need(key));
    if (!a) throw ProtocolError(key + ": expected a numpy uint8 array (H×W×3)");
    obs.images.push_back(image_from_array(key, *a));
  }
  if (meta.state_dim > 0) {
    const auto& v = need(meta.state_key);
    if (auto a = as_array(meta.state_key, v)) {
      obs.state = state_from_array(meta.state_key, *a, meta.state_dim);
    } else if (v.type == msgpack::type::ARRAY) {  // a plain list of numbers
      if (v.via.array.size != uint32_t(meta.state_dim))
        throw ProtocolError(fmt::format("{}: expected {} values, got {}", meta.state_key, meta.state_dim,
                                        v.via.array.size));
      for (uint32_t i = 0; i < v.via.array.size; ++i) {
        const auto& x = v.via.array.ptr[i];
        double f;
        if (x.type == msgpack::type::FLOAT32 || x.type == msgpack::type::FLOAT64) f = x.via.f64;
        else if (x.type == msgpack::type::POSITIVE_INTEGER) f = double(x.via.u64);
        else if (x.type == msgpack::type::NEGATIVE_INTEGER) f = double(x.via.i64);
        else throw ProtocolError(meta.state_key + ": expected numbers");
        obs.state.push_back(to_float(f, meta.state_key, i));
      }
    } else {
      throw ProtocolError(meta.state_key + ": expected a numpy array or a list of numbers");
    }
  }
  const auto& prompt = need(meta.prompt_key);
  if (prompt.type != msgpack::type::STR && prompt.type != msgpack::type::BIN)
    throw ProtocolError(meta.prompt_key + ": expected a string");
  obs.instruction = as_text(prompt);
  if (const auto* s = lookup(root, meta.seed_key)) obs.seed = decode_seed(meta.seed_key, *s);
  obs.unnorm_key = meta.unnorm_default;
  if (const auto* u = lookup(root, meta.unnorm_key_key)) {
    if (u->type != msgpack::type::STR && u->type != msgpack::type::BIN)
      throw ProtocolError(meta.unnorm_key_key + ": expected a string");
    obs.unnorm_key = as_text(*u);
    if (std::find(meta.unnorm_keys.begin(), meta.unnorm_keys.end(), obs.unnorm_key) == meta.unnorm_keys.end())
      throw ProtocolError(meta.unnorm_key_key + ": not one of the model's datasets (see the metadata's unnorm_keys)");
  }
  if (obs.unnorm_key.empty() && meta.unnorm_keys.size() > 1)
    throw ProtocolError(meta.unnorm_key_key + ": required: the model has statistics for " +
                        std::to_string(meta.unnorm_keys.size()) + " datasets (see the metadata's unnorm_keys)");
  return obs;
}

std::string encode_reply(const ActionChunk& chunk, const ReplyTiming& t) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3);
  pack_key(pk, "actions");
  pk.pack_map(4);  // msgpack_numpy layout, bin keys as numpy's packer writes them
  pack_bin_key(pk, "__ndarray__");
  pk.pack_true();
  pack_bin_key(pk, "data");
  const size_t bytes = chunk.actions.size() * sizeof(float);
  pk.pack_bin(uint32_t(bytes));
  pk.pack_bin_body(reinterpret_cast<const char*>(chunk.actions.data()), uint32_t(bytes));
  pack_bin_key(pk, "dtype");
  pk.pack(std::string("<f4"));
  pack_bin_key(pk, "shape");
  pk.pack_array(2);
  pk.pack(chunk.horizon);
  pk.pack(chunk.dim);

  pack_key(pk, "server_timing");
  pk.pack_map(t.prev_total_ms ? 3 : 2);
  pack_key(pk, "infer_ms");
  pk.pack(t.infer_ms);
  pack_key(pk, "queue_ms");
  pk.pack(t.queue_ms);
  if (t.prev_total_ms) {
    pack_key(pk, "prev_total_ms");
    pk.pack(*t.prev_total_ms);
  }
  pack_key(pk, "policy_timing");
  const Timing& m = chunk.timing;
  pk.pack_map(5);
  for (auto [k, v] : {std::pair{"vision_ms", m.vision_ms}, {"projector_ms", m.projector_ms},
                      {"llm_ms", m.llm_ms}, {"action_head_ms", m.action_head_ms}, {"total_ms", m.total_ms}}) {
    pack_key(pk, k);
    pk.pack(v);
  }
  return std::string(buf.data(), buf.size());
}

std::string encode_metadata(const Metadata& meta) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(18);
  auto kv = [&](std::string_view k, const auto& v) {
    pack_key(pk, k);
    pk.pack(v);
  };
  kv("server", std::string("evla"));
  kv("model", meta.model);
  kv("family", meta.family);
  kv("action_horizon", meta.action_horizon);
  kv("action_steps", meta.action_steps);
  kv("action_dim", meta.action_dim);
  kv("image_keys", meta.image_keys);
  kv("image_size", meta.image_size);
  kv("state_key", meta.state_key);
  kv("state_dim", meta.state_dim);
  kv("prompt_key", meta.prompt_key);
  kv("seed_key", meta.seed_key);
  kv("unnorm_key_key", meta.unnorm_key_key);
  kv("unnorm_keys", meta.unnorm_keys);
  kv("unnorm_key", meta.unnorm_default);
  pack_key(pk, "plan");
  pk.pack_map(3);
  kv("name", meta.plan_name);
  kv("dense", meta.plan_dense);
  kv("summary", meta.plan_summary);
  kv("workers", meta.workers);
  kv("protocol", std::string("openpi-msgpack-numpy"));
  return std::string(buf.data(), buf.size());
}

}  // namespace evla::serve
