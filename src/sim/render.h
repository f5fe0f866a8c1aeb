// Draws a Scene as the policy's camera sees it.
#pragma once
#include "evla/image.h"
#include "sim/look.h"
#include "sim/scene.h"

namespace evla::sim {

// Renders at width x height; `supersample` x `supersample` samples per pixel
// smooth the edges of the small objects (2 is plenty; 1 is fastest).
Image render(const Scene& scene, const Look& look, int width, int height, int supersample = 2);

}  // namespace evla::sim
