// `evla convert cogact`: a released CogACT checkpoint (the files a CogACT
// model repository holds) into an evla model directory.
//
// The weights keep CogACT's own flat names (group + "." + state-dict key),
// which is what the runtime reads; every size comes from the tensor shapes,
// and what shapes cannot tell (head counts, eps, image normalisation, sampler
// settings) from presets keyed by the names in CogACT's config.json
// (`vla.base_vlm`, `action_model_type`), overridable with `--set`.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace evla::convert {

struct CogactConvertOptions {
  // A torch.save checkpoint (.pt), a .safetensors file, or a directory of
  // safetensors (model.safetensors or an index) with the same flat names.
  std::string checkpoint;
  std::string config;     // CogACT's config.json (optional: presets from shapes alone)
  std::string stats;      // dataset_statistics.json (optional: actions stay normalised)
  std::string tokenizer;  // tokenizer.model, copied into the output (optional)
  // "" keeps each tensor's type; "f32", "bf16" or "f16" converts every
  // floating tensor; "int8" quantizes the LM layers' matrices (int8 codes, one
  // fp32 scale per row in "<name>_scale") and makes the rest bf16.
  std::string dtype;
  std::vector<std::string> sets;  // "path.to.key=value" overrides of the written config
  bool use_ema = false;           // the EMA action head (group ema_diffusion) instead of action_model
  std::string output;             // created; must not exist or be an empty directory
  uint64_t shard_bytes = uint64_t(4) << 30;
};

struct CogactConvertReport {
  nlohmann::json config;  // as written
  int64_t tensors = 0, params = 0;
  uint64_t bytes = 0;
  std::vector<std::string> skipped_groups;  // top-level groups not converted
  std::vector<std::string> notes;           // presets applied, defaults assumed
};

// Progress: called once per tensor written, with its name and running totals.
using ConvertProgress = std::function<void(const std::string& name, int64_t done, int64_t total)>;

CogactConvertReport convert_cogact(const CogactConvertOptions& opts, const ConvertProgress& progress = {});

}  // namespace evla::convert
