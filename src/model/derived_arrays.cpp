#include "model/derived_arrays.h"

#include <fmt/format.h>

namespace evla {

namespace {

template <typename T>
constexpr io::DType dtype_of();
template <>
constexpr io::DType dtype_of<float>() { return io::DType::F32; }
template <>
constexpr io::DType dtype_of<int8_t>() { return io::DType::I8; }
template <>
constexpr io::DType dtype_of<uint16_t>() { return io::DType::I16; }  // the bits, whatever 16-bit float they are

// Each array is stored padded to whole 64-byte lines, so that in a file whose
// data starts 64-byte aligned every array starts on a cache line.
size_t padded(size_t n, size_t size) { return (n * size + 63) / 64 * 64 / size; }

std::string key(size_t i) { return fmt::format("{:06d}", i); }

template <typename T>
std::deque<std::vector<T>>& storage(std::deque<std::vector<float>>& f, std::deque<std::vector<int8_t>>& i,
                                    std::deque<std::vector<uint16_t>>& u) {
  if constexpr (std::is_same_v<T, float>) return f;
  else if constexpr (std::is_same_v<T, int8_t>) return i;
  else return u;
}

}  // namespace

const void* DerivedArrays::replay(io::DType dtype, size_t n) {
  const io::TensorInfo* t = file_->find(key(arrays_.size()));
  const size_t size = io::dtype_size(dtype);
  if (!t || t->dtype != dtype || t->shape.size() != 1 || size_t(t->shape[0]) != padded(n, size) ||
      reinterpret_cast<uintptr_t>(t->data) % 64 != 0)
    throw Mismatch{};
  return t->data;
}

template <typename T>
DerivedArrays::Slot<T> DerivedArrays::next(size_t n) {
  constexpr io::DType dtype = dtype_of<T>();
  Slot<T> s{};
  if (file_) {
    s.data = static_cast<const T*>(replay(dtype, n));
  } else {
    s.fill = storage<T>(f32_, i8_, u16_).emplace_back(n).data();
    s.data = s.fill;
  }
  arrays_.push_back({dtype, s.data, n});
  return s;
}

template DerivedArrays::Slot<float> DerivedArrays::next<float>(size_t);
template DerivedArrays::Slot<int8_t> DerivedArrays::next<int8_t>(size_t);
template DerivedArrays::Slot<uint16_t> DerivedArrays::next<uint16_t>(size_t);

void DerivedArrays::check_replay_complete() const {
  if (file_ && file_->tensors().size() != arrays_.size()) throw Mismatch{};
}

template <typename T>
size_t DerivedArrays::count_of() const {
  size_t k = 0;
  for (const Array& a : arrays_) k += a.dtype == dtype_of<T>();
  return k;
}

template size_t DerivedArrays::count_of<float>() const;
template size_t DerivedArrays::count_of<int8_t>() const;
template size_t DerivedArrays::count_of<uint16_t>() const;

int64_t DerivedArrays::bytes() const {
  int64_t b = 0;
  for (const Array& a : arrays_) b += int64_t(a.n * io::dtype_size(a.dtype));
  return b;
}

void DerivedArrays::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  io::SafetensorsWriter w;
  for (size_t i = 0; i < arrays_.size(); ++i) {
    const Array& a = arrays_[i];
    const size_t size = io::dtype_size(a.dtype);
    w.add_borrowed(key(i), a.dtype, {int64_t(padded(a.n, size))}, a.data, a.n * size, /*zero_tail=*/true);
  }
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.write(path, 64);
}

}  // namespace evla
