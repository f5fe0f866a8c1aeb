// Layer-wise int8 quantization: a plan marks LM layers whose matrices run from
// int8 copies (one scale per output row), so the layers the analysis finds
// important can keep fp32. Where the CPU has AVX2 the products run in integer
// arithmetic on activations quantized per row (kernels::linear_int8_dynamic);
// elsewhere weight-only (dequantized blocks through BLAS).
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "model/llama.h"

namespace evla {

// Gives the matrices `layer`'s forward pass runs (fused q|k|v, o, fused
// gate|up, down) int8 copies (in the form the kernel that runs them reads),
// stored in `codes` and `scales` (which must outlive the layer). A layer
// without attention or MLP keeps what it lacks.
void quantize_layer_int8(LlamaLayer& layer, std::deque<std::vector<int8_t>>& codes,
                         std::deque<std::vector<float>>& scales);

}  // namespace evla
