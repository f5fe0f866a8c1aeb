// Draws a Scene as the policy's camera sees it.
#pragma once
#include <memory>

#include "evla/image.h"
#include "sim/look.h"
#include "sim/scene.h"

namespace evla::sim {

// Renders at width x height; `supersample` x `supersample` samples per pixel
// smooth the edges of the small objects (2 is plenty; 1 is fastest).
Image render(const Scene& scene, const Look& look, int width, int height, int supersample = 2);

// The same, keeping the static background (ray-cast table and wall, a good
// part of the work at small sizes) between calls with the same look and size.
class Renderer {
 public:
  explicit Renderer(int supersample = 2) : supersample_(supersample) {}
  Image render(const Scene& scene, const Look& look, int width, int height);

 private:
  int supersample_;
  Look look_;
  std::unique_ptr<Raster> background_;
};

}  // namespace evla::sim
