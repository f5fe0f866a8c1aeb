// The action head's sampling loop as CogACT runs it — DDIM (eta 0) over a
// respaced schedule, or DDPM over every training step — with classifier-free
// guidance, and the un-normalisation of the sampled chunk.
#pragma once
#include <vector>

#include "evla/plan.h"
#include "model/config.h"
#include "model/schedule.h"

namespace evla {

class Dit;
class ThreadPool;
struct DitScratch;


struct DiffusionSchedule {
  bool ddpm = false;
  std::vector<int> timesteps;   // training timesteps, in sampling order (e.g. 90 … 0)
  std::vector<double> acp;      // ᾱ at each of them
  std::vector<double> acp_prev; // DDIM: ᾱ of the next (less noisy) one; 1 after the last
  // DDPM: x ← c1·x̂0 + c2·x + sigma·z (the posterior mean and its clipped
  // log-variance, "fixed small"); sigma is 0 at t = 0.
  std::vector<double> c1, c2, sigma;
  static DiffusionSchedule make(const ActionHeadConfig& cfg);
};


// Runs the whole sampling loop from `noise` ([C, A]); writes the final
// normalised sample ([C, A]) to out (which may be `noise`). DDPM adds
// step_noise (steps × [C, A]). Shows each step to s.observer.
void sample_actions(const Dit& dit, const DiffusionSchedule& sched, const float* cond, const float* noise,
                    const float* step_noise, const Schedule& plan, float* out, DitScratch& s, ThreadPool& pool);

// Clip to [−1, 1], threshold the gripper, un-normalise (see docs/format.md).
// `normalized` is overwritten with the clipped / thresholded values.
void postprocess_actions(const ActionStats& norm, int gripper_index, int C, int A, float* normalized,
                         float* actions);

}  // namespace evla
