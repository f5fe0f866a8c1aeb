// The scripted expert that produces demonstrations. It reads the true scene
// state (not the image), so it is a privileged teacher for the policy.
//
// It walks through phases (reach above the target, descend, close, lift,
// carry, lower, release; or grasp-and-pull / push for drawers), and chooses
// each phase's waypoint from the *current* state every step: when noise or a
// perturbation knocks it off course, or a grasp misses, it simply re-plans
// (a failed grasp sends it back to reaching). That is what lets the policy
// see recoveries in the data.
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "sim/tasks.h"

namespace evla::sim {

// Noise for diverse demonstrations; all zero = the clean expert.
struct ExpertNoise {
  float jitter = 0;   // waypoints offset by up to ± this (table units), drawn per phase
  float slow = 0;     // speed drawn per phase in [1 - slow, 1] x kMaxDelta
  float perturb = 0;  // chance per step, while travelling, of a random 1-3 step shove
  float action = 0;   // ± this uniform noise on every commanded delta

  // One knob: 0 = clean, 1 = the default for demonstrations, up to 2.
  static ExpertNoise level(float x);
};

class Expert {
 public:
  // `seed` drives only the noise; the episode itself comes from `ep`.
  Expert(const Episode& ep, const ExpertNoise& noise = {}, uint64_t seed = 0);
  // A clean expert taking over `scene` mid-episode (e.g. from a policy): its
  // phase comes from the scene (holding the object: lift, or lower where the
  // carry ends; holding the handle: pull; fingers part-way at the grasp point:
  // close; lined up within reach tolerance below the hover point: descend;
  // pushing a drawer shut: push; else reach, which opens the fingers).
  static Expert take_over(const Episode& ep, const Scene& scene);
  // Writes the next action (kActionDim = 4 floats) for the current scene.
  void act(const Scene& scene, float* action);

 private:
  enum class Phase { Reach, Descend, Close, Lift, Carry, Lower, Release, Retreat, Pull, Push };
  struct Waypoint {
    Vec3 target;
    bool closed;      // gripper command
    float tolerance;  // arrival distance (max over axes)
  };
  Waypoint waypoint(const Scene& s) const;
  // Moves to the next phase when the current waypoint is reached (or the grasp resolved).
  void advance(const Scene& s, bool arrived);
  void enter(Phase p);

  Goal goal_;
  ExpertNoise noise_;
  Rng rng_;
  Phase phase_ = Phase::Reach;
  int phase_steps_ = 0;
  Vec3 jitter_;       // this phase's waypoint offset
  float speed_ = 1;   // this phase's speed factor
  Vec3 spot_;         // move_near: where the object goes (chosen on lifting)
  float pull_to_ = 0; // open_drawer: opening to pull to
  int shove_steps_ = 0;
  Vec3 shove_;
};

}  // namespace evla::sim
