#include "io/torch_checkpoint.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "evla/error.h"

namespace evla::io {

namespace {

// Bounds far beyond any state dict (CogACT-Base's pickle is ~200 KB with
// ~1,000 tensors), small enough that a hostile file cannot exhaust memory.
constexpr size_t kMaxPickleBytes = size_t(256) << 20;
constexpr size_t kMaxObjects = size_t(4) << 20;
constexpr size_t kMaxStack = size_t(1) << 20;
constexpr int kMaxDims = 16;
constexpr int kMaxNesting = 32;          // dict levels walked when naming tensors
constexpr int64_t kMaxElements = int64_t(1) << 40;

// A value on the unpickler's stack. Objects live in the machine's arena and
// refer to each other by pointer, so shared and even cyclic references (which
// the memo allows) cost nothing and free nothing twice.
struct Obj {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };
  Kind kind = Kind::None;
  int64_t i = 0;     // Bool, Int; Storage: element count
  double f = 0;      // Float
  std::string s;     // Str, Bytes; Global: "module.name"; Storage: key
  std::vector<Obj*> items;  // Tuple, List; Dict: key, value, key, value, ...
  DType dtype = DType::F32;  // Storage, Tensor
  Obj* storage = nullptr;    // Tensor
  int64_t offset = 0;        // Tensor
  std::vector<int64_t> shape, stride;  // Tensor
};

const char* kind_name(Obj::Kind k) {
  static const char* names[] = {"None", "bool",   "int",    "float",   "str",   "bytes",
                                "tuple", "list", "dict", "global", "storage", "tensor"};
  return names[int(k)];
}

// The globals a state dict needs, and nothing else.
const std::map<std::string, std::optional<DType>>& allowed_globals() {
  static const std::map<std::string, std::optional<DType>> g = {
      {"collections.OrderedDict", std::nullopt},
      {"torch._utils._rebuild_tensor_v2", std::nullopt},
      {"torch._utils._rebuild_parameter", std::nullopt},
      {"torch._utils._rebuild_parameter_with_state", std::nullopt},
      {"torch.DoubleStorage", DType::F64},
      {"torch.FloatStorage", DType::F32},
      {"torch.HalfStorage", DType::F16},
      {"torch.BFloat16Storage", DType::BF16},
      {"torch.LongStorage", DType::I64},
      {"torch.IntStorage", DType::I32},
      {"torch.ShortStorage", DType::I16},
      {"torch.CharStorage", DType::I8},
      {"torch.ByteStorage", DType::U8},
      {"torch.BoolStorage", DType::BOOL},
  };
  return g;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, std::string source)
      : p_(data), end_(data + size), begin_(data), source_(std::move(source)) {
    if (size > kMaxPickleBytes)
      throw Error(fmt::format("{}: pickle of {} bytes (at most {})", source_, size, kMaxPickleBytes));
  }

  Obj* run() {
    for (;;) {
      const size_t at = size_t(p_ - begin_);
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                 // PROTO
        case 0x95: bytes(8); break;             // FRAME (a read-ahead hint)
        case '.': return stop(at);              // STOP
        case '(': mark(); break;                // MARK
        case '0': pop_any(at); break;           // POP
        case '1': pop_mark(at); break;          // POP_MARK
        case '2': push(top(at)); break;         // DUP
        case 'N': push(make(Obj::Kind::None)); break;
        case 0x88: push(integer(1, Obj::Kind::Bool)); break;  // NEWTRUE
        case 0x89: push(integer(0, Obj::Kind::Bool)); break;  // NEWFALSE
        case 'J': push(integer(int32_t(le(4)), Obj::Kind::Int)); break;  // BININT
        case 'K': push(integer(int64_t(le(1)), Obj::Kind::Int)); break;  // BININT1
        case 'M': push(integer(int64_t(le(2)), Obj::Kind::Int)); break;  // BININT2
        case 0x8a: push(long_int(le(1), at)); break;  // LONG1
        case 0x8b: push(long_int(le(4), at)); break;  // LONG4
        case 'G': push(binfloat()); break;            // BINFLOAT
        case 'X': push(text(le(4), Obj::Kind::Str)); break;      // BINUNICODE
        case 0x8c: push(text(le(1), Obj::Kind::Str)); break;     // SHORT_BINUNICODE
        case 0x8d: push(text(le(8), Obj::Kind::Str)); break;     // BINUNICODE8
        case 'T': push(text(le(4), Obj::Kind::Str)); break;      // BINSTRING
        case 'U': push(text(le(1), Obj::Kind::Str)); break;      // SHORT_BINSTRING
        case 'B': push(text(le(4), Obj::Kind::Bytes)); break;    // BINBYTES
        case 'C': push(text(le(1), Obj::Kind::Bytes)); break;    // SHORT_BINBYTES
        case 0x8e: push(text(le(8), Obj::Kind::Bytes)); break;   // BINBYTES8
        case '}': push(make(Obj::Kind::Dict)); break;            // EMPTY_DICT
        case ']': push(make(Obj::Kind::List)); break;            // EMPTY_LIST
        case ')': push(make(Obj::Kind::Tuple)); break;           // EMPTY_TUPLE
        case 't': push(sequence(Obj::Kind::Tuple, pop_to_mark(at))); break;  // TUPLE
        case 'l': push(sequence(Obj::Kind::List, pop_to_mark(at))); break;   // LIST
        case 0x85: push(sequence(Obj::Kind::Tuple, pop_n(1, at))); break;    // TUPLE1
        case 0x86: push(sequence(Obj::Kind::Tuple, pop_n(2, at))); break;    // TUPLE2
        case 0x87: push(sequence(Obj::Kind::Tuple, pop_n(3, at))); break;    // TUPLE3
        case 'd': {                                                         // DICT
          Obj* d = make(Obj::Kind::Dict);
          d->items = pop_to_mark(at);
          if (d->items.size() % 2) fail(at, "DICT with an odd number of items");
          push(d);
          break;
        }
        case 'a': append(pop_n(1, at), at); break;         // APPEND
        case 'e': append(pop_to_mark(at), at); break;      // APPENDS
        case 's': setitems(pop_n(2, at), at); break;       // SETITEM
        case 'u': setitems(pop_to_mark(at), at); break;    // SETITEMS
        case 'q': memo_put(le(1), at); break;              // BINPUT
        case 'r': memo_put(le(4), at); break;              // LONG_BINPUT
        case 0x94: memo_put(memo_.size(), at); break;      // MEMOIZE
        case 'h': push(memo_get(le(1), at)); break;        // BINGET
        case 'j': push(memo_get(le(4), at)); break;        // LONG_BINGET
        case 'c': {                                        // GLOBAL
          std::string module = line(at), name = line(at);
          push(global(module, name, at));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto mn = pop_n(2, at);
          if (mn[0]->kind != Obj::Kind::Str || mn[1]->kind != Obj::Kind::Str)
            fail(at, "STACK_GLOBAL needs two strings");
          push(global(mn[0]->s, mn[1]->s, at));
          break;
        }
        case 'R': {  // REDUCE
          auto fa = pop_n(2, at);
          push(reduce(fa[0], fa[1], at));
          break;
        }
        case 'b': {  // BUILD: state of an OrderedDict (_metadata) or a Parameter, not needed
          Obj* state = pop_n(1, at)[0];
          (void)state;
          Obj* target = top(at);
          if (target->kind != Obj::Kind::Dict && target->kind != Obj::Kind::Tensor)
            fail(at, fmt::format("BUILD on a {}", kind_name(target->kind)));
          break;
        }
        case 'Q': push(persistent_storage(pop_n(1, at)[0], at)); break;  // BINPERSID
        default:
          fail(at, fmt::format("unsupported pickle opcode 0x{:02x} (only the binary protocols "
                               "of a tensor state dict are read)", op));
      }
    }
  }

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw Error(fmt::format("{}: pickle byte {}: {}", source_, at, what));
  }

 private:

  uint8_t u8() {
    if (p_ >= end_) fail(size_t(p_ - begin_), "unexpected end of data (no STOP)");
    return *p_++;
  }
  const uint8_t* bytes(uint64_t n) {
    if (uint64_t(end_ - p_) < n)
      fail(size_t(p_ - begin_), fmt::format("needs {} more bytes, {} left", n, end_ - p_));
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  uint64_t le(int n) {
    const uint8_t* b = bytes(uint64_t(n));
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(b[k]) << (8 * k);
    return v;
  }
  std::string line(size_t at) {
    const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl || nl - p_ > 256) fail(at, "GLOBAL name not terminated");
    std::string s(reinterpret_cast<const char*>(p_), size_t(nl - p_));
    p_ = nl + 1;
    return s;
  }

  Obj* make(Obj::Kind k) {
    if (arena_.size() >= kMaxObjects) fail(size_t(p_ - begin_), fmt::format("more than {} objects", kMaxObjects));
    arena_.emplace_back();
    arena_.back().kind = k;
    return &arena_.back();
  }
  Obj* integer(int64_t v, Obj::Kind k) {
    Obj* o = make(k);
    o->i = v;
    return o;
  }
  Obj* long_int(uint64_t n, size_t at) {
    if (n > 8) fail(at, fmt::format("integer of {} bytes (at most 8)", n));
    const uint8_t* b = bytes(n);
    uint64_t v = 0;
    for (uint64_t k = 0; k < n; ++k) v |= uint64_t(b[k]) << (8 * k);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return integer(int64_t(v), Obj::Kind::Int);
  }
  Obj* binfloat() {
    const uint8_t* b = bytes(8);
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = (v << 8) | b[k];  // big-endian
    Obj* o = make(Obj::Kind::Float);
    o->f = std::bit_cast<double>(v);
    return o;
  }
  Obj* text(uint64_t n, Obj::Kind k) {
    const uint8_t* b = bytes(n);
    Obj* o = make(k);
    o->s.assign(reinterpret_cast<const char*>(b), size_t(n));
    return o;
  }
  Obj* sequence(Obj::Kind k, std::vector<Obj*> items) {
    Obj* o = make(k);
    o->items = std::move(items);
    return o;
  }

  void push(Obj* o) {
    if (stack_.size() >= kMaxStack) fail(size_t(p_ - begin_), "stack deeper than 1048576");
    stack_.push_back(o);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Obj* top(size_t at) const {
    if (stack_.size() <= floor()) fail(at, "stack empty");
    return stack_.back();
  }
  std::vector<Obj*> pop_n(size_t n, size_t at) {
    if (stack_.size() < floor() + n) fail(at, "stack underflow");
    std::vector<Obj*> out(stack_.end() - std::ptrdiff_t(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  void mark() {
    if (marks_.size() >= kMaxStack) fail(size_t(p_ - begin_), "too many marks");
    marks_.push_back(stack_.size());
  }
  std::vector<Obj*> pop_to_mark(size_t at) {
    if (marks_.empty()) fail(at, "no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj*> out(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m);
    return out;
  }
  void pop_any(size_t at) {
    if (stack_.size() > floor()) stack_.pop_back();
    else if (!marks_.empty()) marks_.pop_back();
    else fail(at, "stack underflow");
  }
  void pop_mark(size_t at) { pop_to_mark(at); }

  void append(std::vector<Obj*> items, size_t at) {
    Obj* list = top(at);
    if (list->kind != Obj::Kind::List) fail(at, fmt::format("APPEND to a {}", kind_name(list->kind)));
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void setitems(std::vector<Obj*> kv, size_t at) {
    Obj* dict = top(at);
    if (dict->kind != Obj::Kind::Dict) fail(at, fmt::format("SETITEM on a {}", kind_name(dict->kind)));
    if (kv.size() % 2) fail(at, "SETITEMS with an odd number of items");
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }
  void memo_put(uint64_t key, size_t at) {
    if (memo_.size() >= kMaxObjects && !memo_.count(key)) fail(at, fmt::format("more than {} memo entries", kMaxObjects));
    memo_[key] = top(at);
  }
  Obj* memo_get(uint64_t key, size_t at) const {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail(at, fmt::format("memo key {} was never stored", key));
    return it->second;
  }

  Obj* global(const std::string& module, const std::string& name, size_t at) {
    const std::string full = module + "." + name;
    if (!allowed_globals().count(full))
      fail(at, fmt::format("refuses global '{}': a checkpoint may name only OrderedDict, torch's "
                           "tensor-rebuild functions and its storage types",
                           full));
    Obj* o = make(Obj::Kind::Global);
    o->s = full;
    return o;
  }

  int64_t as_int(const Obj* o, const char* what, size_t at) const {
    if (o->kind != Obj::Kind::Int) fail(at, fmt::format("{}: expected an int, got {}", what, kind_name(o->kind)));
    return o->i;
  }
  std::vector<int64_t> int_tuple(const Obj* o, const char* what, size_t at) const {
    if (o->kind != Obj::Kind::Tuple) fail(at, fmt::format("{}: expected a tuple", what));
    if (o->items.size() > size_t(kMaxDims)) fail(at, fmt::format("{}: more than {} dimensions", what, kMaxDims));
    std::vector<int64_t> v;
    for (const Obj* x : o->items) v.push_back(as_int(x, what, at));
    return v;
  }

  Obj* persistent_storage(Obj* pid, size_t at) {
    // ('storage', torch.<Type>Storage, key, location, numel)
    if (pid->kind != Obj::Kind::Tuple || pid->items.size() != 5 || pid->items[0]->kind != Obj::Kind::Str ||
        pid->items[0]->s != "storage")
      fail(at, "persistent id is not ('storage', type, key, location, numel)");
    const Obj* type = pid->items[1];
    if (type->kind != Obj::Kind::Global) fail(at, "storage type is not a global");
    const auto& dt = allowed_globals().at(type->s);
    if (!dt) fail(at, fmt::format("'{}' is not a storage type", type->s));
    if (pid->items[2]->kind != Obj::Kind::Str) fail(at, "storage key is not a string");
    const std::string& key = pid->items[2]->s;
    if (key.empty() || key.size() > 64 || key.find_first_of("/\\") != std::string::npos || key == "." || key == "..")
      fail(at, "storage key '" + key + "' is not a plain name");
    const int64_t numel = as_int(pid->items[4], "storage size", at);
    if (numel < 0 || numel > kMaxElements) fail(at, fmt::format("storage of {} elements", numel));
    Obj* s = make(Obj::Kind::Storage);
    s->s = key;
    s->dtype = *dt;
    s->i = numel;
    return s;
  }

  Obj* reduce(Obj* fn, Obj* args, size_t at) {
    if (fn->kind != Obj::Kind::Global) fail(at, fmt::format("REDUCE calls a {}", kind_name(fn->kind)));
    if (args->kind != Obj::Kind::Tuple) fail(at, "REDUCE arguments are not a tuple");
    const auto& a = args->items;
    if (fn->s == "collections.OrderedDict") {
      if (!a.empty()) fail(at, "OrderedDict() with arguments");
      return make(Obj::Kind::Dict);
    }
    if (fn->s == "torch._utils._rebuild_parameter" || fn->s == "torch._utils._rebuild_parameter_with_state") {
      if (a.size() < 3 || a[0]->kind != Obj::Kind::Tensor) fail(at, fn->s + ": expected (tensor, requires_grad, hooks)");
      return a[0];
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (a.size() != 6 && a.size() != 7) fail(at, fn->s + ": expected 6 or 7 arguments");
      if (a[0]->kind != Obj::Kind::Storage) fail(at, fn->s + ": first argument is not a storage");
      Obj* t = make(Obj::Kind::Tensor);
      t->storage = a[0];
      t->dtype = a[0]->dtype;
      t->offset = as_int(a[1], "storage offset", at);
      t->shape = int_tuple(a[2], "size", at);
      t->stride = int_tuple(a[3], "stride", at);
      check_view(*t, at);
      return t;
    }
    fail(at, "'" + fn->s + "' cannot be called");
  }

  // Every product is bounded before it is formed: no view can wrap around
  // and point outside its storage.
  void check_view(const Obj& t, size_t at) const {
    if (t.shape.size() != t.stride.size()) fail(at, "tensor size and stride differ in length");
    if (t.offset < 0 || t.offset > kMaxElements) fail(at, fmt::format("storage offset {}", t.offset));
    int64_t numel = 1, last = t.offset;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] < 0 || t.shape[d] > kMaxElements) fail(at, fmt::format("dimension {}", t.shape[d]));
      if (t.stride[d] < 0 || t.stride[d] > kMaxElements) fail(at, fmt::format("stride {}", t.stride[d]));
    }
    for (int64_t d : t.shape) {
      if (d == 0) return;  // no elements: nothing is read
      if (d > kMaxElements / numel) fail(at, "tensor of more than 2^40 elements");
      numel *= d;
    }
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.stride[d] > 0 && t.shape[d] - 1 > (kMaxElements - last) / t.stride[d])
        fail(at, "tensor view beyond 2^40 elements");
      last += (t.shape[d] - 1) * t.stride[d];
    }
    if (last >= t.storage->i)
      fail(at, fmt::format("tensor view reaches element {} of a storage of {}", last, t.storage->i));
  }

  Obj* stop(size_t at) {
    if (stack_.size() != 1 || !marks_.empty()) fail(at, "STOP with a stack of " + std::to_string(stack_.size()));
    return stack_.back();
  }

  const uint8_t *p_, *end_, *begin_;
  std::string source_;
  std::deque<Obj> arena_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Obj*> memo_;
};

std::string key_text(const Obj* k) {
  if (k->kind == Obj::Kind::Str) return k->s;
  if (k->kind == Obj::Kind::Int) return std::to_string(k->i);
  return {};
}

// Walks the dicts as the tree a state dict is: a dict reached twice (the
// memo can share one, making a graph whose paths multiply) is refused, and
// so is a name two paths give ({"a.b": t, "a": {"b": u}}).
void flatten(const Unpickler& u, const Obj* o, const std::string& name, int depth,
             std::map<std::string, TorchTensor>& out, std::set<const Obj*>& seen) {
  if (o->kind == Obj::Kind::Tensor) {
    if (out.count(name)) u.fail(0, fmt::format("two entries are named '{}'", name));
    TorchTensor t;
    t.name = name;
    t.dtype = o->dtype;
    t.shape = o->shape;
    t.stride = o->stride;
    t.offset = o->offset;
    t.storage = o->storage->s;
    t.storage_numel = o->storage->i;
    out[name] = std::move(t);
    return;
  }
  if (o->kind != Obj::Kind::Dict) return;
  if (depth >= kMaxNesting) u.fail(0, fmt::format("dicts nested deeper than {} at '{}'", kMaxNesting, name));
  if (!seen.insert(o).second) u.fail(0, fmt::format("the dict at '{}' is also reached by another path", name));
  // A key set twice in one dict keeps its last value, as in Python.
  std::map<std::string, const Obj*> entries;
  for (size_t k = 0; k + 1 < o->items.size(); k += 2) {
    const std::string key = key_text(o->items[k]);
    if (!key.empty()) entries[key] = o->items[k + 1];  // other keys name no tensor of a state dict
  }
  for (const auto& [key, value] : entries) flatten(u, value, name.empty() ? key : name + "." + key, depth + 1, out, seen);
}

}  // namespace

int64_t TorchTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool TorchTensor::contiguous() const {
  int64_t expect = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expect) return false;
    expect *= shape[d];
  }
  return true;
}

std::vector<TorchTensor> parse_torch_pickle(const uint8_t* data, size_t size, const std::string& source) {
  Unpickler u(data, size, source);
  const Obj* root = u.run();
  std::map<std::string, TorchTensor> named;
  std::set<const Obj*> seen;
  flatten(u, root, "", 0, named, seen);
  std::vector<TorchTensor> out;
  for (auto& [name, t] : named) out.push_back(std::move(t));
  return out;
}

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::open(const std::string& path) {
  return from_archive(ZipArchive::open(path));
}

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::from_archive(std::unique_ptr<ZipArchive> zip) {
  std::unique_ptr<TorchCheckpoint> c(new TorchCheckpoint);
  c->zip_ = std::move(zip);
  const std::string& path = c->zip_->path();
  // torch.save writes "<archive>/data.pkl", its storages as "<archive>/data/<key>".
  const ZipArchive::Entry* pkl = nullptr;
  for (const auto& e : c->zip_->entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.substr(slash) == "/data.pkl") {
      if (pkl) throw Error(path + ": more than one data.pkl: not a single torch.save checkpoint");
      pkl = &e;
      c->prefix_ = e.name.substr(0, slash + 1);
    }
  }
  if (!pkl) throw Error(path + ": no <archive>/data.pkl entry: not a torch.save checkpoint");
  if (const auto* bo = c->zip_->find(c->prefix_ + "byteorder")) {
    const auto order = c->zip_->read_all(*bo, 16);
    if (std::string(order.begin(), order.end()) != "little")
      throw Error(path + ": tensors stored big-endian: only little-endian checkpoints are read");
  }
  const auto bytes = c->zip_->read_all(*pkl, kMaxPickleBytes);
  c->tensors_ = parse_torch_pickle(bytes.data(), bytes.size(), path + ": " + pkl->name);
  for (const TorchTensor& t : c->tensors_) {
    const auto* e = c->zip_->find(c->prefix_ + "data/" + t.storage);
    if (!e) throw Error(fmt::format("{}: tensor '{}': storage entry data/{} is missing", path, t.name, t.storage));
    if (e->compressed)
      throw Error(fmt::format("{}: tensor '{}': storage data/{} is compressed (torch.save stores tensors uncompressed)",
                              path, t.name, t.storage));
    const uint64_t need = uint64_t(t.storage_numel) * dtype_size(t.dtype);
    if (e->size < need)
      throw Error(fmt::format("{}: tensor '{}': storage data/{} holds {} bytes, {} expected", path, t.name,
                              t.storage, e->size, need));
  }
  return c;
}

void TorchCheckpoint::read(const TorchTensor& t, const std::function<void(const uint8_t*, size_t)>& sink) const {
  const auto* e = zip_->find(prefix_ + "data/" + t.storage);
  if (!e) throw Error(fmt::format("{}: tensor '{}': storage entry missing", path(), t.name));
  const size_t es = dtype_size(t.dtype);
  const int64_t n = t.numel();
  if (n == 0) return;
  if (t.contiguous()) {
    zip_->read_range(*e, uint64_t(t.offset) * es, uint64_t(n) * es, sink);
    return;
  }
  // A strided view (rare in state dicts): read the span it covers, gather rows.
  int64_t last = t.offset;
  for (size_t d = 0; d < t.shape.size(); ++d) last += (t.shape[d] - 1) * t.stride[d];
  const uint64_t span = uint64_t(last - t.offset + 1) * es;
  if (span > (uint64_t(4) << 30) || uint64_t(n) * es > (uint64_t(4) << 30))
    throw Error(fmt::format("{}: tensor '{}' is a strided view of {} elements over {} bytes (at most 4 GiB each)",
                            path(), t.name, n, span));
  std::vector<uint8_t> src;
  src.reserve(size_t(span));
  zip_->read_range(*e, uint64_t(t.offset) * es, span, [&](const uint8_t* p, size_t k) { src.insert(src.end(), p, p + k); });
  std::vector<uint8_t> out(size_t(n) * es);
  std::vector<int64_t> idx(t.shape.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.stride[d];
    std::memcpy(out.data() + size_t(k) * es, src.data() + size_t(off) * es, es);
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  sink(out.data(), out.size());
}

}  // namespace evla::io
