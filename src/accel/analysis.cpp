#include "accel/analysis.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "core/json_reader.h"
#include "core/progress.h"
#include "model/model_impl.h"

namespace evla::accel {

namespace {

// Σ over rows of cosine(a_row, b_row).
double sum_row_cosines(const float* a, const float* b, int rows, int D) {
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    double ab = 0, aa = 0, bb = 0;
    for (int d = 0; d < D; ++d) {
      const double x = a[size_t(r) * D + d], y = b[size_t(r) * D + d];
      ab += x * y, aa += x * x, bb += y * y;
    }
    total += ab / (std::sqrt(aa * bb) + 1e-30);
  }
  return total;
}

struct CosSum {
  double sum = 0;
  int64_t n = 0;
  void add(double s, int64_t rows) { sum += s, n += rows; }
  double importance() const { return n ? 1.0 - sum / double(n) : 0.0; }
};

// The LM's stages: cosine similarity of each sub-layer's input and output,
// MLP channel magnitudes, text→visual attention.
struct LlmProbe {
  int L = 0;
  std::vector<CosSum> block, attn, mlp, cognition;
  std::vector<std::vector<double>> act_abs;  // Σ|a| per channel
  std::vector<int64_t> act_rows;
  std::vector<std::vector<double>> vis_att;
  std::vector<int> vis_samples;
  std::vector<float> in, mid;

  explicit LlmProbe(int layers)
      : L(layers), block(layers), attn(layers), mlp(layers), cognition(layers), act_abs(layers), act_rows(layers),
        vis_att(layers), vis_samples(layers) {}
  static bool wants(Stage s) {
    return s == Stage::LlmHidden || s == Stage::LlmAfterAttention || s == Stage::LlmLayerOutput ||
           s == Stage::LlmMlpActivation || s == Stage::LlmVisualAttention;
  }
  void on(const StageOutput& o) {
    switch (o.stage) {
      case Stage::LlmHidden:
        if (o.index < L) in.assign(o.data, o.data + size_t(o.rows) * o.cols);  // index L: the final output
        break;
      case Stage::LlmAfterAttention: after_attention(o.index, o.data, o.rows, o.cols); break;
      case Stage::LlmLayerOutput: layer_output(o.index, o.data, o.rows, o.cols); break;
      case Stage::LlmMlpActivation: mlp_activation(o.index, o.data, o.rows, o.cols, o.ld); break;
      case Stage::LlmVisualAttention: visual_attention(o.index, o.data, o.cols); break;
      default: break;
    }
  }
  void after_attention(int l, const float* x, int T, int D) {
    attn[l].add(sum_row_cosines(in.data(), x, T, D), T);
    mid.assign(x, x + size_t(T) * D);
  }
  void layer_output(int l, const float* x, int T, int D) {
    mlp[l].add(sum_row_cosines(mid.data(), x, T, D), T);
    block[l].add(sum_row_cosines(in.data(), x, T, D), T);
    const size_t last = size_t(T - 1) * D;
    cognition[l].add(sum_row_cosines(in.data() + last, x + last, 1, D), 1);
  }
  void mlp_activation(int l, const float* a, int T, int F, int ld) {
    auto& acc = act_abs[l];
    acc.resize(size_t(F), 0.0);
    for (int t = 0; t < T; ++t)
      for (int f = 0; f < F; ++f) acc[size_t(f)] += std::fabs(a[size_t(t) * ld + f]);
    act_rows[l] += T;
  }
  void visual_attention(int l, const float* r, int n) {
    auto& acc = vis_att[l];
    acc.resize(size_t(n), 0.0);
    for (int j = 0; j < n; ++j) acc[size_t(j)] += r[j];
    vis_samples[l]++;
  }
};

// The action head's stages: each block's sub-layers, and how their outputs
// change from step to step.
struct DitProbe {
  int steps, blocks;
  std::vector<std::vector<CosSum>> block_cos, attn_cos, mlp_cos;
  std::vector<std::vector<double>> attn_change, mlp_change;
  std::vector<std::vector<int>> change_n;
  std::vector<std::vector<float>> prev_attn, prev_mlp;  // per block, from the previous step
  std::vector<float> tmp, x_in, a_out;

  DitProbe(int s, int b)
      : steps(s), blocks(b), block_cos(s, std::vector<CosSum>(b)), attn_cos(s, std::vector<CosSum>(b)),
        mlp_cos(s, std::vector<CosSum>(b)), attn_change(s, std::vector<double>(b)),
        mlp_change(s, std::vector<double>(b)), change_n(s, std::vector<int>(b)), prev_attn(b),
        prev_mlp(b) {}

  static double rel_change(const std::vector<float>& prev, const float* cur, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) num += (cur[i] - prev[i]) * double(cur[i] - prev[i]), den += double(prev[i]) * prev[i];
    return std::sqrt(num / (den + 1e-30));
  }

  static bool wants(Stage s) { return s == Stage::DitBlockInput || s == Stage::DitAttention || s == Stage::DitMlp; }
  // A block's input, attention output and MLP output arrive in that order.
  void on(const StageOutput& o) {
    const size_t n = size_t(o.rows) * o.cols;
    if (o.stage == Stage::DitBlockInput) x_in.assign(o.data, o.data + n);
    if (o.stage == Stage::DitAttention) a_out.assign(o.data, o.data + n);
    if (o.stage == Stage::DitMlp) block(o.index, o.block, x_in.data(), a_out.data(), o.data, o.rows, o.cols);
  }
  void block(int s, int b, const float* x, const float* a, const float* m, int rows, int H) {
    const size_t n = size_t(rows) * H;
    tmp.assign(x, x + n);  // residual after attention
    for (size_t i = 0; i < n; ++i) tmp[i] += a[i];
    attn_cos[s][b].add(sum_row_cosines(x, tmp.data(), rows, H), rows);
    std::vector<float> out(tmp);
    for (size_t i = 0; i < n; ++i) out[i] += m[i];
    mlp_cos[s][b].add(sum_row_cosines(tmp.data(), out.data(), rows, H), rows);
    block_cos[s][b].add(sum_row_cosines(x, out.data(), rows, H), rows);
    if (s > 0 && prev_attn[b].size() == n) {
      attn_change[s][b] += rel_change(prev_attn[b], a, n);
      mlp_change[s][b] += rel_change(prev_mlp[b], m, n);
      change_n[s][b]++;
    }
    prev_attn[b].assign(a, a + n);
    prev_mlp[b].assign(m, m + n);
  }
};

// DiT blocks have no cognition or ablation scores.
nlohmann::json scores_json(const SubLayerScores& s, bool lm_layer) {
  nlohmann::json j = {{"block", s.block}, {"attn", s.attn}, {"mlp", s.mlp}};
  if (lm_layer) {
    j["cognition"] = s.cognition;
    j["ablation"] = s.ablation;
  }
  return j;
}

std::vector<int> ascending(const std::vector<SubLayerScores>& v, double SubLayerScores::*field) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a].*field < v[b].*field; });
  return idx;
}

}  // namespace

std::vector<int> AnalysisReport::least_important_blocks() const { return ascending(llm, &SubLayerScores::block); }
std::vector<int> AnalysisReport::least_important_for_cognition() const {
  return ascending(llm, &SubLayerScores::cognition);
}
std::vector<int> AnalysisReport::greedy_order() const {
  std::vector<int> order = greedy_drop_order;
  if (order.empty()) throw Error("the analysis report has no greedy drop order: rerun `evla analyze`");
  for (int l : least_important_by_ablation())
    if (std::find(order.begin(), order.end(), l) == order.end()) order.push_back(l);
  return order;
}
int AnalysisReport::best_token_after() const {
  if (token_after_nmse.empty())
    throw Error("the analysis report has no token-selection ablation: rerun `evla analyze`");
  int best = -1;
  for (int k = 0; k < int(token_after_nmse.size()); ++k)
    if (token_after_nmse[size_t(k)] >= 0 && (best < 0 || token_after_nmse[size_t(k)] < token_after_nmse[size_t(best)]))
      best = k;
  if (best < 0) throw Error("the analysis report measured no token selection (no early layer has attention)");
  return best + 1;
}

std::vector<int> AnalysisReport::least_important_by_ablation() const {
  for (const auto& s : llm)
    if (s.ablation < 0) throw Error("the analysis report has no ablation scores: rerun `evla analyze`");
  return ascending(llm, &SubLayerScores::ablation);
}
std::vector<int> AnalysisReport::least_important_attention() const { return ascending(llm, &SubLayerScores::attn); }
std::vector<int> AnalysisReport::least_important_mlp() const { return ascending(llm, &SubLayerScores::mlp); }

AnalysisReport analyze(std::shared_ptr<const Model> model, const std::vector<Observation>& calibration,
                       int threads, Progress* progress) {
  if (calibration.empty()) throw Error("analysis needs at least one calibration observation");
  const ModelImpl& im = model->impl();
  const int L = im.cfg.llm.num_layers;
  const int steps = im.cfg.action_head.steps(), blocks = im.cfg.action_head.num_layers;
  Policy policy(model, PolicyOptions{threads});
  struct Probes : Observer {
    LlmProbe llm;
    DitProbe dit;
    Probes(int L, int steps, int blocks) : llm(L), dit(steps, blocks) {}
    bool wants(Stage s) const override { return LlmProbe::wants(s) || DitProbe::wants(s); }
    void on(const StageOutput& o) override { LlmProbe::wants(o.stage) ? llm.on(o) : dit.on(o); }
  } probes(L, steps, blocks);
  LlmProbe& llm = probes.llm;
  DitProbe& dit = probes.dit;
  for (const Observation& obs : calibration) {
    policy.infer(obs, &probes);
    if (progress) progress->advance(1);
  }

  // Ablation: how far the actions move from dense (same seeds) when the
  // blocks in `drop` are skipped, over the first `frames` calibration frames.
  std::vector<std::vector<float>> dense_actions;
  for (const Observation& obs : calibration) dense_actions.push_back(policy.infer(obs).actions);
  auto nmse_of = [&](const Plan& p, size_t frames) {
    policy.set_plan(p);
    double num = 0, den = 0;
    for (size_t i = 0; i < frames; ++i) {
      const std::vector<float> a = policy.infer(calibration[i]).actions;
      for (size_t k = 0; k < a.size(); ++k) {
        const double d = dense_actions[i][k];
        num += (a[k] - d) * (a[k] - d);
        den += d * d;
      }
    }
    return den > 0 ? num / den : 0.0;
  };
  auto nmse_with = [&](const std::vector<bool>& drop, size_t frames) {
    Plan p;
    p.llm.assign(size_t(L), LayerPlan{});
    for (int l = 0; l < L; ++l)
      if (drop[size_t(l)]) p.llm[size_t(l)].attn = p.llm[size_t(l)].mlp = false;
    return nmse_of(p, frames);
  };
  auto has_block = [&](int l) { return im.cfg.llm.layers[size_t(l)].attn || im.cfg.llm.layers[size_t(l)].mlp; };
  // Each block skipped alone, on every frame.
  std::vector<double> ablation(static_cast<size_t>(L), -1.0);
  std::vector<bool> dropped(static_cast<size_t>(L), false);
  for (int l = 0; l < L; ++l) {
    if (!has_block(l)) continue;
    dropped[size_t(l)] = true;
    ablation[size_t(l)] = nmse_with(dropped, calibration.size());
    dropped[size_t(l)] = false;
  }
  // Greedy joint ablation on (at most) the first 100 frames: blocks that are
  // each harmless alone can still hurt together.
  std::vector<int> greedy;
  const size_t frames = std::min<size_t>(calibration.size(), 100);
  for (int k = 0; k < L / 2; ++k) {
    int best = -1;
    double best_score = 0;
    for (int l = 0; l < L; ++l) {
      if (dropped[size_t(l)] || !has_block(l)) continue;
      dropped[size_t(l)] = true;
      const double score = nmse_with(dropped, frames);
      dropped[size_t(l)] = false;
      if (best < 0 || score < best_score) best = l, best_score = score;
    }
    if (best < 0) break;
    dropped[size_t(best)] = true;
    greedy.push_back(best);
  }
  // Token selection after each early layer, a quarter of the visual tokens
  // kept, on the same frames as the greedy ablation.
  std::vector<double> token_after;
  const int n_visual = im.visual_tokens();
  for (int k = 1; n_visual >= 4 && k <= std::min(L - 1, std::max(1, L / 2)); ++k) {
    if (!im.cfg.llm.layers[size_t(k - 1)].attn) {  // a pruned layer has no attention to rank by
      token_after.push_back(-1);
      continue;
    }
    Plan p;
    p.tokens.enabled = true;
    p.tokens.keep = n_visual / 4;
    p.tokens.key = std::min(4, p.tokens.keep);
    p.tokens.after_layer = k;
    token_after.push_back(nmse_of(p, frames));
  }
  policy.set_plan(Plan{});
  // Timing, without the probes (which slow the LM severalfold) and on one
  // thread (as `evla bench -t 1` and `evla eval` time; the pool's hand-offs
  // change the ratios on these small products): the dense policy and the
  // int8 LM on the same frames, one policy each, inference by inference
  // interleaved so that both see the same machine.
  Plan int8_all;
  int8_all.llm.assign(size_t(L), LayerPlan{});
  for (int l = 0; l < L; ++l)
    if (has_block(l)) int8_all.llm[size_t(l)].weights = WeightType::Int8;
  Plan bf16_rest;  // every module but the LM with BF16 products
  bf16_rest.precision.vision = bf16_rest.precision.projector = bf16_rest.precision.action_head = WeightType::BF16;
  Policy dense_policy(model, PolicyOptions{1}), int8_policy(model, PolicyOptions{1}), bf16_policy(model, PolicyOptions{1});
  int8_policy.set_plan(int8_all);
  bf16_policy.set_plan(bf16_rest);
  dense_policy.infer(calibration[0]);  // warm-up
  int8_policy.infer(calibration[0]);
  bf16_policy.infer(calibration[0]);
  Timing sum, bf16;
  double int8_llm_ms = 0;
  auto add = [](Timing& a, const Timing& t) {
    a.vision_ms += t.vision_ms, a.projector_ms += t.projector_ms, a.llm_ms += t.llm_ms;
    a.action_head_ms += t.action_head_ms, a.total_ms += t.total_ms;
  };
  for (size_t i = 0; i < frames; ++i) {
    add(sum, dense_policy.infer(calibration[i]).timing);
    int8_llm_ms += int8_policy.infer(calibration[i]).timing.llm_ms;
    add(bf16, bf16_policy.infer(calibration[i]).timing);
  }

  AnalysisReport r;
  r.int8_llm_ratio = sum.llm_ms > 0 ? int8_llm_ms / sum.llm_ms : 1.0;
  auto ratio = [](double planned, double dense) { return dense > 0 ? planned / dense : 1.0; };
  r.bf16_ratio = {ratio(bf16.vision_ms, sum.vision_ms), ratio(bf16.projector_ms, sum.projector_ms), 1.0,
                  ratio(bf16.action_head_ms, sum.action_head_ms), 1.0};
  r.model = model->name();
  r.samples = int(calibration.size());
  r.visual_tokens = im.visual_tokens();
  const double n = double(frames);
  r.dense_ms = {sum.vision_ms / n, sum.projector_ms / n, sum.llm_ms / n, sum.action_head_ms / n, sum.total_ms / n};
  r.flops = model->flops();
  r.greedy_drop_order = greedy;
  r.token_after_nmse = token_after;
  for (int l = 0; l < L; ++l) {
    r.llm.push_back({llm.block[l].importance(), llm.attn[l].importance(), llm.mlp[l].importance(),
                     llm.cognition[l].importance(), ablation[size_t(l)]});
    // Channel score: mean |activation| × L2 norm of the channel's down_proj column.
    const Linear& down = im.llm->layers()[size_t(l)].down;  // empty when the checkpoint has no MLP here
    std::vector<float> score(static_cast<size_t>(down.in), 0.f);
    if (!llm.act_abs[l].empty()) {
      std::vector<double> norm(size_t(down.in), 0.0);
      std::vector<float> row(size_t(down.in));
      for (int d = 0; d < down.out; ++d) {  // row by row: the matrix may be 16-bit
        weight_rows(down, d, 1, row.data());
        for (int c = 0; c < down.in; ++c) norm[size_t(c)] += double(row[size_t(c)]) * row[size_t(c)];
      }
      for (int c = 0; c < down.in; ++c)
        score[size_t(c)] = float(llm.act_abs[l][size_t(c)] / double(llm.act_rows[l]) * std::sqrt(norm[size_t(c)]));
    }
    r.mlp_channels.push_back(score);
    std::vector<float> att;
    for (double v : llm.vis_att[l]) att.push_back(float(v / std::max(1, llm.vis_samples[l])));
    r.visual_attention.push_back(att);
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<SubLayerScores> row;
    std::vector<double> ac, mc;
    for (int b = 0; b < blocks; ++b) {
      row.push_back({dit.block_cos[s][b].importance(), dit.attn_cos[s][b].importance(), dit.mlp_cos[s][b].importance()});
      const int k = std::max(1, dit.change_n[s][b]);
      ac.push_back(dit.attn_change[s][b] / k);
      mc.push_back(dit.mlp_change[s][b] / k);
    }
    r.dit.push_back(row);
    r.dit_attn_change.push_back(ac);
    r.dit_mlp_change.push_back(mc);
  }
  return r;
}

nlohmann::json AnalysisReport::to_json() const {
  nlohmann::json j;
  j["evla_analysis"] = 1;
  j["model"] = model;
  j["samples"] = samples;
  j["visual_tokens"] = visual_tokens;
  j["dense_ms"] = {{"vision", dense_ms.vision_ms}, {"projector", dense_ms.projector_ms}, {"llm", dense_ms.llm_ms},
                   {"action_head", dense_ms.action_head_ms}, {"total", dense_ms.total_ms}};
  j["int8_llm_ratio"] = int8_llm_ratio;
  j["bf16_ratio"] = {{"vision", bf16_ratio.vision_ms}, {"projector", bf16_ratio.projector_ms},
                     {"action_head", bf16_ratio.action_head_ms}};
  j["flops"] = {{"vision", flops.vision}, {"projector", flops.projector}, {"llm", flops.llm},
                {"action_head", flops.action_head}};
  for (const auto& s : llm) j["llm_importance"].push_back(scores_json(s, true));
  j["mlp_channel_scores"] = mlp_channels;
  j["visual_attention"] = visual_attention;
  for (const auto& row : dit) {
    nlohmann::json jr = nlohmann::json::array();
    for (const auto& s : row) jr.push_back(scores_json(s, false));
    j["dit_importance"].push_back(jr);
  }
  j["dit_attn_change"] = dit_attn_change;
  j["greedy_drop_order"] = greedy_drop_order;
  j["token_after_nmse"] = token_after_nmse;
  j["dit_mlp_change"] = dit_mlp_change;
  return j;
}

AnalysisReport AnalysisReport::from_json(const nlohmann::json& j, const std::string& source) {
  JsonReader r(j, source);
  if (r.integer("evla_analysis") != 1) r.fail("evla_analysis", "unsupported version");
  AnalysisReport a;
  try {
    a.model = r.string("model");
    a.samples = int(r.integer("samples"));
    a.visual_tokens = int(r.integer("visual_tokens"));
    const auto& d = j.at("dense_ms");
    a.dense_ms = {d.at("vision"), d.at("projector"), d.at("llm"), d.at("action_head"), d.at("total")};
    a.int8_llm_ratio = j.value("int8_llm_ratio", 1.0);
    if (!(a.int8_llm_ratio > 0)) r.fail("int8_llm_ratio", "must be a positive ratio");
    if (r.has("bf16_ratio")) {  // absent in analyses made before BF16 products
      JsonReader b = r.child("bf16_ratio");
      b.only_keys({"vision", "projector", "action_head"});
      a.bf16_ratio.vision_ms = b.number("vision", 1.0);
      a.bf16_ratio.projector_ms = b.number("projector", 1.0);
      a.bf16_ratio.action_head_ms = b.number("action_head", 1.0);
      for (double v : {a.bf16_ratio.vision_ms, a.bf16_ratio.projector_ms, a.bf16_ratio.action_head_ms})
        if (!(v > 0 && v < 1e3)) r.fail("bf16_ratio", "must be positive ratios");
    }
    const auto& f = j.at("flops");
    a.flops = {f.at("vision"), f.at("projector"), f.at("llm"), f.at("action_head")};
    for (const auto& s : j.at("llm_importance"))
      a.llm.push_back({s.at("block"), s.at("attn"), s.at("mlp"), s.value("cognition", double(s.at("block"))),
                       s.value("ablation", -1.0)});
    a.mlp_channels = j.at("mlp_channel_scores").get<std::vector<std::vector<float>>>();
    a.visual_attention = j.at("visual_attention").get<std::vector<std::vector<float>>>();
    for (const auto& row : j.at("dit_importance")) {
      std::vector<SubLayerScores> v;
      for (const auto& s : row) v.push_back({s.at("block"), s.at("attn"), s.at("mlp")});
      a.dit.push_back(v);
    }
    a.dit_attn_change = j.at("dit_attn_change").get<std::vector<std::vector<double>>>();
    a.dit_mlp_change = j.at("dit_mlp_change").get<std::vector<std::vector<double>>>();
    a.greedy_drop_order = j.value("greedy_drop_order", std::vector<int>{});
    a.token_after_nmse = j.value("token_after_nmse", std::vector<double>{});
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": malformed analysis report: " + e.what());
  }
  if (a.mlp_channels.size() != a.llm.size() || a.visual_attention.size() != a.llm.size())
    throw Error(source + ": per-layer arrays disagree in length");
  for (int l : a.greedy_drop_order)
    if (l < 0 || l >= int(a.llm.size())) throw Error(source + ": greedy_drop_order names a layer that does not exist");
  if (a.token_after_nmse.size() >= a.llm.size())
    throw Error(source + ": token_after_nmse has " + std::to_string(a.token_after_nmse.size()) +
                " entries, more than the layers a selection can follow");
  return a;
}

AnalysisReport AnalysisReport::load(const std::string& path) { return from_json(read_json_file(path), path); }

}  // namespace evla::accel
