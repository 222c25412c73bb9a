// The weights of one model (or one expert-parallel rank's share of it), as views the kernels read.
//
// Matrices point into the memory-mapped checkpoint (or into owned buffers for synthetic models) and
// keep the checkpoint dtype; vectors (norms, biases) are widened to f32 once here. Shapes, with
// H = hidden, Q = heads·head_dim, K = kv_heads·head_dim, E = experts, I = expert intermediate:
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/kernels.h"
#include "model/checkpoint.h"
#include "model/model_config.h"

namespace shoal {

struct FfnWeights {          // SiLU-gated MLP: down(silu(gate(x)) * up(x))
  kernels::Matrix gate;      // [I, H]
  kernels::Matrix up;        // [I, H]
  kernels::Matrix down;      // [H, I]
  bool present() const { return !gate.empty(); }
  size_t nbytes() const { return gate.nbytes() + up.nbytes() + down.nbytes(); }
};

struct LayerWeights {
  std::vector<float> input_norm;      // [H]
  std::vector<float> post_attn_norm;  // [H]
  kernels::Matrix q, k, v, o;         // [Q, H], [K, H], [K, H], [H, Q]
  std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty when the model has none
  std::vector<float> q_norm, k_norm;  // [head_dim], Qwen3-MoE only

  // MLA (DeepSeek-V3), with N = nope + rope and the heads' rows one after another: q_a [q_lora, H],
  // q_b [heads·N, q_lora] (or q = q_proj [heads·N, H] without q_lora_rank), kv_a [kv_lora + rope, H],
  // kv_b [heads·(nope + v), kv_lora] (each head's W_UK rows, then its W_UV rows), o [H, heads·v].
  kernels::Matrix q_a, q_b, kv_a, kv_b;
  std::vector<float> q_a_norm, kv_a_norm;  // [q_lora], [kv_lora]
  std::vector<float> q_a_bias, kv_a_bias;  // attention_bias only

  bool is_moe = false;
  kernels::Matrix router;             // [E, H]
  std::vector<float> router_bias;     // [E] DeepSeek-V3's e_score_correction_bias (choice only)
  std::vector<FfnWeights> experts;    // [E]; an expert this rank does not hold is !present()
  FfnWeights shared_expert;           // Qwen2-MoE (gated), Llama 4, DeepSeek-V3 (n_shared_experts wide)
  kernels::Matrix shared_expert_gate; // [1, H]
  FfnWeights dense_mlp;               // non-MoE layers
};

struct ModelWeights {
  kernels::Matrix embed;    // [V, H]
  kernels::Matrix lm_head;  // [V, H] (the embedding when tied)
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;

  std::unique_ptr<Checkpoint> checkpoint;             // keeps the mapping alive
  std::vector<std::unique_ptr<Checkpoint>> more_checkpoints;  // opened later for experts gained (AdoptExperts)
  std::vector<std::unique_ptr<uint8_t[]>> owned;      // synthetic models own their bytes

  // Bytes of matrices held (dense + the experts present).
  size_t MatrixBytes() const;
};

// Which experts to load: (layer, expert) → true to load. Null loads all.
using ExpertFilter = std::function<bool(int layer, int expert)>;

// Loads and shape-checks every tensor `config` implies from the checkpoint in `dir`; errors name the
// file and tensor.
StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const std::string& dir,
                                        const ExpertFilter& experts = nullptr);

// Only the routed experts `experts` names (nothing else of the model: shards holding none of them
// are not opened), in `dtype` (as stored when empty), every page read once so that the first step
// using them does not wait on the disk. Layers are all there; an expert not asked for is !present().
// For a rank gaining experts while it serves (worker/expert_rebalance.h); thread-safe.
StatusOr<ModelWeights> LoadExpertWeights(const ModelConfig& config, const std::string& dir, const ExpertFilter& experts,
                                         std::optional<DType> dtype);
// Moves the experts present in `gained` into `w` (its storage with them).
void AdoptExperts(ModelWeights* w, ModelWeights gained);
// Drops one routed expert from `w` and gives its memory back: an owned copy is freed; the pages of a
// view into a checkpoint mapping are released (read again from the file if ever needed). No-op if absent.
void ReleaseExpert(ModelWeights* w, int layer, int expert);

// engine.dtype: every weight matrix that is not FP8 converted to `to` (f32, f16 or bf16) in owned
// buffers (a tied lm_head stays the embedding). Matrices already of that dtype are left as they are.
void CastMatrices(ModelWeights* weights, DType to);

// Random weights of the given dtype for benchmarks (values ~ N(0, 1/cols)); deterministic in `seed`.
// kF8E4M3: the layers' projections and experts block-scaled FP8 (DeepSeek's layout), the rest bf16.
ModelWeights MakeSyntheticWeights(const ModelConfig& config, DType dtype, uint64_t seed);

}  // namespace shoal
