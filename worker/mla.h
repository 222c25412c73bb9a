// Multi-head latent attention (DeepSeek-V3) for one layer on the CPU, in the absorbed form serving
// systems use: the KV cache holds per token only c = norm(kv_a(h))[:kv_lora_rank] ‖ rope(k_pe)
// (kv_lora_rank + qk_rope_head_dim floats, shared by all heads); each head's q_nope is taken into
// latent space through W_UK (q_lat = W_UKᵀ q_nope), scores are q_lat·c + q_pe·k_pe, the weighted sum
// of latents goes out through W_UV. Mathematically the attention transformers computes with keys and
// values expanded per head (softmax in f32, the same scale); only the order of float additions
// differs. Prefill and decode take the same path.
#pragma once

#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/kernels.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace shoal {

struct MlaWorkspace {
  std::vector<float> q_a, q, latent, q_lat, out_lat, head_out;
};

// attn[T, heads·v_head_dim] from the layer's normalised input h[T, H]; writes the step's latents into
// `kv` at slots[T]. cos/sin: the step's RopeTable over qk_rope_head_dim. tables: the rows' block tables.
void MlaAttention(const ModelConfig& config, const LayerWeights& layer, const float* h, int64_t T,
                  const int32_t* positions, const float* cos, const float* sin, const kernels::PagedKvLayer& kv,
                  const int64_t* slots, const int32_t* const* tables, MlaWorkspace& ws, float* attn,
                  ThreadPool& pool);

}  // namespace shoal
