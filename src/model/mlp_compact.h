// MLP channel compression: a Llama layer whose SwiGLU keeps only some
// intermediate channels (rows of gate/up, columns of down).
#pragma once
#include <vector>

#include "model/llama.h"

namespace evla {

// Returns a copy of `layer` whose MLP uses only `channels`; the compacted
// matrices (16-bit where the layer's are) are stored in `arrays`, which must
// outlive the result.
LlamaLayer compact_mlp(const LlamaLayer& layer, const std::vector<int>& channels, DerivedArrays& arrays);

}  // namespace evla
