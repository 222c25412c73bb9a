// The MoE block of one layer on local experts: router → top-k → rows grouped by expert → SiLU-gated
// expert FFNs → weighted sum back in token order (+ the sigmoid-gated shared expert of Qwen2-MoE).
//
// Grouping by expert is the layout the expert-parallel exchange will carry between ranks: dispatch
// moves each group's rows to the rank that owns the expert, combine brings the outputs back.
#pragma once

#include <cstdint>
#include <vector>

#include "common/thread_pool.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace shoal {

// Scratch reused across steps so the decode loop does not allocate.
struct MoeWorkspace {
  std::vector<float> router_logits, topk_weights, rows_in, rows_out, ffn_scratch, shared_out, shared_gate;
  std::vector<int32_t> topk_ids;
  std::vector<int32_t> expert_offsets;  // [E + 1] prefix sums of rows per expert
  std::vector<int32_t> row_token;       // grouped row → source token
  std::vector<int32_t> row_slot;        // grouped row → which of the token's top-k choices
  std::vector<uint8_t> expert_used;     // [E] this step
};

// out[T, H] = MoE(h[T, H]). Also sets ws.expert_used. Every expert the router picks must be present.
void RunMoeLayer(const ModelConfig& config, const LayerWeights& layer, const float* h, int64_t num_tokens,
                 float* out, MoeWorkspace& ws, ThreadPool& pool);

}  // namespace shoal
