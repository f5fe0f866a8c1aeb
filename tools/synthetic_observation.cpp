// The observation `evla bench` and `evla plan --measure` time: a smooth
// colour pattern, the model's image count and state size.
#include "commands.h"

namespace evla::cli {

Observation synthetic_observation(const Model& m) {
  Observation obs;
  const int S = m.image_size();
  for (int k = 0; k < m.num_images(); ++k) {
    Image img(S, S);
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        uint8_t* p = img.pixel(x, y);
        p[0] = uint8_t(255 * x / S);
        p[1] = uint8_t(255 * y / S);
        p[2] = uint8_t((x * y + 40 * k) % 256);
      }
    obs.images.push_back(std::move(img));
  }
  obs.instruction = "pick up the red block";
  obs.state.assign(size_t(m.state_dim()), 0.1f);
  // Any dataset's statistics: the time does not depend on which.
  if (const auto keys = m.unnorm_keys(); !keys.empty()) obs.unnorm_key = keys.front();
  return obs;
}

}  // namespace evla::cli
