// A minimal software rasterizer: perspective pinhole camera, flat-coloured
// triangles with a z-buffer, and multiplicative "decals" for blob shadows.
// Knows nothing about the scene; render.cpp turns the scene into triangles.
#pragma once
#include <vector>

#include "evla/image.h"
#include "sim/vec.h"

namespace evla::sim {

struct Camera {
  Vec3 eye{0, -0.75f, 0.95f};
  Vec3 target{0, 0, 0};
  float fov_y_deg = 38;  // vertical field of view
  bool operator==(const Camera&) const = default;
};

// A camera's pinhole projection onto a width x height image; the one place
// the camera model lives (the rasterizer draws through it, datasets record
// where objects appear through it).
class Projection {
 public:
  Projection(int width, int height, const Camera& cam);
  // Image coordinates of world point p (pixel centres at +0.5) and 1 / view
  // depth; false for a point behind the camera.
  bool project(Vec3 p, float* x, float* y, float* inv_z = nullptr) const;
  // Unit direction of the ray through pixel coordinates (px, py).
  Vec3 ray(float px, float py) const;
  Vec3 eye() const { return eye_; }
  Vec3 forward() const { return fwd_; }

 private:
  int w_, h_;
  Vec3 eye_, right_, up_, fwd_;
  float focal_;  // pixels per unit of tan(angle)
};

class Raster {
 public:
  Raster(int width, int height, const Camera& cam);

  int width() const { return w_; }
  int height() const { return h_; }
  Vec3 eye() const { return view_.eye(); }
  // Unit direction of the ray through pixel coordinates (px, py) (pixel centres at +0.5).
  Vec3 ray(float px, float py) const { return view_.ray(px, py); }
  // Depth along the view axis of a point at distance t along ray `dir`.
  float view_depth(Vec3 dir, float t) const { return t * dot(dir, view_.forward()); }
  // Writes a pixel unconditionally (used for the ray-cast background).
  void put(int x, int y, Rgb c, float depth);
  // Z-tested flat triangle, world-space vertices, either winding.
  void triangle(Vec3 a, Vec3 b, Vec3 c, Rgb color);
  // Multiplies the colour of visible pixels under the triangle by `factor`
  // without writing depth (a decal lying on already drawn surfaces).
  void darken(Vec3 a, Vec3 b, Vec3 c, float factor);
  // Averages factor x factor blocks (supersampling) into 8-bit RGB.
  Image resolve(int factor) const;

 private:
  struct Screen {
    float x, y, inv_z;
  };
  bool project(Vec3 p, Screen* s) const;
  template <class F>
  void scan(Vec3 a, Vec3 b, Vec3 c, F&& shade);

  int w_, h_;
  Projection view_;
  std::vector<Rgb> color_;
  std::vector<float> inv_depth_;  // 1/view depth; larger is nearer, 0 = nothing drawn
};

}  // namespace evla::sim
