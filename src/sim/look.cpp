#include "sim/look.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "evla/error.h"

namespace evla::sim {

namespace {

float uniform(Rng& rng, float lo, float hi) { return lo + (hi - lo) * float(rng.uniform()); }
template <class T, size_t N>
const T& pick(Rng& rng, const T (&items)[N]) {
  return items[size_t(rng.uniform() * N)];
}

struct Colors {
  const char* name;
  Rgb rgb;
};
constexpr Colors kPalette[kNumColors] = {
    {"red", {0.86f, 0.08f, 0.07f}},
    {"green", {0.10f, 0.68f, 0.14f}},
    {"blue", {0.08f, 0.24f, 0.92f}},
    {"yellow", {0.96f, 0.84f, 0.06f}},
    {"purple", {0.58f, 0.14f, 0.78f}},
};

// Table and wall sets for `variants`; none equals the matching look.
struct Surface {
  Rgb a, b;
  TablePattern pattern;
  float scale;
};
constexpr Surface kTables[] = {
    {{0.34f, 0.35f, 0.37f}, {0.29f, 0.30f, 0.32f}, TablePattern::Checker, 0.10f},  // slate
    {{0.90f, 0.90f, 0.88f}, {0.84f, 0.84f, 0.82f}, TablePattern::Plain, 0.05f},    // white
    {{0.50f, 0.36f, 0.24f}, {0.44f, 0.31f, 0.20f}, TablePattern::Stripes, 0.04f},  // dark wood
    {{0.62f, 0.68f, 0.74f}, {0.56f, 0.62f, 0.68f}, TablePattern::Checker, 0.07f},  // blue-grey tiles
    {{0.72f, 0.70f, 0.50f}, {0.66f, 0.64f, 0.44f}, TablePattern::Stripes, 0.08f},  // olive
};
constexpr Rgb kWalls[][2] = {
    {{0.80f, 0.78f, 0.74f}, {0.66f, 0.63f, 0.58f}},  // beige
    {{0.30f, 0.32f, 0.36f}, {0.18f, 0.19f, 0.22f}},  // dark
    {{0.60f, 0.72f, 0.62f}, {0.45f, 0.56f, 0.47f}},  // green-grey
    {{0.85f, 0.85f, 0.88f}, {0.72f, 0.72f, 0.76f}},  // white
};
constexpr Rgb kTints[] = {{1.0f, 0.93f, 0.82f}, {0.86f, 0.92f, 1.0f}, {1, 1, 1}, {1.0f, 0.97f, 0.9f}};

float signed_amount(Rng& rng, float lo, float hi) {
  float v = uniform(rng, lo, hi);
  return rng.uniform() < 0.5 ? -v : v;
}

}  // namespace

const char* color_name(int color) { return kPalette[color].name; }
Rgb base_color(int color) { return kPalette[color].rgb; }

Look matching_look() { return Look{}; }

Look variant_look(Rng& rng, uint32_t factors) {
  Look look;
  // Camera: always visibly shifted (at least 3 cm sideways) and re-aimed,
  // small enough that the whole workspace stays in view.
  look.camera.eye.x += signed_amount(rng, kVariantMinSideShift, 0.07f);
  look.camera.eye.y += uniform(rng, -0.05f, 0.05f);
  look.camera.eye.z += uniform(rng, -0.08f, 0.05f);
  look.camera.target.x += uniform(rng, -0.02f, 0.02f);
  look.camera.target.y += uniform(rng, -0.02f, 0.02f);
  look.camera.fov_y_deg += uniform(rng, -1.0f, 2.5f);

  const Surface& t = pick(rng, kTables);
  look.table_a = t.a, look.table_b = t.b, look.pattern = t.pattern, look.pattern_scale = t.scale;
  const auto& w = pick(rng, kWalls);
  look.wall_top = w[0], look.wall_bottom = w[1];

  Vec3 l{uniform(rng, -0.7f, 0.7f), uniform(rng, -0.8f, 0.2f), uniform(rng, 0.6f, 1.0f)};
  look.light_dir = l * (1.0f / std::sqrt(dot(l, l)));
  look.ambient = uniform(rng, 0.42f, 0.62f);
  look.diffuse = uniform(rng, 0.35f, 0.6f);
  look.light_tint = pick(rng, kTints);

  float wood = uniform(rng, 0.8f, 1.2f);  // lighter or darker furniture
  look.cabinet = look.cabinet * wood, look.panel = look.panel * wood, look.tray = look.tray * wood;

  Look out = matching_look();
  if (factors & kVaryCamera) out.camera = look.camera;
  if (factors & kVarySurfaces) {
    out.table_a = look.table_a, out.table_b = look.table_b, out.pattern = look.pattern;
    out.pattern_scale = look.pattern_scale, out.wall_top = look.wall_top, out.wall_bottom = look.wall_bottom;
    out.cabinet = look.cabinet, out.panel = look.panel, out.tray = look.tray;
  }
  if (factors & kVaryLight) {
    out.light_dir = look.light_dir, out.ambient = look.ambient, out.diffuse = look.diffuse;
    out.light_tint = look.light_tint;
  }
  return out;
}

namespace {
float distance(Rgb a, Rgb b) {
  const float dr = a.r - b.r, dg = a.g - b.g, db = a.b - b.b;
  return std::sqrt(dr * dr + dg * dg + db * db);
}
// A grey with a slight tint: low saturation keeps every object colour
// distinct against it.
Rgb random_surface(Rng& rng) {
  const float g = uniform(rng, 0.22f, 0.88f);
  return {g + uniform(rng, -0.08f, 0.08f), g + uniform(rng, -0.08f, 0.08f), g + uniform(rng, -0.08f, 0.08f)};
}
}  // namespace

float distance_to_variant_table(Rgb c) {
  float d = 1e9f;
  for (const Surface& t : kTables) d = std::min(d, distance(c, t.a));
  return d;
}

float distance_to_variant_wall(Rgb c) {
  float d = 1e9f;
  for (const auto& w : kWalls) d = std::min(d, distance(c, w[0]));
  return d;
}

Look randomized_look(Rng& rng, float camera_jitter) {
  if (!(camera_jitter >= 0 && camera_jitter <= kMaxCameraJitter))
    throw Error("randomized look: camera jitter " + std::to_string(camera_jitter) + " outside [0, " +
                std::to_string(kMaxCameraJitter) + "] table units (larger shifts are `variants` cameras)");
  Look look;
  do look.table_a = random_surface(rng);
  while (distance_to_variant_table(look.table_a) < kUnseenDistance);
  look.table_b = look.table_a * uniform(rng, 0.86f, 0.96f);
  look.pattern = TablePattern(int(rng.uniform() * 3));
  look.pattern_scale = uniform(rng, 0.03f, 0.12f);
  do look.wall_top = random_surface(rng);
  while (distance_to_variant_wall(look.wall_top) < kUnseenDistance);
  look.wall_bottom = look.wall_top * uniform(rng, 0.7f, 0.85f);
  if (camera_jitter > 0) {
    const float j = camera_jitter;
    look.camera.eye.x += uniform(rng, -j, j);
    look.camera.eye.y += uniform(rng, -j, j);
    look.camera.eye.z += uniform(rng, -j, j);
    look.camera.target.x += uniform(rng, -j / 2, j / 2);
    look.camera.target.y += uniform(rng, -j / 2, j / 2);
    look.camera.fov_y_deg += uniform(rng, -40 * j, 40 * j);
  }
  return look;
}

Rgb object_shade(int color, bool variant, Rng& rng) {
  Rgb c = base_color(color);
  if (!variant) return c;
  // Towards white or black by 15-35%: "pinkish red", "dark red", still red.
  float t = signed_amount(rng, 0.15f, 0.35f);
  return t > 0 ? mix(c, {1, 1, 1}, t) : mix(c, {0, 0, 0}, -t);
}

}  // namespace evla::sim
