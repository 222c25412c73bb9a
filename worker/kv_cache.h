// The paged KV cache of one worker: fixed-size blocks of token slots shared by all sequences.
//
// KvBlockPool is the bookkeeping every backend shares (which blocks are free, growing a sequence's
// block tables); KvCache adds the CPU engine's storage. The GPU engine keeps its storage in device
// memory with the same pool (worker/cuda/cuda_engine.h).
//
// Layer groups (KvLayout): layers whose keys stay visible for different spans cannot share one block
// table if the short-lived ones are to give their blocks back. Llama 4's chunked-attention layers only
// ever see the current chunk of attention_chunk_size positions, so their blocks before that chunk are
// freed, while its full-attention (NoPE) layers keep every block. The layers are split into groups of
// equal size g (g = gcd of the two counts), each group with its own block table per sequence; a block
// holds block_size slots of g layers, so every group draws from the one pool. A model without chunked
// layers is one group of all its layers: one table per sequence, as before.
// Thread-safety: none; the engine loop owns it.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/kernels.h"
#include "model/model_config.h"

namespace shoal {

struct KvLayout {
  int layers_per_group = 0;            // g
  std::vector<int> group_chunk;        // [groups] the group's attention chunk, 0 = keeps every block
  std::vector<int> layer_group;        // [num_layers] which group's table the layer reads
  std::vector<int> layer_slot;         // [num_layers] its index inside the group (0..g-1)

  // One group of every layer (no chunked layers), or Llama 4's full and chunked groups.
  static KvLayout For(const ModelConfig& config);
  int groups() const { return static_cast<int>(group_chunk.size()); }
};

// A sequence's block tables, one per group. Entry i covers positions [i·block_size, (i+1)·block_size);
// -1 marks a block already given back (before a chunked group's current chunk).
using KvTables = std::vector<std::vector<int32_t>>;

class KvBlockPool {
 public:
  // One group of `num_layers` layers (the layout does not matter to a pool's bookkeeping otherwise).
  KvBlockPool(int block_size, int64_t num_blocks, KvLayout layout = {});

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  const KvLayout& layout() const { return layout_; }
  int groups() const { return std::max(1, layout_.groups()); }

  // Grows every table of a sequence so it covers `tokens` slots; on failure the tables are unchanged.
  Status Reserve(KvTables* tables, int64_t tokens);
  // Gives back the blocks of chunked groups that lie wholly before the chunk of position `next_pos`
  // (no query at or after it can see them).
  void FreeBefore(KvTables* tables, int64_t next_pos);
  // Drops the tables' references to their blocks (a block shared by forked sequences is free once
  // the last one lets go) and clears them.
  void Release(KvTables* tables);
  // A fork of a sequence of `length` tokens (`src` its tables): *dst shares every full block of src
  // (a reference more each: no later token of either sequence is written into them) and gets a new
  // block for the partly filled last one in each group, which both go on writing — *copies lists
  // those (from, to) pairs, whose contents the caller's storage must copy. ResourceExhausted, with
  // nothing changed, when there are not enough free blocks for the copies.
  Status Fork(const KvTables& src, int64_t length, KvTables* dst, std::vector<std::pair<int32_t, int32_t>>* copies);
  // Sequences referring to the block (0 when free). For tests.
  int32_t references(int32_t block) const { return refs_[block]; }

  // Blocks a sequence of `length` tokens holds between steps (after FreeBefore(length)).
  int64_t BlocksHeld(int64_t length) const;
  // Blocks Reserve takes to grow a sequence from `length` by `n` tokens.
  int64_t BlocksToGrow(int64_t length, int64_t n) const;
  // The most tokens a sequence of `length` can grow by with `avail` free blocks.
  int64_t TokensThatFit(int64_t length, int64_t avail) const;
  // The longest sequence the whole pool can hold when each step adds at most `max_step_tokens` of it.
  int64_t MaxSequenceTokens(int64_t max_step_tokens) const;

 private:
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }
  int block_size_;
  int64_t num_blocks_;
  KvLayout layout_;
  int32_t Take();
  void Unref(int32_t block);
  std::vector<int32_t> free_;  // stack of free block ids
  std::vector<int32_t> refs_;  // [num_blocks] sequences holding each block
};

// Storage per group slot is [num_blocks · block_size, kv_heads, head_dim] f32 for K and the same for V,
// allocated once at start-up from the configured memory budget. An MLA model (DeepSeek-V3) keeps one
// vector per token instead — its latent and rope key, [kv_lora_rank + qk_rope_head_dim] — and no V.
class KvCache : public KvBlockPool {
 public:
  // Bytes one block takes (K and V of layers_per_group layers).
  static int64_t BlockBytes(const ModelConfig& config, int block_size);

  KvCache(const ModelConfig& config, int block_size, int64_t num_blocks);

  // Layer l's storage; its slots are addressed through the table of layout().layer_group[l].
  kernels::PagedKvLayer Layer(int layer);
  // Copies block `from`'s slots to block `to` in every layer (a fork's partly filled last block).
  void CopyBlock(int32_t from, int32_t to);

 private:
  int kv_heads_, head_dim_;
  std::vector<std::vector<float>> k_, v_;  // per group slot
};

}  // namespace shoal
