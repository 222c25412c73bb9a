// The Qwen3-MoE shape the decode benchmarks time (bench/decode_bench.cc on CPU, bench/gpu_decode_bench.cc
// on a GPU): hidden 2048, 16 query / 4 KV heads of 128, q/k norm, top-8 routing, bf16. Layers, experts
// and expert width set the size; nothing else differs between the two benchmarks.
#pragma once

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

}  // namespace shoal::bench
