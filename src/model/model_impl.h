// What a loaded Model holds (immutable, shared), a plan compiled against it
// (immutable, shared), and what a Policy holds (per-caller buffers, thread
// pool). Internal; the public API is include/evla/evla.h.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "evla/evla.h"
#include "io/tokenizer.h"
#include "model/config.h"
#include "model/dit.h"
#include "model/llama.h"
#include "model/projector.h"
#include "model/sampler.h"
#include "model/smolvla.h"
#include "model/vit.h"
#include "model/weights.h"

namespace evla {

struct ModelImpl;

// A plan compiled against a model: the LM layers it runs and the weights it
// derives for them (compacted MLPs, int8 codes and scales). Immutable once
// built; every Policy on the same model and plan shares one copy, and the
// derived arrays are kept on disk (PlanCache) for the next process.
struct PlannedModel {
  Plan plan;
  Schedule schedule;  // the plan resolved against the model
  std::vector<LlamaLayer> llm_layers;
  // Copies of the modules whose precision the plan sets (else empty / null:
  // the model's own run). Copies share the model's weights; only the BF16
  // matrices they derive live here (in `derived`).
  std::vector<Vit> encoders;
  std::unique_ptr<Projector> projector;
  std::unique_ptr<Dit> dit;
  const std::vector<Vit>& encoders_of(const ModelImpl& m) const;
  const Projector& projector_of(const ModelImpl& m) const;
  const Dit& dit_of(const ModelImpl& m) const;
  // Storage behind compacted layers, int8 codes and scales, BF16 copies:
  // derived afresh or replayed from the plan cache.
  std::unique_ptr<DerivedArrays> derived;
  std::string cache_status;  // what the plan cache did (PlanCache::status)
};

struct ModelImpl {
  std::string dir;
  std::string cache_dir;            // LoadOptions::weight_cache_dir
  double plan_cache_min_seconds = 0;  // LoadOptions::plan_cache_min_seconds
  ModelConfig cfg;
  std::unique_ptr<WeightStore> weights;
  std::vector<Vit> encoders;
  std::unique_ptr<Projector> projector;
  std::unique_ptr<Llama> llm;
  std::unique_ptr<Dit> dit;
  DiffusionSchedule schedule;
  std::unique_ptr<io::Tokenizer> tokenizer;
  // A SmolVLA policy (LeRobot's layout) instead of the CogACT modules above.
  std::unique_ptr<SmolVla> smolvla;

  // Token ids of the whole text part of the sequence: BOS, prompt, space
  // piece, cognition token.
  std::vector<int> prompt_ids(const std::string& instruction) const;
  // The plan compiled against this model: built on first use and shared by
  // every caller while any holds it (the plan must have been validated).
  std::shared_ptr<const PlannedModel> planned(const Plan& plan) const;
  // How many compilations of a plan derived weights for this model (afresh
  // or from the plan cache): sharing keeps it at one per plan while in use.
  int derivations() const { return derivations_; }

 private:
  // Compiles `plan` into `pm` with `arrays` (fresh, or replaying a file).
  void compile(const Plan& plan, PlannedModel& pm, std::unique_ptr<DerivedArrays> arrays) const;
  mutable std::mutex planned_mu_;
  mutable std::atomic<int> derivations_{0};
  mutable std::map<std::string, std::weak_ptr<const PlannedModel>> planned_;  // by the plan's JSON

 public:
  int visual_tokens() const { return cfg.vision.num_images * cfg.vision.tokens_per_image(); }
};

struct PolicyState {
  explicit PolicyState(int threads) : pool(threads) {}
  ThreadPool pool;
  std::shared_ptr<const PlannedModel> planned;  // shared with every Policy on the same plan

  // Buffers reused across inferences.
  std::vector<Image> resized;
  std::vector<float> features, visual, x, cognition, cond, noise, step_noise, sample, normalized;
  std::vector<int> ids, positions;
  VitScratch vit;
  std::vector<float> proj_scratch;
  LlamaScratch llm;
  DitScratch dit;
  SmolVlaScratch smolvla;

  // f(v) on every buffer above, a container of buffers after its items; S is
  // PolicyState or const PolicyState. Memory accounting and release share it.
  template <typename S, typename F>
  static void each_buffer(S& s, F&& f) {
    for (auto& img : s.resized) f(img.rgb);
    f(s.resized);
    for (auto* v : {&s.features, &s.visual, &s.x, &s.cognition, &s.cond, &s.noise, &s.step_noise, &s.sample,
                    &s.normalized, &s.proj_scratch})
      f(*v);
    f(s.ids), f(s.positions);
    for (auto* v : {&s.vit.pixels, &s.vit.patches, &s.vit.x, &s.vit.h, &s.vit.qkv, &s.vit.attn, &s.vit.mlp,
                    &s.vit.attn_scratch})
      f(*v);
    for (auto* v : {&s.llm.h, &s.llm.qkv, &s.llm.attn, &s.llm.gate_up, &s.llm.attn_scratch, &s.llm.relevance,
                    &s.llm.rope_cos, &s.llm.rope_sin, &s.llm.x_next})
      f(*v);
    f(s.llm.pos_next), f(s.llm.keep);
    for (auto* v : {&s.dit.x, &s.dit.x_in, &s.dit.h, &s.dit.qkv, &s.dit.attn, &s.dit.mlp, &s.dit.attn_scratch,
                    &s.dit.tfreq, &s.dit.temb, &s.dit.out, &s.dit.sample, &s.dit.batch, &s.dit.eps, &s.dit.guided,
                    &s.dit.state_emb, &s.dit.previous_input})
      f(*v);
    for (auto* c : {&s.dit.cached_attn, &s.dit.cached_mlp}) {
      for (auto& v : *c) f(v);
      f(*c);
    }
    auto& m = s.smolvla;
    for (auto* v : {&m.rgb, &m.pixels, &m.features, &m.shuffled, &m.prefix, &m.x, &m.h, &m.q, &m.attn, &m.gate_up,
                    &m.attn_scratch, &m.self_cos, &m.self_sin, &m.cross_cos, &m.cross_sin, &m.noise, &m.sample,
                    &m.suffix, &m.velocity, &m.time_in, &m.vit.pixels, &m.vit.patches, &m.vit.x, &m.vit.h,
                    &m.vit.qkv, &m.vit.attn, &m.vit.mlp, &m.vit.attn_scratch})
      f(*v);
    for (auto* c : {&m.keys, &m.values}) {
      for (auto& v : *c) f(v);
      f(*c);
    }
    f(m.ids), f(m.positions);
  }
  void release_buffers();  // the buffers above, freed
};

}  // namespace evla
