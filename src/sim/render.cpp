// Scene -> triangles. Flat Lambert shading per face, a ray-cast table and
// wall behind everything, and blob shadows straight below each object and
// the gripper so that height above the table is visible in a single image.
#include "sim/render.h"

#include <cmath>

#include "evla/error.h"

namespace evla::sim {

namespace {

using namespace geom;

constexpr int kRound = 12;  // segments of cylinders and rings of spheres

// Unit circle, computed once.
struct Circle {
  float c[kRound + 1], s[kRound + 1];
  Circle() {
    for (int i = 0; i <= kRound; ++i) {
      double a = 2 * 3.14159265358979 * i / kRound;
      c[i] = float(std::cos(a)), s[i] = float(std::sin(a));
    }
  }
};
const Circle& circle() {
  static const Circle k;
  return k;
}

Vec3 normalized(Vec3 v) { return v * (1.0f / std::sqrt(dot(v, v))); }

class Painter {
 public:
  Painter(Raster& r, const Look& look) : r_(r), look_(look) {}

  // Lambert shading of a face with outward normal n.
  Rgb shade(Rgb base, Vec3 n) const {
    float lambert = std::max(0.0f, dot(n, look_.light_dir));
    return base * look_.light_tint * (look_.ambient + look_.diffuse * lambert);
  }
  bool facing(Vec3 n, Vec3 p) const { return dot(n, r_.eye() - p) > 0; }

  void quad(Vec3 a, Vec3 b, Vec3 c, Vec3 d, Vec3 n, Rgb base) {
    if (!facing(n, a)) return;
    Rgb col = shade(base, n);
    r_.triangle(a, b, c, col);
    r_.triangle(a, c, d, col);
  }

  void box(const Box& b, Rgb base) {
    const Vec3 l = b.lo, h = b.hi;
    quad({l.x, l.y, h.z}, {h.x, l.y, h.z}, {h.x, h.y, h.z}, {l.x, h.y, h.z}, {0, 0, 1}, base);
    quad({l.x, l.y, l.z}, {h.x, l.y, l.z}, {h.x, h.y, l.z}, {l.x, h.y, l.z}, {0, 0, -1}, base);
    quad({l.x, l.y, l.z}, {h.x, l.y, l.z}, {h.x, l.y, h.z}, {l.x, l.y, h.z}, {0, -1, 0}, base);
    quad({l.x, h.y, l.z}, {h.x, h.y, l.z}, {h.x, h.y, h.z}, {l.x, h.y, h.z}, {0, 1, 0}, base);
    quad({l.x, l.y, l.z}, {l.x, h.y, l.z}, {l.x, h.y, h.z}, {l.x, l.y, h.z}, {-1, 0, 0}, base);
    quad({h.x, l.y, l.z}, {h.x, h.y, l.z}, {h.x, h.y, h.z}, {h.x, l.y, h.z}, {1, 0, 0}, base);
  }

  void cylinder(Vec3 bottom, float radius, float height, Rgb base) {
    const Circle& k = circle();
    const Vec3 top = bottom + Vec3{0, 0, height};
    for (int i = 0; i < kRound; ++i) {
      Vec3 e0{k.c[i] * radius, k.s[i] * radius, 0}, e1{k.c[i + 1] * radius, k.s[i + 1] * radius, 0};
      Vec3 n = normalized(Vec3{k.c[i] + k.c[i + 1], k.s[i] + k.s[i + 1], 0});
      quad(bottom + e0, bottom + e1, top + e1, top + e0, n, base);
      if (facing({0, 0, 1}, top)) r_.triangle(top, top + e0, top + e1, shade(base, {0, 0, 1}));
    }
  }

  void sphere(Vec3 center, float radius, Rgb base) {
    const Circle& k = circle();
    const int rings = kRound / 2;  // latitude bands from pole to pole
    for (int j = 0; j < rings; ++j) {
      // Latitude angles j/rings and (j+1)/rings of a half turn, from the top.
      float z0 = k.c[j], r0 = k.s[j], z1 = k.c[j + 1], r1 = k.s[j + 1];
      for (int i = 0; i < kRound; ++i) {
        Vec3 a{k.c[i] * r0, k.s[i] * r0, z0}, b{k.c[i + 1] * r0, k.s[i + 1] * r0, z0};
        Vec3 c{k.c[i + 1] * r1, k.s[i + 1] * r1, z1}, d{k.c[i] * r1, k.s[i] * r1, z1};
        Vec3 n = normalized(a + b + c + d);
        quad(center + a * radius, center + b * radius, center + c * radius, center + d * radius, n, base);
      }
    }
  }

  // Dark patch on whatever lies at height z: a disc or a square of half extent `half`.
  void blob(float x, float y, float z, float half, bool round) {
    const Vec3 c{x, y, z + 0.002f};
    if (!round) {
      r_.darken(c + Vec3{-half, -half, 0}, c + Vec3{half, -half, 0}, c + Vec3{half, half, 0}, look_.shadow);
      r_.darken(c + Vec3{-half, -half, 0}, c + Vec3{half, half, 0}, c + Vec3{-half, half, 0}, look_.shadow);
      return;
    }
    const Circle& k = circle();
    for (int i = 0; i < kRound; ++i)
      r_.darken(c, c + Vec3{k.c[i] * half, k.s[i] * half, 0}, c + Vec3{k.c[i + 1] * half, k.s[i + 1] * half, 0},
                look_.shadow);
  }

 private:
  Raster& r_;
  const Look& look_;
};

// Table (patterned plane) and wall (vertical gradient), one ray per sample.
void draw_background(Raster& r, const Look& look) {
  const Vec3 eye = r.eye();
  const float table_light = look.ambient + look.diffuse * std::max(0.0f, look.light_dir.z);
  for (int y = 0; y < r.height(); ++y) {
    Rgb wall = mix(look.wall_top, look.wall_bottom, float(y) / float(r.height()));
    for (int x = 0; x < r.width(); ++x) {
      Vec3 d = r.ray(float(x) + 0.5f, float(y) + 0.5f);
      float t = d.z < 0 ? -eye.z / d.z : -1;
      Vec3 p = eye + d * t;
      if (t <= 0 || p.x < kTableX0 || p.x > kTableX1 || p.y < kTableY0 || p.y > kTableY1) {
        r.put(x, y, wall, 0);
        continue;
      }
      int u = int(std::floor(p.x / look.pattern_scale)), v = int(std::floor(p.y / look.pattern_scale));
      bool alt = false;
      if (look.pattern == TablePattern::Stripes) alt = v & 1;
      if (look.pattern == TablePattern::Checker) alt = (u + v) & 1;
      r.put(x, y, (alt ? look.table_b : look.table_a) * look.light_tint * table_light, r.view_depth(d, t));
    }
  }
}

void draw_cabinet(Painter& p, const Scene& s, const Look& look) {
  p.box(s.cabinet_box(), look.cabinet);
  for (int k = 0; k < kDrawers; ++k) {
    Box t = s.tray_box(k), in = s.tray_inside(k);
    p.box({t.lo, {t.hi.x, t.hi.y, kTrayFloor}}, look.tray);  // floor
    p.box({t.lo, {in.lo.x, t.hi.y, t.hi.z}}, look.tray);      // left wall
    p.box({{in.hi.x, t.lo.y, t.lo.z}, t.hi}, look.tray);      // right wall
    p.box({{t.lo.x, in.hi.y, t.lo.z}, t.hi}, look.tray);      // back wall
    p.box(s.panel_box(k), look.panel);
    p.box(s.handle_box(k), look.handle);
  }
}

void draw_object(Painter& p, const Object& o) {
  switch (o.shape) {
    case Shape::Cube: p.box(o.box(), o.rgb); break;
    case Shape::Can: p.cylinder(o.pos, o.half, o.height, o.rgb); break;
    case Shape::Ball: p.sphere(o.pos + Vec3{0, 0, o.half}, o.half, o.rgb); break;
  }
}

void draw_gripper(Painter& p, const Scene& s, const Look& look) {
  const Vec3 g = s.gripper.pos;
  const float half_gap = s.gap() / 2, fd = kFingerD / 2;
  p.box({{g.x - half_gap - kFingerW, g.y - fd, g.z}, {g.x - half_gap, g.y + fd, g.z + kFingerLen}}, look.finger);
  p.box({{g.x + half_gap, g.y - fd, g.z}, {g.x + half_gap + kFingerW, g.y + fd, g.z + kFingerLen}}, look.finger);
  const float palm = kMaxGap / 2 + kFingerW;
  p.box({{g.x - palm, g.y - 0.025f, g.z + kFingerLen}, {g.x + palm, g.y + 0.025f, g.z + kGripperH}}, look.palm);
  p.box({{g.x - 0.018f, g.y - 0.018f, g.z + kGripperH}, {g.x + 0.018f, g.y + 0.018f, g.z + 0.2f}}, look.finger);
}

void draw_shadows(Painter& p, const Scene& s) {
  int drawer;
  for (int i = 0; i < int(s.objects.size()); ++i) {
    const Object& o = s.objects[i];
    float z = s.support(o.pos.x, o.pos.y, o.half, o.pos.z, i, &drawer);
    p.blob(o.pos.x, o.pos.y, z, o.half * 1.12f, o.shape != Shape::Cube);
  }
  const Vec3 g = s.gripper.pos;
  float z = s.support(g.x, g.y, 0.03f, g.z, -1, &drawer);
  p.blob(g.x, g.y, z, 0.03f, true);
}

void check_size(int width, int height, int supersample) {
  if (width < 8 || height < 8 || width > 4096 || height > 4096 || supersample < 1 || supersample > 4)
    throw Error("sim::render: bad size " + std::to_string(width) + "x" + std::to_string(height) + " (supersample " +
                std::to_string(supersample) + ")");
}

// Everything that moves, over a raster that already holds the background.
Image draw_scene(Raster& r, const Scene& scene, const Look& look, int supersample) {
  Painter p(r, look);
  draw_cabinet(p, scene, look);
  // Resting objects before the shadows so that the gripper's and the held
  // object's shadows can fall on them; the moving parts come last.
  const int held = scene.gripper.held_object;
  for (int i = 0; i < int(scene.objects.size()); ++i)
    if (i != held) draw_object(p, scene.objects[i]);
  draw_shadows(p, scene);
  if (held >= 0) draw_object(p, scene.objects[held]);
  draw_gripper(p, scene, look);
  return r.resolve(supersample);
}

}  // namespace

Image render(const Scene& scene, const Look& look, int width, int height, int supersample) {
  check_size(width, height, supersample);
  Raster r(width * supersample, height * supersample, look.camera);
  draw_background(r, look);
  return draw_scene(r, scene, look, supersample);
}

Image Renderer::render(const Scene& scene, const Look& look, int width, int height) {
  check_size(width, height, supersample_);
  const int w = width * supersample_, h = height * supersample_;
  if (!background_ || background_->width() != w || background_->height() != h || !(look_ == look)) {
    background_ = std::make_unique<Raster>(w, h, look.camera);
    draw_background(*background_, look);
    look_ = look;
  }
  Raster r = *background_;
  return draw_scene(r, scene, look, supersample_);
}

}  // namespace evla::sim
