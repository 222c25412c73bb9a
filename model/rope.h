// RoPE inverse frequencies for a model, as transformers' modeling_rope_utils computes them for the
// rope types shoal supports (default, linear, yarn, llama3). The attention factor (yarn's mscale)
// is in config.rope.attention_factor.
#pragma once

#include <vector>

#include "model/model_config.h"

namespace shoal {

// head_dim/2 inverse frequencies, in f32 as transformers keeps them.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace shoal
