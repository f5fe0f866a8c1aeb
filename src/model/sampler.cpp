#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/dit.h"

namespace evla {

namespace {

std::vector<double> training_alphas_cumprod(const ActionHeadConfig& cfg) {
  const int T = cfg.train_steps;
  std::vector<double> betas(T);
  if (cfg.beta_schedule == "linear") {
    const double scale = 1000.0 / T;
    for (int i = 0; i < T; ++i)
      betas[i] = scale * 0.0001 + (scale * 0.02 - scale * 0.0001) * i / std::max(1, T - 1);
  } else {  // squaredcos_cap_v2
    auto alpha_bar = [](double t) {
      const double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
      return c * c;
    };
    for (int i = 0; i < T; ++i)
      betas[i] = std::min(1.0 - alpha_bar(double(i + 1) / T) / alpha_bar(double(i) / T), 0.999);
  }
  std::vector<double> acp(T);
  double prod = 1.0;
  for (int i = 0; i < T; ++i) acp[i] = (prod *= 1.0 - betas[i]);
  return acp;
}

}  // namespace

DiffusionSchedule DiffusionSchedule::make(const ActionHeadConfig& cfg) {
  const std::vector<double> acp = training_alphas_cumprod(cfg);
  DiffusionSchedule s;
  s.ddpm = cfg.sampler == "ddpm";
  if (s.ddpm) {
    const int T = cfg.train_steps;
    std::vector<double> var(T);
    for (int t = 0; t < T; ++t) {
      const double prev = t > 0 ? acp[t - 1] : 1.0, beta = 1.0 - acp[t] / prev;
      var[t] = beta * (1.0 - prev) / (1.0 - acp[t]);
    }
    for (int t = T - 1; t >= 0; --t) {
      const double prev = t > 0 ? acp[t - 1] : 1.0, beta = 1.0 - acp[t] / prev;
      s.timesteps.push_back(t);
      s.acp.push_back(acp[t]);
      s.acp_prev.push_back(prev);
      s.c1.push_back(beta * std::sqrt(prev) / (1.0 - acp[t]));
      s.c2.push_back((1.0 - prev) * std::sqrt(1.0 - beta) / (1.0 - acp[t]));
      // log-variance clipped: step 0's (zero) variance replaced by step 1's.
      // Step 0 adds no noise (its clipped log-variance would be step 1's).
      s.sigma.push_back(t == 0 ? 0.0 : std::exp(0.5 * std::log(var[t])));
    }
    return s;
  }
  s.timesteps = ddim_timesteps(cfg.train_steps, cfg.sample_steps);
  for (size_t i = 0; i < s.timesteps.size(); ++i) {
    s.acp.push_back(acp[s.timesteps[i]]);
    s.acp_prev.push_back(i + 1 < s.timesteps.size() ? acp[s.timesteps[i + 1]] : 1.0);
  }
  return s;
}

void sample_actions(const Dit& dit, const DiffusionSchedule& sched, const float* cond, const float* noise,
                    const float* step_noise, const Schedule& plan, float* out, DitScratch& s, ThreadPool& pool) {
  const auto& cfg = dit.config();
  const int C = cfg.chunk_size, A = cfg.action_dim, n = C * A, B = cfg.batch();
  // With CFG both batch rows hold the same sample (CogACT duplicates the noise
  // and applies the guided ε to both halves), so one copy is kept and fed twice.
  std::vector<float>&x = s.sample, &xb = s.batch, &eps = s.eps, &guided = s.guided;  // reused buffers
  x.assign(noise, noise + n);
  xb.resize(size_t(B) * n);
  eps.resize(size_t(B) * n);
  guided.resize(size_t(n));
  Observer* obs = s.observer;
  // Per step so far, 1 recomputed, 0 reused: kept only for an observer.
  const bool track = obs && obs->wants(Stage::DitRefreshed);
  std::vector<int> refreshed;
  for (size_t step = 0; step < sched.timesteps.size(); ++step) {
    for (int b = 0; b < B; ++b) std::copy(x.begin(), x.end(), xb.begin() + size_t(b) * n);
    // Reuse, or (adaptive) may reuse: Dit::predict then decides from the input's change.
    const bool reuse = !plan.head_refresh[step];
    s.step = int(step);
    const bool fresh = dit.predict(xb.data(), B, sched.timesteps[step], cond, eps.data(), reuse, plan.cache, s, pool);
    for (int i = 0; i < n; ++i)
      guided[i] = B == 2 ? eps[n + i] + cfg.cfg_scale * (eps[i] - eps[n + i]) : eps[i];
    // improved-diffusion's updates, coefficients in double cast to float, no clipping of x̂0.
    const float r = float(std::sqrt(1.0 / sched.acp[step]));
    const float rm1 = float(std::sqrt(1.0 / sched.acp[step] - 1.0));
    if (sched.ddpm) {
      const float c1 = float(sched.c1[step]), c2 = float(sched.c2[step]), sigma = float(sched.sigma[step]);
      const float* z = step_noise + step * size_t(n);
      for (int i = 0; i < n; ++i) {
        const float x0 = r * x[i] - rm1 * guided[i];
        x[i] = c1 * x0 + c2 * x[i] + sigma * z[i];
      }
    } else {
      const float a_prev = float(std::sqrt(sched.acp_prev[step]));
      const float s_prev = float(std::sqrt(1.0 - sched.acp_prev[step]));
      for (int i = 0; i < n; ++i) {
        const float x0 = r * x[i] - rm1 * guided[i];
        const float e = (r * x[i] - x0) / rm1;
        x[i] = x0 * a_prev + s_prev * e;
      }
    }
    show(obs, {Stage::DitEps, int(step), -1, guided.data(), nullptr, C, A, A});
    show(obs, {Stage::DitSample, int(step), -1, x.data(), nullptr, C, A, A});
    if (track) {
      refreshed.push_back(fresh);
      obs->on({Stage::DitRefreshed, int(step), -1, nullptr, refreshed.data(), 1, int(step) + 1, int(step) + 1});
    }
  }
  std::copy(x.begin(), x.end(), out);
}

void postprocess_actions(const ActionStats& norm, int gripper_index, int C, int A, float* normalized,
                         float* actions) {
  for (int c = 0; c < C; ++c)
    for (int d = 0; d < A; ++d) {
      float& v = normalized[c * A + d];
      v = std::clamp(v, -1.0f, 1.0f);
      if (d == gripper_index) v = v < 0.5f ? 0.0f : 1.0f;
      actions[c * A + d] =
          norm.mask[d] ? 0.5f * (v + 1.0f) * (norm.q99[d] - norm.q01[d]) + norm.q01[d] : v;
    }
}

}  // namespace evla
