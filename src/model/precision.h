// A plan's per-layer precision (WeightType): the LM layers whose products run
// in fp32, BF16 or int8 rather than as their weights are stored, so the
// layers the analysis finds important can keep full precision.
//
// Int8: copies with one scale per output row. Where the CPU has AVX2 the products run in integer
// arithmetic on activations quantized per row (kernels::linear_int8_dynamic);
// elsewhere weight-only (dequantized blocks through BLAS).
#pragma once
#include <cstdint>

#include "model/llama.h"

namespace evla {

// Gives the matrices `layer`'s forward pass runs (fused q|k|v, o, fused
// gate|up, down) int8 copies (in the form the kernel that runs them reads),
// codes and scales stored in `arrays` (which must outlive the layer). A layer
// without attention or MLP keeps what it lacks.
void quantize_layer_int8(LlamaLayer& layer, DerivedArrays& arrays);

// set_precision (weights.h) for every matrix product of an LM layer (the
// fused q|k|v and gate|up ones from their parts); F32 or BF16.
void set_layer_precision(LlamaLayer& layer, WeightType precision, DerivedArrays& arrays);

}  // namespace evla
