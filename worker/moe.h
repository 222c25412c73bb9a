// The MoE block of one layer on one rank of an expert-parallel group: router → top-k → dispatch (rows
// to the ranks holding their experts) → this rank's expert FFNs on the rows it received, grouped by
// expert → combine (weighted sums back in token order) → + the shared expert (sigmoid-gated in
// Qwen2-MoE, always on in Llama 4). Llama 4's router scales each expert's input by its sigmoid score
// instead of weighting its output. A single process is the group of one (comm::MakeSelfGroup): the same code path.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/expert_exchange.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/kernels.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace shoal {

// Scratch reused across steps so the decode loop does not allocate.
struct MoeWorkspace {
  std::vector<float> router_logits, topk_weights, ffn_scratch, shared_out, shared_gate;
  std::vector<kernels::MatMulJob> gate_up_jobs, down_jobs;  // one layer's routed experts (reused)
  std::vector<float> scaled_rows;       // Llama 4: [T·K, H] rows scaled by their router scores
  std::vector<int32_t> topk_ids;
  std::vector<uint8_t> expert_used;     // [E] experts this rank ran this step
  // [num_experts] rows this rank ran through each expert (by its id), summed over layers and steps:
  // the per-expert load /metrics reports. Indexed by id, not by local slot, so that counts stay
  // meaningful when a rebalance changes which experts the rank holds.
  std::vector<uint64_t> expert_rows_total;
  // [num_layers × num_experts] the same rows by layer (dense layers stay 0): the load statistics the
  // coordinator windows for /v1/expert_load and rebalancing.
  std::vector<uint64_t> layer_expert_rows;
  double exchange_seconds = 0;  // wall time inside Dispatch and Combine, summed over calls
};

// out[T, H] = MoE(h[T, H]); T may be 0 (the rank still joins the exchange). Also sets
// ws.expert_used. This rank must hold every expert that exchange.local_experts() names. Errors come
// from the exchange (a peer timed out) or a missing expert. With add_shared_expert false the shared
// expert is left out (a tensor-parallel rank runs its slice of it over all the replica's tokens:
// RunSharedExpert).
// `layer_index` is the layer's place in the model (for the load statistics).
Status RunMoeLayer(const ModelConfig& config, int layer_index, const LayerWeights& layer, const float* h, int64_t num_tokens,
                   float* out, MoeWorkspace& ws, comm::ExpertExchange& exchange, int64_t timeout_ms,
                   ThreadPool& pool, bool add_shared_expert = true);

// out[T, H] = the layer's shared expert on h (times Qwen2-MoE's sigmoid gate); zeros when the layer
// has none.
void RunSharedExpert(const ModelConfig& config, const LayerWeights& layer, const float* h, int64_t num_tokens,
                     float* out, MoeWorkspace& ws, ThreadPool& pool);

}  // namespace shoal
