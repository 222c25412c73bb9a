// The paged KV cache of one worker: fixed-size blocks of token slots shared by all sequences, and the
// free list that hands them out. Storage per layer is [num_blocks · block_size, kv_heads, head_dim] f32
// for K and the same for V, allocated once at start-up from the configured memory budget.
// Thread-safety: none; the engine loop owns it.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/kernels.h"
#include "model/model_config.h"

namespace shoal {

class KvCache {
 public:
  // Bytes one block takes across all layers (K and V).
  static int64_t BlockBytes(const ModelConfig& config, int block_size);

  KvCache(const ModelConfig& config, int block_size, int64_t num_blocks);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // Grows `table` so it covers `tokens` slots; on failure `table` is unchanged.
  Status Reserve(std::vector<int32_t>* table, int64_t tokens);
  // Returns every block of `table` to the free list and clears it.
  void Release(std::vector<int32_t>* table);

  kernels::PagedKvLayer Layer(int layer);

 private:
  int block_size_;
  int64_t num_blocks_;
  int kv_heads_, head_dim_;
  std::vector<std::vector<float>> k_, v_;  // per layer
  std::vector<int32_t> free_;              // stack of free block ids
};

}  // namespace shoal
