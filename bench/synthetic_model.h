// The Qwen3-MoE shape the decode benchmarks time (bench/decode_bench.cc on CPU, bench/gpu_decode_bench.cc
// on a GPU): hidden 2048, 16 query / 4 KV heads of 128, q/k norm, top-8 routing, bf16. Layers, experts
// and expert width set the size; nothing else differs between the two benchmarks.
#pragma once

#include <cmath>

#include "model/model_config.h"

namespace shoal::bench {

inline ModelConfig SyntheticMoeConfig(int layers, int experts, int moe_intermediate) {
  ModelConfig c;
  c.arch = Architecture::kQwen3Moe;
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.num_layers = layers;
  c.num_heads = 16;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.max_position_embeddings = 4096;
  c.qk_norm = true;
  c.num_experts = experts;
  c.num_experts_per_tok = 8;
  c.moe_intermediate_size = moe_intermediate;
  c.norm_topk_prob = true;
  c.layer_is_moe.assign(layers, true);
  c.torch_dtype = DType::kBF16;
  return c;
}

// DeepSeek-V3's shape scaled down for one CPU: MLA (q_lora 512, kv_lora 256, heads 16 of nope 64 +
// rope 32, v 64), grouped sigmoid routing (8 groups, 4 kept, top-8), one shared expert, the first
// layer dense; weights bf16 or block-scaled FP8 (128 × 128) as the official checkpoints ship.
inline ModelConfig SyntheticMlaConfig(int layers, int experts, int moe_intermediate) {
  ModelConfig c;
  c.arch = Architecture::kDeepseekV3;
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.num_layers = layers;
  c.num_heads = 16;
  c.num_kv_heads = 16;
  c.max_position_embeddings = 4096;
  c.mla = true;
  c.q_lora_rank = 512;
  c.kv_lora_rank = 256;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.head_dim = c.qk_rope_head_dim;
  c.rope_interleaved = true;
  c.attention_scale = 1.0 / std::sqrt(96.0);
  c.num_experts = experts;
  c.num_experts_per_tok = 8;
  c.moe_intermediate_size = moe_intermediate;
  c.intermediate_size = 4 * moe_intermediate;
  c.shared_expert_intermediate_size = moe_intermediate;
  c.router_grouped_sigmoid = true;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  c.norm_topk_prob = true;
  c.layer_is_moe.assign(layers, true);
  c.layer_is_moe[0] = false;
  c.fp8_block_rows = c.fp8_block_cols = 128;
  c.torch_dtype = DType::kBF16;
  return c;
}

}  // namespace shoal::bench
