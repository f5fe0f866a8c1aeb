// evla — acceleration plans. A plan is data the model consults on every
// forward pass: which language-model sub-layers run, how many visual tokens
// continue after a given layer, which denoising steps of the action head
// recompute, and the arithmetic (fp32, BF16, int8) of each module and LM
// layer. The default Plan{} is the dense model as its checkpoint stores it.
#pragma once
#include <string>
#include <vector>

namespace evla {

// The arithmetic of a layer's matrix products.
// Stored: as the checkpoint stores the weights — fp32 products for fp32
//   weights, BF16 products for bfloat16 ones, fp32 for IEEE half (widened).
// F32: fp32 products; 16-bit weights are widened exactly as they are read.
// BF16: activations rounded to bfloat16, bfloat16 weights (used in place, or
//   rounded once from fp32), sums in fp32 — vdpbf16ps where the CPU has
//   AVX-512 BF16, the same numbers more slowly elsewhere.
// Int8: one scale per output row; with AVX2 the products run in integer
//   arithmetic on activations quantized per row to 7 bits, elsewhere
//   weight-only (activations fp32).
enum class WeightType { Stored, F32, BF16, Int8 };

struct LayerPlan {
  bool attn = true;         // run the attention sub-layer
  bool mlp = true;          // run the MLP sub-layer
  float mlp_keep = 1.0f;    // fraction of MLP channels kept (1 = all)
  std::vector<int> mlp_channels;  // kept channel indices when mlp_keep < 1
  WeightType weights = WeightType::Stored;
};

enum class TokenMethod { EfficientVla, FastV, Random };

// Whose attention ranks the visual tokens: every token after the visual ones
// (the prompt, as EfficientVLA and FastV do), or the cognition token alone
// (the last one, whose output is all the action head reads).
enum class TokenQueries { Text, Cognition };

struct TokenPlan {
  bool enabled = false;
  int after_layer = 2;       // layers [0, after_layer) see every token
  int keep = 0;              // K_final: visual tokens kept (over all images)
  int key = 4;               // K_key: top-relevance tokens
  float alpha = 0.5f;        // share of the remaining budget filled by relevance
  TokenMethod method = TokenMethod::EfficientVla;
  TokenQueries queries = TokenQueries::Text;
  unsigned long long seed = 0;  // for TokenMethod::Random
  // Merge instead of drop (ToMe's averaging): each visual token not kept is
  // averaged into the kept one whose hidden state is most similar (cosine),
  // so later layers see K tokens that carry all of them.
  bool merge = false;
};

struct CachePlan {
  int interval = 1;          // 1 = recompute every step (dense)
  int start = 0;             // steps 0..start always recompute (and refresh the cache)
  std::vector<int> blocks;   // DiT blocks that reuse; empty = all blocks
  // > 0: adaptive refresh (TeaCache-like). A step after `start` reuses while
  // the head's input (its tokens after embedding) has changed by less than
  // this since the last refresh — relative L1 change from step to step,
  // summed — and at least every `interval` steps it refreshes anyway.
  float threshold = 0;
};

// Each module's arithmetic. llm is the default of every LM layer whose own
// LayerPlan::weights is Stored; Int8 is for LM layers only.
struct PrecisionPlan {
  WeightType vision = WeightType::Stored;
  WeightType projector = WeightType::Stored;
  WeightType llm = WeightType::Stored;
  WeightType action_head = WeightType::Stored;
  bool is_stored() const;
};

struct Plan {
  int version = 1;
  std::string name = "dense";
  std::vector<LayerPlan> llm;  // empty = every layer dense; else one per layer
  TokenPlan tokens;
  CachePlan cache;
  PrecisionPlan precision;
  // The precision LM layer l runs at (its own, else precision.llm).
  WeightType layer_precision(int l) const;

  bool is_dense() const;
  // Parses a plan JSON file and checks it against nothing model-specific;
  // Policy::set_plan() checks it against the model. Throws evla::Error.
  static Plan load(const std::string& path);
  static Plan from_json(const std::string& text, const std::string& source);
  std::string to_json() const;
};

}  // namespace evla
