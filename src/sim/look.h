// Appearance: everything about how a scene looks that is not its state —
// camera, light, table and wall, furniture colours — plus the object palette.
// The `matching` split uses one fixed look; `variants` draws a different one
// per episode (shifted camera, other table/wall/light, other colour shades);
// `randomized`, for training data only, draws other tables and walls (and,
// when asked, nudges the camera less than any `variants` shift).
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "sim/raster.h"

namespace evla::sim {

enum class TablePattern { Plain, Stripes, Checker };

struct Look {
  Camera camera;
  Rgb wall_top{0.62f, 0.66f, 0.72f}, wall_bottom{0.44f, 0.48f, 0.55f};
  Rgb table_a{0.66f, 0.58f, 0.48f}, table_b{0.62f, 0.54f, 0.44f};
  TablePattern pattern = TablePattern::Stripes;
  float pattern_scale = 0.06f;  // stripe / checker period in table units
  Vec3 light_dir{-0.35f, -0.55f, 0.76f};  // towards the light, unit length
  float ambient = 0.55f, diffuse = 0.5f;
  Rgb light_tint{1, 1, 1};
  Rgb cabinet{0.40f, 0.26f, 0.15f}, panel{0.94f, 0.93f, 0.89f}, tray{0.25f, 0.17f, 0.10f};
  Rgb handle{0.12f, 0.12f, 0.13f};
  Rgb finger{0.20f, 0.21f, 0.24f}, palm{0.78f, 0.79f, 0.82f};
  float shadow = 0.55f;  // brightness factor under blob shadows
  bool operator==(const Look&) const = default;
};

// Object colours: saturated so they stay distinct at 64 px.
inline constexpr int kNumColors = 5;
const char* color_name(int color);  // "red", "green", "blue", "yellow", "purple"
Rgb base_color(int color);

// What `variants` changes, as bits; a diagnostic run may change only some
// of them to find which change costs a policy its success.
enum VariantFactor : uint32_t {
  kVaryCamera = 1,       // camera position, aim and field of view
  kVarySurfaces = 2,     // table and wall patterns and colours, furniture shade
  kVaryLight = 4,        // light direction, strength and tint
  kVaryShades = 8,       // object colours lighter or darker
  kVaryDistractors = 16, // two more objects on the table
};
inline constexpr uint32_t kAllVariantFactors = 31;

Look matching_look();
// The random draws are the same whatever `factors` holds, so a look with
// some factors off equals the full variant look in the factors left on.
Look variant_look(Rng& rng, uint32_t factors = kAllVariantFactors);
// Training looks: matching's camera, light, furniture and objects on a table
// and wall of random low-saturation colours and patterns, each at least
// kUnseenDistance (RGB, Euclidean) from every table and wall `variants` draws.
// camera_jitter > 0 also moves the camera's eye up to that far on each axis
// (its aim half as far, its field of view up to 40 degrees per table unit);
// at most kMaxCameraJitter, below the 3 cm sideways shift every `variants`
// camera has, so no training camera is a `variants` one. The surface draws
// come first, so a jittered look has the same table and wall as without.
Look randomized_look(Rng& rng, float camera_jitter = 0);
inline constexpr float kUnseenDistance = 0.12f;
inline constexpr float kMaxCameraJitter = 0.025f;
inline constexpr float kVariantMinSideShift = 0.03f;  // |eye.x shift| of every `variants` camera
// Distance from `c` to the nearest variants table (first colour) or wall (top colour).
float distance_to_variant_table(Rgb c);
float distance_to_variant_wall(Rgb c);
// The colour an object of palette colour `color` is drawn with: the base
// colour in `matching`, a lighter or darker shade of it in `variants`.
Rgb object_shade(int color, bool variant, Rng& rng);

}  // namespace evla::sim
