// The paged KV cache of one worker: fixed-size blocks of token slots shared by all sequences.
//
// KvBlockPool is the bookkeeping every backend shares (which blocks are free, growing a sequence's
// block table); KvCache adds the CPU engine's storage. The GPU engine keeps its storage in device
// memory with the same pool (worker/cuda/cuda_engine.h).
// Thread-safety: none; the engine loop owns it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/kernels.h"
#include "model/model_config.h"

namespace shoal {

class KvBlockPool {
 public:
  KvBlockPool(int block_size, int64_t num_blocks);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // Grows `table` so it covers `tokens` slots; on failure `table` is unchanged.
  Status Reserve(std::vector<int32_t>* table, int64_t tokens);
  // Returns every block of `table` to the free list and clears it.
  void Release(std::vector<int32_t>* table);

 private:
  int block_size_;
  int64_t num_blocks_;
  std::vector<int32_t> free_;  // stack of free block ids
};

// Storage per layer is [num_blocks · block_size, kv_heads, head_dim] f32 for K and the same for V,
// allocated once at start-up from the configured memory budget.
class KvCache : public KvBlockPool {
 public:
  // Bytes one block takes across all layers (K and V).
  static int64_t BlockBytes(const ModelConfig& config, int block_size);

  KvCache(const ModelConfig& config, int block_size, int64_t num_blocks);

  kernels::PagedKvLayer Layer(int layer);

 private:
  int kv_heads_, head_dim_;
  std::vector<std::vector<float>> k_, v_;  // per layer
};

}  // namespace shoal
