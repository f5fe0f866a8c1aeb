#include "model/token_select.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/rng.h"

namespace evla {

void text_to_visual_attention(const QkView& a, int visual_begin, int visual_count,
                              TokenQueries queries, float* relevance) {
  std::fill(relevance, relevance + visual_count, 0.f);
  const int group = a.Hq / a.Hkv;
  std::vector<double> p(a.T);
  const int visual_end = visual_begin + visual_count;
  const int first = queries == TokenQueries::Cognition ? std::max(a.T - 1, visual_end) : visual_end;
  for (int i = first; i < a.T; ++i) {
    for (int h = 0; h < a.Hq; ++h) {
      const float* qi = a.q + size_t(i) * a.ldq + h * a.hd;
      double mx = -1e300;
      for (int j = 0; j <= i; ++j) {
        const float* kj = a.k + size_t(j) * a.ldk + (h / group) * a.hd;
        double s = 0;
        for (int d = 0; d < a.hd; ++d) s += double(qi[d]) * kj[d];
        p[j] = s * a.scale;
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int j = 0; j < visual_count; ++j)
        relevance[j] += float(p[visual_begin + j] / sum / a.Hq);
    }
  }
}

namespace {

// Indices sorted by descending score; ties keep the lower index first.
std::vector<int> by_score(const float* score, int n) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) { return score[x] > score[y]; });
  return idx;
}

double cosine(const float* a, const float* b, int D) {
  double ab = 0, aa = 0, bb = 0;
  for (int d = 0; d < D; ++d) {
    ab += double(a[d]) * b[d];
    aa += double(a[d]) * a[d];
    bb += double(b[d]) * b[d];
  }
  return ab / (std::sqrt(aa * bb) + 1e-12);
}

}  // namespace

std::vector<int> select_visual_tokens(const TokenPlan& plan, const float* relevance,
                                      const float* features, int n_visual, int D, int ld) {
  const int K = std::min(plan.keep, n_visual);
  std::vector<int> kept;
  if (plan.method == TokenMethod::Random) {
    std::vector<int> idx(n_visual);
    std::iota(idx.begin(), idx.end(), 0);
    Rng rng(plan.seed);
    for (int i = 0; i < K; ++i) std::swap(idx[i], idx[i + int(rng.next_u64() % (n_visual - i))]);
    kept.assign(idx.begin(), idx.begin() + K);
  } else if (plan.method == TokenMethod::FastV) {
    auto order = by_score(relevance, n_visual);
    kept.assign(order.begin(), order.begin() + K);
  } else {
    // EfficientVLA: (a) the K_key most relevant; (b) α of the remaining budget
    // to the next most relevant; (c) the rest to the tokens least similar to
    // the key set (largest 1 − max cosine to any key token).
    auto order = by_score(relevance, n_visual);
    const int n_key = std::min(plan.key, K);
    const int n_aug = K - n_key;
    const int n_rel = int(std::lround(plan.alpha * n_aug));
    kept.assign(order.begin(), order.begin() + n_key + n_rel);
    std::vector<int> rest(order.begin() + n_key + n_rel, order.end());
    std::vector<float> diversity(rest.size());
    for (size_t r = 0; r < rest.size(); ++r) {
      double max_cos = -1.0;
      for (int k = 0; k < n_key; ++k)
        max_cos = std::max(max_cos, cosine(features + size_t(rest[r]) * ld,
                                           features + size_t(order[k]) * ld, D));
      diversity[r] = float(1.0 - max_cos);
    }
    auto div_order = by_score(diversity.data(), int(rest.size()));
    for (int i = 0; i < K - n_key - n_rel; ++i) kept.push_back(rest[div_order[i]]);
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

void merge_dropped_tokens(const std::vector<int>& kept, float* x, int n_visual, int D, int ld) {
  std::vector<char> is_kept(size_t(n_visual), 0);
  for (int k : kept) is_kept[size_t(k)] = 1;
  // Every assignment from the rows as they are, before any is averaged.
  std::vector<double> sum(kept.size() * size_t(D));
  std::vector<int> count(kept.size(), 1);
  for (size_t t = 0; t < kept.size(); ++t)
    for (int d = 0; d < D; ++d) sum[t * D + d] = x[size_t(kept[t]) * ld + d];
  for (int j = 0; j < n_visual; ++j) {
    if (is_kept[size_t(j)]) continue;
    size_t best = 0;
    double best_cos = -2.0;
    for (size_t t = 0; t < kept.size(); ++t) {
      const double c = cosine(x + size_t(j) * ld, x + size_t(kept[t]) * ld, D);
      if (c > best_cos) best_cos = c, best = t;
    }
    for (int d = 0; d < D; ++d) sum[best * D + d] += x[size_t(j) * ld + d];
    ++count[best];
  }
  for (size_t t = 0; t < kept.size(); ++t)
    for (int d = 0; d < D; ++d) x[size_t(kept[t]) * ld + d] = float(sum[t * D + d] / count[t]);
}

}  // namespace evla
