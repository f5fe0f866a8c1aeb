// Small value types for the simulator: 3-vectors, colours, axis-aligned boxes.
#pragma once
#include <algorithm>

namespace evla::sim {

struct Vec3 {
  float x = 0, y = 0, z = 0;
  float& operator[](int i) { return i == 0 ? x : i == 1 ? y : z; }
  float operator[](int i) const { return i == 0 ? x : i == 1 ? y : z; }
  bool operator==(const Vec3&) const = default;
};
inline Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
inline Vec3 operator-(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline Vec3 operator*(Vec3 a, float s) { return {a.x * s, a.y * s, a.z * s}; }
inline float dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline Vec3 cross(Vec3 a, Vec3 b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// Linear RGB in [0, 1] (values above 1 are clipped when converted to bytes).
struct Rgb {
  float r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};
inline Rgb operator*(Rgb c, float s) { return {c.r * s, c.g * s, c.b * s}; }
inline Rgb operator*(Rgb a, Rgb b) { return {a.r * b.r, a.g * b.g, a.b * b.b}; }
inline Rgb mix(Rgb a, Rgb b, float t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

// Axis-aligned box, used both for collision and for drawing.
struct Box {
  Vec3 lo, hi;
  // True when the two boxes overlap on axis `a` (open intervals: touching is not overlap).
  bool overlaps_on(const Box& o, int a) const { return lo[a] < o.hi[a] && o.lo[a] < hi[a]; }
  bool contains_xy(float x, float y) const { return x >= lo.x && x <= hi.x && y >= lo.y && y <= hi.y; }
};

}  // namespace evla::sim
