// What the scheduler, batch generation and the serve loop need from a forward-pass engine, so one
// batching and serving path drives either backend: the CPU Engine (worker/engine.h, any number of
// expert-parallel ranks over MPI) and the single-GPU CudaEngine (worker/cuda/cuda_engine.h).
// Contract of every method: as Engine documents it.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "comm/group.h"
#include "comm/placement.h"
#include "common/status.h"
#include "model/model_config.h"
#include "model/weights.h"
#include "worker/kv_cache.h"
#include "worker/sequence_table.h"

namespace shoal {

// Where a rank's step time goes, summed over its steps (seconds of wall time): attention (q/k/v, the
// attention kernel, o_proj), mlp (routers, routed and shared experts, dense MLPs), exchange (the
// expert all-to-all: dispatch and combine, waits on peers included), tp (attention-TP collectives).
// The rest of a step (embedding, norms, lm_head, scheduling) is its total minus these.
struct StepPhases {
  double attention = 0, mlp = 0, exchange = 0, tp = 0;
};

class StepEngine {
 public:
  virtual ~StepEngine() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const KvBlockPool& kv_blocks() const = 0;
  // Bytes one token's K/V takes in this engine's cache over all layers (its storage dtype and layout:
  // MLA's latent only; before chunked layers give blocks back).
  virtual int64_t kv_bytes_per_token() const = 0;
  virtual int max_num_seqs() const = 0;
  // engine.max_step_tokens: the scheduler's budget of tokens per Forward.
  virtual int max_step_tokens() const = 0;
  // The expert-parallel group the engine is a rank of (a group of one for a single process).
  virtual comm::Group& group() = 0;
  virtual int64_t collective_timeout_ms() const = 0;

  virtual StatusOr<SeqId> NewSequence() = 0;
  // A new sequence with `parent`'s tokens and KV: full blocks shared, the partly filled last one
  // copied (worker/kv_cache.h: KvBlockPool::Fork) — n choices of one prompt, prefilled once.
  // ResourceExhausted without a free sequence slot or block; nothing changes on an error.
  virtual StatusOr<SeqId> ForkSequence(SeqId parent) = 0;
  virtual void ReleaseSequence(SeqId seq) = 0;
  virtual int64_t SequenceLength(SeqId seq) const = 0;
  virtual Status Forward(const std::vector<ForwardInput>& batch, std::vector<ForwardOutput>* out) = 0;

  // Bytes of weight matrices the last Forward read.
  virtual size_t last_step_weight_bytes() const = 0;
  // Rows this rank ran through each expert so far (all layers), by expert id: [num_experts] (empty
  // until the first MoE layer has run).
  virtual const std::vector<uint64_t>& expert_rows_total() const = 0;
  // The same by layer: [num_layers × num_experts] (row l·E + e: layer l, expert e; dense layers 0).
  virtual const std::vector<uint64_t>& layer_expert_rows() const = 0;
  // The expert placement MoE layer `layer` runs under; null for a dense layer (or a model without MoE).
  virtual const Placement* layer_placement(int layer) const {
    (void)layer;
    return nullptr;
  }
  // Rebalancing (worker/expert_rebalance.h): from the next step, MoE layer l runs under placements[l]
  // (nullopt for dense layers). `gained` holds every expert they give this rank that it does not hold
  // yet (model/weights.h LoadExpertWeights); the experts they take away are dropped and their memory
  // given back. Every rank of the group must switch before the same step, to the same placements.
  // On an error nothing changed.
  virtual Status SwitchPlacements(std::vector<std::optional<Placement>> placements, ModelWeights gained) {
    (void)placements, (void)gained;
    return Unimplemented(Describe() + ": this engine cannot change its expert placement while serving");
  }
  // Cumulative phase times (zeros where an engine does not measure them).
  virtual StepPhases phase_seconds_total() const { return {}; }
  // "avx2+fma+f16c kernels, 8 threads", "NVIDIA H100 80GB HBM3": for start-up lines.
  virtual std::string Describe() const = 0;
};

}  // namespace shoal
