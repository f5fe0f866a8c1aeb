// Policy: one inference of the composed model — vision towers, projector,
// language model, diffusion action head — under the current plan.
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/mlp_compact.h"
#include "model/model_impl.h"
#include "model/precision.h"
#include "model/weight_cache.h"

namespace evla {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

Policy::Policy(std::shared_ptr<const Model> model, const PolicyOptions& opts)
    : model_(std::move(model)) {
  if (!model_) throw Error("Policy: no model");
  const int threads = opts.threads > 0 ? opts.threads : ThreadPool::default_threads();
  state_ = std::make_unique<PolicyState>(threads);
  kernels::init_blas();
  set_plan(Plan{});
}

Policy::~Policy() = default;
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;

const Plan& Policy::plan() const { return state_->planned->plan; }
const std::string& Policy::plan_cache_status() const { return state_->planned->cache_status; }
const std::vector<float>& Policy::cognition() const { return state_->cognition; }

namespace {

template <typename... V>
int64_t capacity_bytes(const V&... v) {
  return (int64_t(v.capacity() * sizeof(typename V::value_type)) + ... + 0);
}

}  // namespace

MemoryUse Policy::memory() const {
  MemoryUse m = model_->memory();
  const PlannedModel& pm = *state_->planned;
  m.derived += pm.derived->bytes();
  m.scratch = scratch_bytes();
  return m;
}

int64_t Policy::scratch_bytes() const {
  int64_t bytes = 0;
  PolicyState::each_buffer(*state_, [&bytes](const auto& v) { bytes += capacity_bytes(v); });
  return bytes;
}

void PolicyState::release_buffers() {
  // Swapped with empty vectors: assigning {} would keep the capacity.
  each_buffer(*this, [](auto& v) { std::decay_t<decltype(v)>().swap(v); });
  dit.change = 0;
  dit.since_refresh = 0;
}

void Policy::release_scratch() { state_->release_buffers(); }

void Policy::set_plan(const Plan& plan) {
  model_->validate(plan);
  state_->planned = model_->impl().planned(plan);
}

std::shared_ptr<const PlannedModel> ModelImpl::planned(const Plan& plan) const {
  // Built under the lock: a second caller of the same plan waits for the
  // first copy instead of deriving its own.
  std::lock_guard lock(planned_mu_);
  const std::string key = plan.to_json();
  if (auto alive = planned_[key].lock()) return alive;
  for (auto it = planned_.begin(); it != planned_.end();)  // forget plans no Policy holds
    it = it->second.expired() ? planned_.erase(it) : std::next(it);
  auto pm = std::make_shared<PlannedModel>();
  PlanCache cache(cache_dir, weights->tensors(), key);
  if (auto file = cache.open()) {
    try {
      compile(plan, *pm, std::make_unique<DerivedArrays>(std::move(file)));
      cache.touch();
    } catch (const DerivedArrays::Mismatch&) {  // not this code's layout: compile afresh and replace it
      pm = std::make_shared<PlannedModel>();
    }
  }
  if (!pm->derived) {
    const auto start = std::chrono::steady_clock::now();
    compile(plan, *pm, std::make_unique<DerivedArrays>());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cache.save(*pm->derived, seconds, plan_cache_min_seconds);
  }
  pm->cache_status = cache.status();
  if (pm->derived->count() > 0) ++derivations_;
  planned_[key] = pm;
  return pm;
}

void ModelImpl::compile(const Plan& plan, PlannedModel& pm, std::unique_ptr<DerivedArrays> arrays) const {
  DerivedArrays& d = *arrays;
  pm.plan = plan;
  if (smolvla) {  // runs dense (Model::validate refuses other plans)
    arrays->check_replay_complete();
    pm.derived = std::move(arrays);
    return;
  }
  pm.schedule = Schedule::resolve(plan, cfg);
  pm.llm_layers = llm->layers();
  for (size_t l = 0; l < plan.llm.size(); ++l)
    if (pm.schedule.llm[l].mlp && !plan.llm[l].mlp_channels.empty())
      pm.llm_layers[l] = compact_mlp(pm.llm_layers[l], plan.llm[l].mlp_channels, d);
  for (size_t l = 0; l < pm.llm_layers.size(); ++l) {
    const WeightType w = pm.schedule.llm[l].precision;
    if (w == WeightType::Int8)
      quantize_layer_int8(pm.llm_layers[l], d);
    else
      set_layer_precision(pm.llm_layers[l], w, d);
  }
  const PrecisionPlan& pr = plan.precision;
  if (pr.vision != WeightType::Stored)
    for (const Vit& e : encoders) pm.encoders.push_back(e.with_precision(pr.vision, d));
  if (pr.projector != WeightType::Stored)
    pm.projector = std::make_unique<Projector>(projector->with_precision(pr.projector, d));
  if (pr.action_head != WeightType::Stored)
    pm.dit = std::make_unique<Dit>(dit->with_precision(pr.action_head, d));
  d.check_replay_complete();
  pm.derived = std::move(arrays);
}

const std::vector<Vit>& PlannedModel::encoders_of(const ModelImpl& m) const {
  return encoders.empty() ? m.encoders : encoders;
}
const Projector& PlannedModel::projector_of(const ModelImpl& m) const { return projector ? *projector : *m.projector; }
const Dit& PlannedModel::dit_of(const ModelImpl& m) const { return dit ? *dit : *m.dit; }

namespace {

// The action head reads the observer from its scratch for one inference;
// cleared however the inference ends.
struct HeadObserver {
  DitScratch& s;
  HeadObserver(DitScratch& scratch, Observer* obs) : s(scratch) { s.observer = obs; }
  ~HeadObserver() { s.observer = nullptr; }
};


// SmolVLA: the observation checked, the instruction tokenized as LeRobot does
// (a newline appended, the tokenizer's own special tokens, truncated to
// tokenizer_max_length), the noise drawn from the seed.
ActionChunk infer_smolvla(const ModelImpl& im, PolicyState& st, const Observation& obs, Observer* observer) {
  const SmolVla& m = *im.smolvla;
  const SmolVlaConfig& c = m.config();
  const auto t_start = Clock::now();
  if (obs.images.size() != c.cameras.size())
    throw Error(fmt::format("observation has {} images but the model takes {} ({})", obs.images.size(),
                            c.cameras.size(), fmt::join(c.cameras, ", ")));
  constexpr int kMaxSide = 8192;  // each image is widened to floats before it is resized
  for (size_t i = 0; i < obs.images.size(); ++i) {
    const Image& img = obs.images[i];
    if (img.empty() || img.rgb.size() != size_t(img.width) * img.height * 3)
      throw Error("observation image " + std::to_string(i) + " is empty or malformed");
    if (img.width > kMaxSide || img.height > kMaxSide)
      throw Error(fmt::format("observation image {} is {} × {}, more than {} pixels on a side", i, img.width,
                              img.height, kMaxSide));
  }
  if (int(obs.state.size()) != c.state_dim)
    throw Error(fmt::format("observation state has {} values but the model takes {}", obs.state.size(), c.state_dim));
  for (size_t i = 0; i < obs.state.size(); ++i)
    if (!std::isfinite(obs.state[i]))
      throw Error(fmt::format("observation state[{}] is {}, not a finite number", i, obs.state[i]));
  if (!obs.unnorm_key.empty()) throw Error("unnorm_key '" + obs.unnorm_key + "': a SmolVLA model has one set of statistics");
  if (!obs.step_noise.empty()) throw Error("observation step_noise: SmolVLA's flow matching takes no per-step noise");
  const size_t n = size_t(c.chunk) * c.max_action_dim;
  if (!obs.noise.empty() && obs.noise.size() != n)
    throw Error(fmt::format("observation noise has {} values but SmolVLA's starts from chunk × max_action_dim = {}",
                            obs.noise.size(), n));
  for (float v : obs.noise)
    if (!std::isfinite(v)) throw Error("observation noise holds a non-finite value");
  if (!obs.token_ids.empty()) {
    st.smolvla.ids = obs.token_ids;
  } else {
    if (!im.tokenizer) throw Error(im.dir + ": no tokenizer loaded: the instruction cannot be tokenized; give the token ids instead");
    const std::string& text = obs.instruction;
    st.smolvla.ids = im.tokenizer->encode(text.ends_with('\n') ? text : text + "\n", true);
  }
  if (int(st.smolvla.ids.size()) > c.tokenizer_max_length) st.smolvla.ids.resize(size_t(c.tokenizer_max_length));
  for (int id : st.smolvla.ids)
    if (id < 0 || id >= c.vocab_size)
      throw Error(fmt::format("token id {} is outside the vocabulary of {}", id, c.vocab_size));
  show(observer, {Stage::PromptIds, -1, -1, nullptr, st.smolvla.ids.data(), 1, int(st.smolvla.ids.size()),
                  int(st.smolvla.ids.size())});
  std::vector<float>& noise = st.smolvla.noise;
  if (obs.noise.empty()) {
    Rng rng(obs.seed);
    noise.resize(n);
    for (float& v : noise) v = float(rng.normal());
  } else {
    noise = obs.noise;
  }
  show(observer, {Stage::Noise, -1, -1, noise.data(), nullptr, c.chunk, c.max_action_dim, c.max_action_dim});
  ActionChunk out;
  out.actions = m.infer(obs.images, st.smolvla.ids, obs.state, noise, st.smolvla, st.pool, observer, out.timing);
  out.horizon = c.chunk;
  out.dim = c.action_dim;
  for (float v : out.actions)
    if (!std::isfinite(v)) throw Error("the policy produced a non-finite action (check the model's weights)");
  out.timing.total_ms = ms_since(t_start);
  return out;
}

}  // namespace

ActionChunk Policy::infer(const Observation& obs, Observer* observer) {
  const ModelImpl& im = model_->impl();
  if (im.smolvla) return infer_smolvla(im, *state_, obs, observer);
  const ModelConfig& cfg = im.cfg;
  PolicyState& st = *state_;
  ThreadPool& pool = st.pool;
  ActionChunk out;
  const auto t_start = Clock::now();

  // --- checks ---
  if (int(obs.images.size()) != cfg.vision.num_images)
    throw Error("observation has " + std::to_string(obs.images.size()) +
                " images but the model takes " + std::to_string(cfg.vision.num_images));
  const int S = cfg.vision.image_size();
  for (size_t i = 0; i < obs.images.size(); ++i) {
    const Image& img = obs.images[i];
    if (img.empty() || img.rgb.size() != size_t(img.width) * img.height * 3)
      throw Error("observation image " + std::to_string(i) + " is empty or malformed");
  }
  const auto& ah = cfg.action_head;
  if (ah.state_dim > 0 && int(obs.state.size()) != ah.state_dim)
    throw Error("observation state has " + std::to_string(obs.state.size()) +
                " values but the model takes " + std::to_string(ah.state_dim));
  for (size_t i = 0; i < obs.state.size(); ++i)
    if (!std::isfinite(obs.state[i]))
      throw Error("observation state[" + std::to_string(i) + "] is " + std::to_string(obs.state[i]) + ", not a finite number");
  const ActionStats& stats = cfg.action_norm.select(obs.unnorm_key);
  const size_t chunk_values = size_t(ah.chunk_size) * ah.action_dim;
  if (!obs.noise.empty() && obs.noise.size() != chunk_values)
    throw Error("observation noise has " + std::to_string(obs.noise.size()) + " values but the chunk has " +
                std::to_string(chunk_values));
  if (!obs.step_noise.empty() && (!im.schedule.ddpm || obs.step_noise.size() != im.schedule.timesteps.size() * chunk_values))
    throw Error("observation step_noise has " + std::to_string(obs.step_noise.size()) + " values; " +
                (im.schedule.ddpm ? "DDPM's steps × chunk need " + std::to_string(im.schedule.timesteps.size() * chunk_values)
                                  : std::string("only the DDPM sampler takes per-step noise")));
  for (int id : obs.token_ids)
    if (id < 0 || id >= cfg.llm.vocab_size)
      throw Error("observation token id " + std::to_string(id) + " is outside the vocabulary of " +
                  std::to_string(cfg.llm.vocab_size));
  for (const auto* v : {&obs.noise, &obs.step_noise})
    for (float x : *v)
      if (!std::isfinite(x)) throw Error("observation noise holds a non-finite value");

  // --- vision: each encoder writes its channels of every patch row ---
  const PlannedModel& pm = *st.planned;
  const std::vector<Vit>& encoders = pm.encoders_of(im);
  auto t0 = Clock::now();
  const int N = cfg.vision.tokens_per_image(), Dv = cfg.vision.feature_dim();
  const int nv = im.visual_tokens();
  st.features.resize(size_t(nv) * Dv);
  st.resized.resize(obs.images.size());
  for (size_t i = 0; i < obs.images.size(); ++i) {
    const Image& src = obs.images[i];
    const Image* img = &src;
    if (src.width != S || src.height != S) {
      st.resized[i] = resize_bicubic(src, S, S);
      img = &st.resized[i];
    }
    int col = 0;
    for (const Vit& encoder : encoders) {
      encoder.forward(*img, st.features.data() + size_t(i) * N * Dv + col, Dv, st.vit, pool);
      col += encoder.config().hidden_size;
    }
  }
  for (size_t e = 0, col = 0; e < im.encoders.size(); col += size_t(im.encoders[e].config().hidden_size), ++e)
    show(observer, {Stage::VisionFeatures, int(e), -1, st.features.data() + col, nullptr, nv,
                    im.encoders[e].config().hidden_size, Dv});
  out.timing.vision_ms = ms_since(t0);

  // --- projector ---
  t0 = Clock::now();
  const int D = cfg.llm.hidden_size;
  st.visual.resize(size_t(nv) * D);
  pm.projector_of(im).forward(st.features.data(), nv, st.visual.data(), st.proj_scratch, pool);
  show(observer, {Stage::Projected, -1, -1, st.visual.data(), nullptr, nv, D, D});
  out.timing.projector_ms = ms_since(t0);

  // --- language model over [BOS, visual, text…] ---
  t0 = Clock::now();
  st.ids = obs.token_ids.empty() ? im.prompt_ids(obs.instruction) : obs.token_ids;
  const int n_text = int(st.ids.size());
  const int T = n_text + nv;
  if (T > cfg.llm.max_positions)
    throw Error("the prompt is " + std::to_string(n_text - 1) + " tokens; with BOS and " + std::to_string(nv) +
                " visual tokens that is " + std::to_string(T) + ", more than the model's llm.max_position_embeddings (" +
                std::to_string(cfg.llm.max_positions) + ")");
  st.x.resize(size_t(T) * D);
  im.llm->embed(st.ids.data(), 1, st.x.data());
  std::memcpy(st.x.data() + size_t(D), st.visual.data(), sizeof(float) * nv * D);
  im.llm->embed(st.ids.data() + 1, n_text - 1, st.x.data() + size_t(1 + nv) * D);
  st.positions.resize(size_t(T));
  for (int i = 0; i < T; ++i) st.positions[size_t(i)] = i;
  show(observer, {Stage::PromptIds, -1, -1, nullptr, st.ids.data(), 1, n_text, n_text});
  im.llm->forward(st.x, st.positions, SequenceLayout{1, nv}, pm.llm_layers, pm.schedule, st.llm, pool, observer);
  const int T_end = int(st.positions.size());
  st.cognition.resize(size_t(D));
  im.llm->final_norm(st.x.data() + size_t(T_end - 1) * D, 1, st.cognition.data());
  show(observer, {Stage::Cognition, -1, -1, st.cognition.data(), nullptr, 1, D, D});
  out.timing.llm_ms = ms_since(t0);

  // --- action head: DDIM with CFG ---
  t0 = Clock::now();
  const int C = ah.chunk_size, A = ah.action_dim;
  st.cond.resize(size_t(ah.batch()) * ah.hidden_size);
  const Dit& dit = pm.dit_of(im);
  dit.condition(st.cognition.data(), obs.state.data(), st.cond.data(), st.dit, pool);
  const size_t n = size_t(C) * A;
  // ε from the seed's stream (drawn even when the observation brings its own,
  // so DDPM's step noise always starts at the same place in the stream); the
  // sampler starts from noise_scale · ε.
  Rng rng(obs.seed);
  st.noise.resize(n);
  for (float& v : st.noise) v = float(rng.normal());
  if (!obs.noise.empty()) st.noise = obs.noise;
  st.sample.resize(n);
  for (size_t i = 0; i < n; ++i) st.sample[i] = st.noise[i] * ah.noise_scale;
  // DDPM draws fresh noise at every step: from the same seed's stream, after the start.
  st.step_noise.clear();
  if (im.schedule.ddpm) {
    if (!obs.step_noise.empty()) {
      st.step_noise = obs.step_noise;
    } else {
      st.step_noise.resize(im.schedule.timesteps.size() * n);
      for (float& v : st.step_noise) v = float(rng.normal());
    }
  }
  show(observer, {Stage::Noise, -1, -1, st.noise.data(), nullptr, C, A, A});
  if (!st.step_noise.empty())
    show(observer, {Stage::StepNoise, -1, -1, st.step_noise.data(), nullptr, int(im.schedule.timesteps.size()),
                    int(n), int(n)});
  {
    HeadObserver head(st.dit, observer);
    sample_actions(dit, im.schedule, st.cond.data(), st.sample.data(), st.step_noise.data(), pm.schedule,
                   st.sample.data(), st.dit, pool);
  }
  out.horizon = C;
  out.dim = A;
  out.actions.resize(size_t(C) * A);
  show(observer, {Stage::ActionsSample, -1, -1, st.sample.data(), nullptr, C, A, A});
  st.normalized = st.sample;
  postprocess_actions(stats, cfg.action_norm.gripper_index, C, A, st.normalized.data(), out.actions.data());
  show(observer, {Stage::ActionsNormalized, -1, -1, st.normalized.data(), nullptr, C, A, A});
  show(observer, {Stage::Actions, -1, -1, out.actions.data(), nullptr, C, A, A});
  // A robot must never receive NaN or infinite actions as a result.
  for (size_t i = 0; i < out.actions.size(); ++i)
    if (!std::isfinite(out.actions[i]))
      throw Error("the policy produced a non-finite action (step " + std::to_string(i / size_t(A)) + ", dimension " +
                  std::to_string(i % size_t(A)) + " is " + std::to_string(out.actions[i]) +
                  "); the weights or the config hold non-finite or extreme values");
  out.timing.action_head_ms = ms_since(t0);
  out.timing.total_ms = ms_since(t_start);
  return out;
}

}  // namespace evla
