#include "sim/env.h"

#include "evla/error.h"

namespace evla::sim {

void Env::reset(const EpisodeSpec& spec) {
  episode_ = make_episode(spec);
  scene_ = episode_.scene;
  steps_ = 0;
  success_ = false;
}

Image Env::render(int width, int height) const { return renderer_.render(scene_, episode_.look, width, height); }

std::vector<float> Env::state() const {
  const Vec3 p = scene_.gripper.pos;
  return {p.x, p.y, p.z, scene_.gap() / geom::kMaxGap};
}

void Env::step(const float* action) {
  if (episode_.max_steps == 0) throw Error("sim::Env::step: reset() was never called");
  if (done()) throw Error("sim::Env::step: the episode is done (" + std::to_string(steps_) + " steps)");
  sim::step(scene_, action);
  ++steps_;
  success_ = is_success(scene_, episode_.goal);
}

}  // namespace evla::sim
