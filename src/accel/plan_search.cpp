#include "accel/plan_search.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "accel/plan_builder.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "evla/error.h"
#include "model/model_impl.h"

namespace evla::accel {

namespace {

enum Op : uint8_t { Keep, NoAttn, NoMlp, NoBlock };
constexpr float kSparsity[] = {0.f, 0.125f, 0.25f, 0.375f, 0.5f};
constexpr int kSparsityLevels = 5;
constexpr float kAlpha[] = {0.25f, 0.5f, 0.75f};
constexpr int kMaxStart = 3;  // cache.start genes: steps 0..3 always recompute

struct Genome {
  std::vector<uint8_t> op, sparsity, int8;  // per LM layer
  int tokens = 0;                           // index into Space::token_levels; 0 keeps all
  int after = 1, alpha = 1, method = 0, queries = 0;
  int interval = 1, start = 0;
  bool bf16[3] = {false, false, false};     // vision, projector, action head
};

// The plan space of one model and analysis, and the moves within it.
struct Space {
  const AnalysisReport& a;
  const Model& model;
  const ModelConfig& cfg;
  int L, nv, steps, max_after;
  std::vector<int> token_levels;

  Space(const AnalysisReport& an, const Model& m)
      : a(an), model(m), cfg(m.impl().cfg), L(cfg.llm.num_layers), nv(m.impl().visual_tokens()),
        steps(cfg.action_head.steps()), max_after(std::max(1, std::min(L - 1, L / 2))) {
    token_levels.push_back(nv);  // the ladder's budgets among them
    for (int in32 : {24, 20, 16, 14, 12, 10, 8, 7, 6, 4, 2}) {
      const int k = nv * in32 / 32;
      if (k >= 1 && k < token_levels.back()) token_levels.push_back(k);
    }
  }

  Genome dense() const {
    Genome g;
    g.op.assign(size_t(L), Keep);
    g.sparsity.assign(size_t(L), 0);
    g.int8.assign(size_t(L), 0);
    g.after = std::min(2, max_after);
    return g;
  }

  // The genome nearest to a plan (the ladder's rungs are exactly representable).
  Genome from(const Plan& p) const {
    Genome g = dense();
    auto nearest = [](const float* v, int n, float x) {
      int best = 0;
      for (int i = 1; i < n; ++i) best = std::fabs(v[i] - x) < std::fabs(v[best] - x) ? i : best;
      return best;
    };
    for (int l = 0; l < L && !p.llm.empty(); ++l) {
      const LayerPlan& lp = p.llm[size_t(l)];
      g.op[size_t(l)] = lp.attn ? (lp.mlp ? Keep : NoMlp) : (lp.mlp ? NoAttn : NoBlock);
      g.sparsity[size_t(l)] = uint8_t(nearest(kSparsity, kSparsityLevels, 1.f - lp.mlp_keep));
    }
    for (int l = 0; l < L; ++l) g.int8[size_t(l)] = p.layer_precision(l) == WeightType::Int8;
    if (p.tokens.enabled) {
      g.tokens = int(token_levels.size()) - 1;
      for (int i = 0; i < int(token_levels.size()); ++i)
        if (token_levels[size_t(i)] >= p.tokens.keep) g.tokens = i;
      g.after = std::clamp(p.tokens.after_layer, 1, max_after);
      g.alpha = nearest(kAlpha, 3, p.tokens.alpha);
      g.method = p.tokens.method == TokenMethod::FastV;
      g.queries = p.tokens.queries == TokenQueries::Cognition;
    }
    g.interval = std::clamp(p.cache.interval, 1, steps);
    g.start = std::min(p.cache.start, std::min(steps - 1, kMaxStart));
    g.bf16[0] = p.precision.vision == WeightType::BF16;
    g.bf16[1] = p.precision.projector == WeightType::BF16;
    g.bf16[2] = p.precision.action_head == WeightType::BF16;
    normalize(g);
    return g;
  }

  bool has_attn(int l) const { return cfg.llm.layers[size_t(l)].attn; }
  static bool attn_kept(uint8_t op) { return op == Keep || op == NoMlp; }
  static bool mlp_kept(uint8_t op) { return op == Keep || op == NoAttn; }

  // The rules a plan must obey, restored after every move: the layer whose
  // attention ranks the visual tokens keeps it, and some LM layer runs.
  void normalize(Genome& g) const {
    if (g.tokens > 0) {
      if (!has_attn(g.after - 1)) {  // a checkpoint without attention there: the nearest layer with it
        int best = -1;
        for (int k = 1; k <= max_after; ++k)
          if (has_attn(k - 1) && (best < 0 || std::abs(k - g.after) < std::abs(best - g.after))) best = k;
        if (best < 0) g.tokens = 0; else g.after = best;
      }
      if (g.tokens > 0) {
        uint8_t& op = g.op[size_t(g.after - 1)];
        if (op == NoAttn) op = Keep;
        if (op == NoBlock) op = NoMlp;
      }
    }
    bool any = false;
    for (int l = 0; l < L; ++l)
      any |= (attn_kept(g.op[size_t(l)]) && has_attn(l)) || (mlp_kept(g.op[size_t(l)]) && cfg.llm.layers[size_t(l)].mlp);
    if (!any) g.op[0] = Keep;
    if (g.interval <= 1) g.start = 0;  // the start means nothing without reuse
  }

  Plan plan(const Genome& g) const {
    Plan p;
    p.name = "search";
    p.llm.assign(size_t(L), LayerPlan{});
    bool any_llm = false;
    for (int l = 0; l < L; ++l) {
      LayerPlan& lp = p.llm[size_t(l)];
      lp.attn = attn_kept(g.op[size_t(l)]);
      lp.mlp = mlp_kept(g.op[size_t(l)]);
      if (lp.mlp) keep_top_channels(a.mlp_channels[size_t(l)], kSparsity[g.sparsity[size_t(l)]], lp);
      if (g.int8[size_t(l)]) lp.weights = WeightType::Int8;
      any_llm |= !lp.attn || !lp.mlp || lp.mlp_keep < 1.f || lp.weights != WeightType::Stored;
    }
    if (!any_llm) p.llm.clear();
    if (g.tokens > 0) {
      TokenPlan& t = p.tokens;
      t.enabled = true;
      t.keep = token_levels[size_t(g.tokens)];
      t.key = std::min(4, t.keep);
      t.alpha = kAlpha[g.alpha];
      t.after_layer = g.after;
      t.method = g.method ? TokenMethod::FastV : TokenMethod::EfficientVla;
      t.queries = g.queries ? TokenQueries::Cognition : TokenQueries::Text;
    }
    p.cache.interval = g.interval;
    p.cache.start = g.start;
    const WeightType bf[2] = {WeightType::Stored, WeightType::BF16};
    p.precision.vision = bf[g.bf16[0]];
    p.precision.projector = bf[g.bf16[1]];
    p.precision.action_head = bf[g.bf16[2]];
    return p;
  }

  double speedup(const Genome& g) const { return estimated_speedup(a, model, plan(g)); }

  // One random change of one gene.
  void mutate(Genome& g, Rng& rng) const {
    auto pick = [&](int n) { return int(rng.next_u64() % uint64_t(n)); };
    const int l = pick(L);
    switch (pick(10)) {
      case 0: g.op[size_t(l)] = uint8_t((g.op[size_t(l)] + 1 + pick(3)) % 4); break;
      case 1: g.sparsity[size_t(l)] = uint8_t(std::clamp(g.sparsity[size_t(l)] + (pick(2) ? 1 : -1), 0, kSparsityLevels - 1)); break;
      case 2: g.int8[size_t(l)] ^= 1; break;
      case 3: g.tokens = std::clamp(g.tokens + (pick(2) ? 1 : -1) * (1 + pick(2)), 0, int(token_levels.size()) - 1); break;
      case 4: g.after = 1 + pick(max_after); break;
      case 5: g.alpha = pick(3); break;
      case 6: (pick(2) ? g.method : g.queries) ^= 1; break;
      case 7: g.interval = std::clamp(g.interval + (pick(2) ? 1 : -1), 1, steps); break;
      case 8: g.start = pick(std::min(steps - 1, kMaxStart) + 1); break;
      default: g.bf16[pick(3)] ^= 1; break;
    }
    normalize(g);
  }

  // One random move toward less work (compress) or more (relax); false when
  // the chosen kind of move has nowhere to go.
  bool shift(Genome& g, Rng& rng, bool compress) const {
    auto pick = [&](int n) { return int(rng.next_u64() % uint64_t(n)); };
    const int l = pick(L);
    uint8_t& op = g.op[size_t(l)];
    bool moved = true;
    switch (pick(6)) {
      case 0:
        if (compress) op = op == Keep ? uint8_t(pick(2) ? NoAttn : NoMlp) : uint8_t(NoBlock);
        else op = op == NoBlock ? uint8_t(pick(2) ? NoAttn : NoMlp) : uint8_t(Keep);
        break;
      case 1: {
        uint8_t& s = g.sparsity[size_t(l)];
        moved = compress ? s < kSparsityLevels - 1 : s > 0;
        if (moved) s = uint8_t(s + (compress ? 1 : -1));
        break;
      }
      case 2: g.int8[size_t(l)] = compress; break;
      case 3: {
        const int t = g.tokens + (compress ? 1 : -1);
        moved = t >= 0 && t < int(token_levels.size());
        if (moved) g.tokens = t;
        break;
      }
      case 4: {
        const int i = g.interval + (compress ? 1 : -1);
        moved = i >= 1 && i <= steps;
        if (moved) g.interval = i;
        break;
      }
      default: g.bf16[pick(3)] = compress; break;
    }
    normalize(g);
    return moved;
  }

  // Compresses until the estimate reaches the target, then relaxes where it
  // stays there (a plan that does less than it may loses accuracy for
  // nothing), at most `relax` moves: an offspring stays near its parent.
  // False when no sequence of moves got there.
  bool fit(Genome& g, double target, Rng& rng, int relax) const {
    double s = speedup(g);
    for (int i = 0; i < 50 * L + 200 && s < target; ++i)
      if (shift(g, rng, true)) s = speedup(g);
    if (s < target) return false;
    for (int i = 0, done = 0; i < 4 * L + 20 && done < relax; ++i) {
      Genome h = g;
      if (shift(h, rng, false) && speedup(h) >= target) g = std::move(h), ++done;
    }
    return true;
  }

  // A random feasible plan: random settings of the genes that cost nothing,
  // then random moves into the budget.
  bool random(Genome& g, double target, Rng& rng) const {
    g = dense();
    g.after = 1 + int(rng.next_u64() % uint64_t(max_after));
    g.alpha = int(rng.next_u64() % 3);
    g.method = int(rng.next_u64() % 2);
    g.queries = int(rng.next_u64() % 2);
    g.start = int(rng.next_u64() % uint64_t(std::min(steps - 1, kMaxStart) + 1));
    normalize(g);
    return fit(g, target, rng, 1 << 20);
  }
};

// Scores plans on calibration frames against the dense actions, one Policy
// per thread; every sum runs in frame order, so any thread count gives the
// same numbers.
class Scorer {
 public:
  Scorer(std::shared_ptr<const Model> model, const std::vector<Observation>& frames, int threads, int loss_steps)
      : frames_(frames), pool_(threads) {
    for (int i = 0; i < threads; ++i) workers_.push_back(std::make_unique<Policy>(model, PolicyOptions{1}));
    dim_ = size_t(model->action_dim());
    values_ = size_t(loss_steps) * dim_;
    dense_.resize(frames.size());
    pool_.run(int(frames.size()), [&](int i) {
      std::vector<float> a = workers_[size_t(i) % workers_.size()]->infer(frames_[size_t(i)]).actions;
      a.resize(std::min(a.size(), values_));
      dense_[size_t(i)] = std::move(a);
    });
  }

  // The loss of each plan on the frames `subset` (indices): the NMSE of
  // each action dimension, averaged over the dimensions. Each dimension
  // counts alike whatever its units: on the shipped policy the gripper's
  // swing is 20-30× the motions', and one NMSE over all values measures
  // little but the gripper.
  std::vector<double> losses(const std::vector<Plan>& plans, const std::vector<int>& subset) {
    std::vector<double> out(plans.size());
    pool_.run(int(plans.size()), [&](int k) {
      Policy& p = *workers_[size_t(k) % workers_.size()];
      p.set_plan(plans[size_t(k)]);
      std::vector<double> num(dim_, 0.0), den(dim_, 0.0);
      for (int i : subset) {
        const std::vector<float> a = p.infer(frames_[size_t(i)]).actions;
        const std::vector<float>& d = dense_[size_t(i)];
        for (size_t j = 0; j < d.size(); ++j)
          num[j % dim_] += (double(a[j]) - d[j]) * (double(a[j]) - d[j]), den[j % dim_] += double(d[j]) * d[j];
      }
      double loss = 0;
      for (size_t j = 0; j < dim_; ++j) loss += den[j] > 0 ? num[j] / den[j] : num[j];
      // A plan that produces NaN is the worst, not the best.
      out[size_t(k)] = std::isfinite(loss) ? loss / double(dim_) : INFINITY;
    });
    inferences += int64_t(plans.size()) * int64_t(subset.size());
    return out;
  }

  int64_t inferences = 0;

 private:
  const std::vector<Observation>& frames_;
  ThreadPool pool_;
  std::vector<std::unique_ptr<Policy>> workers_;
  std::vector<std::vector<float>> dense_;
  size_t dim_ = 1, values_ = 0;
};

// What a plan removes, not how finely: which sub-layers run, the token
// budget and where it applies, the cache interval.
std::string structure(const Plan& p) {
  std::string s;
  for (const LayerPlan& lp : p.llm) s += char('0' + 2 * lp.attn + lp.mlp);
  s += "|" + std::to_string(p.tokens.enabled ? p.tokens.keep : 0) + "@" + std::to_string(p.tokens.after_layer);
  return s + "|" + std::to_string(p.cache.interval);
}

std::vector<SearchPoint> pareto_front(std::vector<SearchPoint> pts) {
  std::sort(pts.begin(), pts.end(), [](const SearchPoint& x, const SearchPoint& y) {
    return x.speedup != y.speedup ? x.speedup > y.speedup : x.loss < y.loss;
  });
  std::vector<SearchPoint> front;
  for (SearchPoint& p : pts)  // fastest first: a point joins when it is more accurate than every faster one
    if (front.empty() || p.loss < front.back().loss) front.push_back(std::move(p));
  return front;
}

}  // namespace

std::vector<double> calibration_loss(std::shared_ptr<const Model> model, const std::vector<Observation>& calibration,
                                     const std::vector<Plan>& plans, int loss_steps, int threads) {
  if (calibration.empty()) throw Error("the calibration loss needs at least one observation");
  for (const Plan& p : plans) model->validate(p);
  Scorer scorer(model, calibration, threads, loss_steps ? loss_steps : std::max(1, model->action_steps()));
  std::vector<int> all(calibration.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = int(i);
  return scorer.losses(plans, all);
}

std::string plan_summary(const Plan& p) {
  int blocks = 0, attn = 0, mlp = 0, sparse = 0, int8 = 0;
  for (const LayerPlan& lp : p.llm) {
    blocks += !lp.attn && !lp.mlp;
    attn += !lp.attn && lp.mlp;
    mlp += lp.attn && !lp.mlp;
    sparse += lp.mlp && lp.mlp_keep < 1.f;
    int8 += (lp.attn || lp.mlp) && p.layer_precision(int(&lp - p.llm.data())) == WeightType::Int8;
  }
  std::vector<std::string> parts;
  auto add = [&](int n, const std::string& what) { if (n) parts.push_back(std::to_string(n) + " " + what); };
  add(blocks, "blocks dropped");
  add(attn, "attention dropped");
  add(mlp, "MLP dropped");
  add(sparse, "MLPs sparse");
  add(int8, "layers int8");
  if (p.tokens.enabled)
    parts.push_back(std::to_string(p.tokens.keep) + " tokens after layer " + std::to_string(p.tokens.after_layer) +
                    (p.tokens.method == TokenMethod::FastV ? " (fastv" : " (efficientvla") +
                    (p.tokens.queries == TokenQueries::Cognition ? ", cognition)" : ")"));
  if (p.cache.interval > 1)
    parts.push_back("head every " + std::to_string(p.cache.interval) + " steps from " + std::to_string(p.cache.start));
  std::string bf;
  if (p.precision.vision == WeightType::BF16) bf += " vision";
  if (p.precision.projector == WeightType::BF16) bf += " projector";
  if (p.precision.action_head == WeightType::BF16) bf += " head";
  if (!bf.empty()) parts.push_back("BF16" + bf);
  std::string out;
  for (const std::string& s : parts) out += (out.empty() ? "" : "; ") + s;
  return out.empty() ? "dense" : out;
}

SearchResult search_plan(const AnalysisReport& a, std::shared_ptr<const Model> model,
                         const std::vector<Observation>& calibration, const SearchOptions& o, Progress* progress,
                         const std::vector<Observation>& validation) {
  if (calibration.empty()) throw Error("plan search needs at least one calibration observation");
  if (!(std::isfinite(o.target_speedup) && o.target_speedup > 1))
    throw Error("plan search: the target speed-up must be above 1 and finite");
  if (o.budget < 1 || o.budget > 100000) throw Error("plan search: the budget must be in [1, 100000]");
  if (o.offspring < 1 || o.offspring > 1000 || o.survivors < 1 || o.survivors > o.offspring)
    throw Error("plan search: offspring must be in [1, 1000] and survivors in [1, offspring]");
  if (o.finalists < 1 || o.finalists > 1000) throw Error("plan search: finalists must be in [1, 1000]");
  if (o.threads < 1 || o.threads > ThreadPool::kMaxThreads) throw Error("plan search: bad thread count");
  const int horizon = model->action_horizon();
  if (o.loss_steps < 0 || o.loss_steps > horizon)
    throw Error("plan search: loss steps must be in [0, " + std::to_string(horizon) + "]");
  const Space space(a, *model);
  if (int(a.llm.size()) != space.L || int(a.mlp_channels.size()) != space.L)
    throw Error("analysis report has " + std::to_string(a.llm.size()) + " LM layers but the model has " +
                std::to_string(space.L) + ": it was made for another model");

  const int n = int(calibration.size());
  const int64_t budget = int64_t(o.budget) * n;
  Scorer scorer(model, calibration, o.threads, o.loss_steps ? o.loss_steps : std::max(1, model->action_steps()));
  std::vector<int> all(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) all[size_t(i)] = i;
  Rng rng(Rng(o.seed).next_u64());  // not seed·step: splitmix streams of nearby seeds would overlap

  std::set<std::string> scored;  // plan JSON of every plan scored on every frame
  std::vector<SearchPoint> archive;
  SearchPoint best;
  best.loss = INFINITY;
  // The parents: the `kParents` best plans scored so far (an elite rather
  // than one best plan keeps the search out of the first local minimum).
  constexpr size_t kParents = 4;
  std::vector<std::pair<double, Genome>> parents;
  // Scores on every frame those of `gs` not scored yet; the best join the parents.
  auto score_all = [&](const std::vector<Genome>& gs) {
    std::vector<Plan> plans;
    std::vector<const Genome*> fresh;
    for (const Genome& g : gs) {
      Plan p = space.plan(g);
      // Claimed before scoring: a duplicate in `gs` is scored once.
      if (!scored.insert(p.to_json()).second) continue;
      plans.push_back(std::move(p));
      fresh.push_back(&g);
    }
    const std::vector<double> loss = scorer.losses(plans, all);
    for (size_t k = 0; k < plans.size(); ++k) {
      SearchPoint pt{plans[k], space.speedup(*fresh[k]), loss[k]};
      if (pt.loss < best.loss) best = pt;
      if (std::isfinite(pt.loss)) {
        parents.emplace_back(pt.loss, *fresh[k]);
        std::stable_sort(parents.begin(), parents.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
        if (parents.size() > kParents) parents.pop_back();
      }
      archive.push_back(std::move(pt));
    }
    if (progress) progress->advance(int64_t(plans.size()) * n);
  };
  auto fresh_random = [&](int count) {
    std::vector<Genome> gs;
    for (int tries = 0; int(gs.size()) < count && tries < 20 * count; ++tries) {
      Genome g;
      if (space.random(g, o.target_speedup, rng) && !scored.count(space.plan(g).to_json())) gs.push_back(g);
    }
    return gs;
  };

  // Where both the search and the random baseline begin: precision first
  // (every LM layer int8 and the other modules BF16, moved into the
  // budget), and the plans the caller gives (the ladder's, say).
  {
    std::vector<Genome> starts;
    Genome g = space.dense();
    g.int8.assign(size_t(space.L), 1);
    g.bf16[0] = g.bf16[1] = g.bf16[2] = true;
    if (space.fit(g, o.target_speedup, rng, 0)) starts.push_back(g);
    for (const Plan& p : o.start) {
      g = space.from(p);
      if (space.fit(g, o.target_speedup, rng, 0)) starts.push_back(g);
    }
    score_all(starts);
  }
  if (o.random) {
    while (scorer.inferences + n <= budget || archive.empty()) {
      const std::vector<Genome> gs = fresh_random(int(std::min<int64_t>(o.threads, std::max<int64_t>(1, (budget - scorer.inferences) / n))));
      if (gs.empty()) break;
      score_all(gs);
    }
  } else {
    // A few random plans to start from, then generations: offspring of the
    // best few so far, screened on a fresh quarter of the frames, the
    // survivors scored on all of them.
    score_all(fresh_random(std::max(2, o.survivors)));  // and a few random ones
    const int screen = std::max(1, n / 4);
    while (!parents.empty() && scorer.inferences + int64_t(o.offspring) * screen + int64_t(o.survivors) * n <= budget) {
      std::vector<Genome> kids;
      std::vector<Plan> plans;
      std::set<std::string> keys;  // this generation's plans, by JSON
      for (int tries = 0; int(kids.size()) < o.offspring && tries < 20 * o.offspring; ++tries) {
        Genome g = parents[size_t(rng.next_u64() % parents.size())].second;
        for (int m = 0; m == 0 || (m < 4 && rng.uniform() < 0.5); ++m) space.mutate(g, rng);
        if (!space.fit(g, o.target_speedup, rng, 2)) continue;
        Plan p = space.plan(g);
        std::string key = p.to_json();
        if (scored.count(key) || !keys.insert(std::move(key)).second) continue;
        kids.push_back(std::move(g));
        plans.push_back(std::move(p));
      }
      if (kids.empty()) break;  // the neighbourhood is exhausted
      std::vector<int> subset = all;  // a fresh random quarter of the frames
      for (int i = 0; i < screen; ++i) std::swap(subset[size_t(i)], subset[size_t(i) + rng.next_u64() % uint64_t(n - i)]);
      subset.resize(size_t(screen));
      std::sort(subset.begin(), subset.end());
      const std::vector<double> quick = scorer.losses(plans, subset);
      if (progress) progress->advance(int64_t(plans.size()) * screen);
      std::vector<size_t> order(kids.size());
      for (size_t k = 0; k < order.size(); ++k) order[k] = k;
      std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return quick[x] < quick[y]; });
      std::vector<Genome> screened;
      for (size_t k = 0; k < order.size() && int(screened.size()) < o.survivors; ++k) screened.push_back(kids[order[k]]);
      score_all(screened);
    }
  }
  if (!archive.empty() && !std::isfinite(best.loss))
    throw Error("plan search: every plan it scored gave non-finite actions");
  if (archive.empty())
    throw Error("no plan reaches an estimated " + std::to_string(o.target_speedup) +
                "× speed-up for this model; ask for less");
  SearchResult r;
  // Finalists of different structure (the best of each), so that a check
  // on other frames or in closed loop chooses between kinds of plan rather
  // than between near-copies of one.
  std::vector<SearchPoint> ranked = archive, finalists;
  std::stable_sort(ranked.begin(), ranked.end(), [](const SearchPoint& x, const SearchPoint& y) { return x.loss < y.loss; });
  std::vector<std::string> kinds;
  for (const SearchPoint& pt : ranked) {
    const std::string kind = structure(pt.plan);
    if (std::find(kinds.begin(), kinds.end(), kind) != kinds.end()) continue;
    kinds.push_back(kind);
    finalists.push_back(pt);
    if (int(finalists.size()) == o.finalists) break;
  }
  if (!validation.empty()) {
    std::vector<Plan> plans;
    for (const SearchPoint& f : finalists) plans.push_back(f.plan);
    const std::vector<double> v = calibration_loss(model, validation, plans, o.loss_steps, o.threads);
    for (size_t k = 0; k < finalists.size(); ++k) finalists[k].validation_loss = v[k];
    std::stable_sort(finalists.begin(), finalists.end(),
                     [](const SearchPoint& x, const SearchPoint& y) { return x.validation_loss < y.validation_loss; });
    best = finalists.front();
  }
  r.finalists = finalists;
  r.best = best;
  r.inferences = scorer.inferences;
  r.scored = int(archive.size());
  r.front = pareto_front(std::move(archive));
  return r;
}

}  // namespace evla::accel
