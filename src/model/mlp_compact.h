// MLP channel compression: a Llama layer whose SwiGLU keeps only some
// intermediate channels (rows of gate/up, columns of down).
#pragma once
#include <deque>
#include <vector>

#include "model/llama.h"

namespace evla {

// Returns a copy of `layer` whose MLP uses only `channels`; the compacted
// matrices are stored in `storage`, or in `storage16` when the layer's are
// 16-bit (both must outlive the result).
LlamaLayer compact_mlp(const LlamaLayer& layer, const std::vector<int>& channels,
                       std::deque<std::vector<float>>& storage, std::deque<std::vector<uint16_t>>& storage16);

}  // namespace evla
