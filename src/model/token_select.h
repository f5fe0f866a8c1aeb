// Visual-token selection (EfficientVLA's task-relevance + diversity rule, and
// the FastV / random baselines), plus the text→visual attention score it
// ranks by.
#pragma once
#include <vector>

#include "evla/plan.h"

namespace evla {

struct QkView {
  const float* q;  // T rows, stride ldq, Hq heads of hd (already rotated)
  const float* k;  // T rows, stride ldk, Hkv heads of hd
  int ldq, ldk, T, Hq, Hkv, hd;
  float scale;
};

// relevance[j] = Σ over the query rows of the head-averaged causal softmax
// attention from each to visual key visual_begin + j. Query rows: every row
// after the visual tokens (Text), or the last row alone (Cognition).
void text_to_visual_attention(const QkView& a, int visual_begin, int visual_count,
                              TokenQueries queries, float* relevance);

// Indices (ascending, in [0, n_visual)) of the visual tokens to keep.
// features: n_visual rows of D (stride ld), the hidden states the diversity
// term compares.
std::vector<int> select_visual_tokens(const TokenPlan& plan, const float* relevance,
                                      const float* features, int n_visual, int D, int ld);

// Token merging (TokenPlan::merge): every visual token not in `kept` is
// averaged into the kept token whose row is most similar (cosine; ties to
// the lower index). x: n_visual rows of D (stride ld), changed in place; the
// kept rows become the means of what they absorbed.
void merge_dropped_tokens(const std::vector<int>& kept, float* x, int n_visual, int D, int ld);

}  // namespace evla
