#include "sim/raster.h"

#include <cmath>

namespace evla::sim {

namespace {
Vec3 normalized(Vec3 v) { return v * (1.0f / std::sqrt(dot(v, v))); }
}  // namespace

Projection::Projection(int width, int height, const Camera& cam) : w_(width), h_(height) {
  eye_ = cam.eye;
  fwd_ = normalized(cam.target - cam.eye);
  right_ = normalized(cross(fwd_, Vec3{0, 0, 1}));
  up_ = cross(right_, fwd_);
  focal_ = 0.5f * float(height) / std::tan(cam.fov_y_deg * 3.14159265f / 360.0f);
}

bool Projection::project(Vec3 p, float* x, float* y, float* inv_z) const {
  Vec3 d = p - eye_;
  float z = dot(d, fwd_);
  if (z < 1e-3f) return false;  // behind the camera: the scene never goes there
  const float iz = 1.0f / z;
  *x = 0.5f * float(w_) + dot(d, right_) * focal_ * iz;
  *y = 0.5f * float(h_) - dot(d, up_) * focal_ * iz;
  if (inv_z) *inv_z = iz;
  return true;
}

Vec3 Projection::ray(float px, float py) const {
  float u = (px - 0.5f * float(w_)) / focal_;
  float v = (0.5f * float(h_) - py) / focal_;
  return normalized(fwd_ + right_ * u + up_ * v);
}

Raster::Raster(int width, int height, const Camera& cam)
    : w_(width), h_(height), view_(width, height, cam), color_(size_t(width) * height),
      inv_depth_(size_t(width) * height, 0.0f) {}

void Raster::put(int x, int y, Rgb c, float depth) {
  size_t i = size_t(y) * w_ + x;
  color_[i] = c;
  inv_depth_[i] = depth > 0 ? 1.0f / depth : 0.0f;
}

bool Raster::project(Vec3 p, Screen* s) const { return view_.project(p, &s->x, &s->y, &s->inv_z); }

// Calls shade(pixel index, inv_z) for every pixel centre inside the triangle.
// 1/z is affine in screen space, so it is interpolated with the barycentrics.
template <class F>
void Raster::scan(Vec3 a, Vec3 b, Vec3 c, F&& shade) {
  Screen p[3];
  if (!project(a, &p[0]) || !project(b, &p[1]) || !project(c, &p[2])) return;
  float area = (p[1].x - p[0].x) * (p[2].y - p[0].y) - (p[2].x - p[0].x) * (p[1].y - p[0].y);
  if (std::fabs(area) < 1e-9f) return;
  if (area < 0) std::swap(p[1], p[2]), area = -area;
  int x0 = std::max(0, int(std::floor(std::min({p[0].x, p[1].x, p[2].x}))));
  int x1 = std::min(w_ - 1, int(std::ceil(std::max({p[0].x, p[1].x, p[2].x}))));
  int y0 = std::max(0, int(std::floor(std::min({p[0].y, p[1].y, p[2].y}))));
  int y1 = std::min(h_ - 1, int(std::ceil(std::max({p[0].y, p[1].y, p[2].y}))));
  const float inv_area = 1.0f / area;
  // Edge functions: the weight of each vertex is the area of the opposite
  // sub-triangle; they are affine in x, so each row steps them by a constant.
  const float dx0 = -(p[2].y - p[1].y), dx1 = -(p[0].y - p[2].y), dx2 = -(p[1].y - p[0].y);
  for (int y = y0; y <= y1; ++y) {
    const float py = float(y) + 0.5f, px = float(x0) + 0.5f;
    float w0 = (p[2].x - p[1].x) * (py - p[1].y) - (px - p[1].x) * (p[2].y - p[1].y);
    float w1 = (p[0].x - p[2].x) * (py - p[2].y) - (px - p[2].x) * (p[0].y - p[2].y);
    float w2 = (p[1].x - p[0].x) * (py - p[0].y) - (px - p[0].x) * (p[1].y - p[0].y);
    for (int x = x0; x <= x1; ++x, w0 += dx0, w1 += dx1, w2 += dx2) {
      if (w0 < 0 || w1 < 0 || w2 < 0) continue;
      float inv_z = (w0 * p[0].inv_z + w1 * p[1].inv_z + w2 * p[2].inv_z) * inv_area;
      shade(size_t(y) * w_ + x, inv_z);
    }
  }
}

void Raster::triangle(Vec3 a, Vec3 b, Vec3 c, Rgb color) {
  scan(a, b, c, [&](size_t i, float inv_z) {
    if (inv_z <= inv_depth_[i]) return;
    inv_depth_[i] = inv_z;
    color_[i] = color;
  });
}

void Raster::darken(Vec3 a, Vec3 b, Vec3 c, float factor) {
  // Slack so a decal lying exactly on a surface still passes the depth test.
  scan(a, b, c, [&](size_t i, float inv_z) {
    if (inv_z * 1.002f < inv_depth_[i]) return;
    color_[i] = color_[i] * factor;
  });
}

Image Raster::resolve(int factor) const {
  Image img(w_ / factor, h_ / factor);
  const float norm = 255.0f / float(factor * factor);
  auto byte = [](float v) { return uint8_t(std::clamp(v, 0.0f, 255.0f) + 0.5f); };
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x) {
      Rgb sum;
      for (int sy = 0; sy < factor; ++sy) {
        const Rgb* row = &color_[size_t(y * factor + sy) * w_ + x * factor];
        for (int sx = 0; sx < factor; ++sx)
          sum.r += std::min(row[sx].r, 1.0f), sum.g += std::min(row[sx].g, 1.0f), sum.b += std::min(row[sx].b, 1.0f);
      }
      uint8_t* px = img.pixel(x, y);
      px[0] = byte(sum.r * norm), px[1] = byte(sum.g * norm), px[2] = byte(sum.b * norm);
    }
  }
  return img;
}

}  // namespace evla::sim
