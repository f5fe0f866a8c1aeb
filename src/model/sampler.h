// DDIM sampling (eta 0) with classifier-free guidance, as CogACT runs its
// action head, and the un-normalisation of the sampled chunk.
#pragma once
#include <vector>

#include "evla/plan.h"
#include "model/config.h"

namespace evla {

class Dit;
class ThreadPool;
struct DitScratch;

struct DdimSchedule {
  std::vector<int> timesteps;   // training timesteps, in sampling order (e.g. 90 … 0)
  std::vector<double> acp;      // ᾱ at each of them
  std::vector<double> acp_prev; // ᾱ of the next (less noisy) one; 1 after the last
  static DdimSchedule make(const ActionHeadConfig& cfg);
};

// Whether sampling step `step` (0 = first) recomputes under the cache plan.
bool cache_refresh_step(const CachePlan& cache, int step);

struct SamplerTrace {
  virtual ~SamplerTrace() = default;
  virtual void step(int s, const float* eps, const float* x_after, int n) = 0;
};

// Runs the whole sampling loop from `noise` ([C, A]); writes the final
// normalised sample ([C, A]) to out.
void ddim_sample(const Dit& dit, const DdimSchedule& sched, const float* cond, const float* noise,
                 const CachePlan& cache, float* out, DitScratch& s, ThreadPool& pool,
                 SamplerTrace* trace = nullptr);

// Clip to [−1, 1], threshold the gripper, un-normalise (see docs/format.md).
// `normalized` is overwritten with the clipped / thresholded values.
void postprocess_actions(const ActionStats& norm, int gripper_index, int C, int A, float* normalized,
                         float* actions);

}  // namespace evla
