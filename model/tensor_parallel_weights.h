// One tensor-parallel rank's share of the non-expert weights (parallel.attention_tp = T > 1).
//
// The split, per layer (Megatron's, as vLLM and SGLang apply it):
//   - attention heads: rank r of T holds q heads [r·h/T, (r+1)·h/T) (q_proj rows) and the kv heads they
//     read (k_proj/v_proj rows): kv/T heads each when T divides the kv heads, else — fewer kv heads
//     than ranks — the one kv head its q heads share, replicated on T/kv ranks; o_proj keeps the
//     matching columns, so each rank's o_proj output is a partial sum the replica adds up;
//   - dense MLPs, dense layers and shared experts: gate/up rows and down columns of one
//     intermediate range per rank (partial sums again);
//   - embedding and lm_head: one vocabulary range per rank (ceil(V/T) rows; the last may be shorter);
//   - MLA (DeepSeek-V3): the heads' rows of q_proj / q_b_proj and kv_b_proj and o_proj's columns; the
//     low-rank q_a and kv_a are shared by every head and stay whole, and so does the latent cache:
//     every rank of a replica holds the replica's whole latent cache (T copies; see docs/architecture.md).
// Routers, norms, the shared-expert gate and o_proj's bias stay whole; routed experts are untouched
// (expert parallelism places them over the whole group).
//
// Row ranges are views into the checkpoint's mapping (nothing else of the tensor is read); column
// ranges are copied into owned buffers once, reading only the slice's bytes.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace shoal {

struct TpShard {
  int rank = 0;  // 0 .. size - 1
  int size = 1;
};

struct IndexRange {
  int64_t begin = 0;
  int64_t size = 0;
  int64_t end() const { return begin + size; }
};

// Rank r's part of n items split in chunks of ceil(n / t): [min(n, r·chunk), min(n, (r+1)·chunk)).
IndexRange SplitRange(int64_t n, TpShard shard);

// Whether `c` can be split over `tp` ranks; InvalidArgument / Unimplemented naming why not: the heads
// must divide evenly and the kv heads must divide or be divided by tp; FP8 weights are refused (a
// column range would cut their scale blocks).
Status CheckTensorParallel(const ModelConfig& c, int tp);

// The attention shape one rank runs: num_heads / tp q heads and max(1, kv / tp) kv heads (what its KV
// cache holds); everything else as `c`.
ModelConfig TensorParallelAttentionConfig(const ModelConfig& c, int tp);

// Replaces the whole-model weights by rank shard.rank's share (as above), in place. `c` must have
// passed CheckTensorParallel(c, shard.size). A size of 1 changes nothing.
Status SliceForTensorParallel(const ModelConfig& c, TpShard shard, ModelWeights* w);

}  // namespace shoal
