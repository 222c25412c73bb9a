#include "worker/kv_cache.h"

#include <algorithm>
#include <numeric>

namespace shoal {

KvLayout KvLayout::For(const ModelConfig& c) {
  KvLayout k;
  std::vector<int> full, chunked;
  for (int l = 0; l < c.num_layers; ++l) (c.LayerChunk(l) > 0 ? chunked : full).push_back(l);
  k.layers_per_group = full.empty() || chunked.empty() ? c.num_layers
                                                       : std::gcd(static_cast<int>(full.size()),
                                                                  static_cast<int>(chunked.size()));
  k.layer_group.assign(c.num_layers, 0);
  k.layer_slot.assign(c.num_layers, 0);
  for (const std::vector<int>* kind : {&full, &chunked}) {
    for (size_t i = 0; i < kind->size(); ++i) {
      if (i % k.layers_per_group == 0) k.group_chunk.push_back(kind == &full ? 0 : c.attention_chunk_size);
      const int l = (*kind)[i];
      k.layer_group[l] = k.groups() - 1;
      k.layer_slot[l] = static_cast<int>(i % k.layers_per_group);
    }
  }
  return k;
}

KvBlockPool::KvBlockPool(int block_size, int64_t num_blocks, KvLayout layout)
    : block_size_(block_size), num_blocks_(num_blocks), layout_(std::move(layout)) {
  free_.reserve(num_blocks);
  refs_.assign(static_cast<size_t>(num_blocks), 0);
  // Hand out low block ids first (pop from the back).
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int32_t KvBlockPool::Take() {
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void KvBlockPool::Unref(int32_t block) {
  if (--refs_[block] == 0) free_.push_back(block);
}

Status KvBlockPool::Fork(const KvTables& src, int64_t length, KvTables* dst,
                         std::vector<std::pair<int32_t, int32_t>>* copies) {
  const int64_t used = BlocksFor(length);
  const bool partial = length % block_size_ != 0;
  const int64_t need = partial ? static_cast<int64_t>(src.size()) : 0;
  if (need > free_blocks()) {
    return ResourceExhausted("KV cache full: forking a sequence needs " + std::to_string(need) + " free blocks, " +
                             std::to_string(free_blocks()) + " free");
  }
  dst->assign(src.size(), {});
  copies->clear();
  for (size_t g = 0; g < src.size(); ++g) {
    const std::vector<int32_t>& from = src[g];
    std::vector<int32_t>& to = (*dst)[g];
    for (int64_t i = 0; i < used && i < static_cast<int64_t>(from.size()); ++i) {
      const int32_t b = from[i];
      if (b >= 0 && partial && i == used - 1) {
        to.push_back(Take());
        copies->emplace_back(b, to.back());
      } else {
        if (b >= 0) ++refs_[b];
        to.push_back(b);
      }
    }
  }
  return Status::Ok();
}

Status KvBlockPool::Reserve(KvTables* tables, int64_t tokens) {
  const int64_t want = BlocksFor(tokens);
  const int64_t have = tables->empty() ? 0 : static_cast<int64_t>((*tables)[0].size());  // all grow together
  const int64_t need = groups() * std::max<int64_t>(0, want - have);
  if (need == 0) return Status::Ok();
  if (need > free_blocks()) {
    return ResourceExhausted("KV cache full: need " + std::to_string(need) + " more blocks of " +
                             std::to_string(block_size_) + " tokens, " + std::to_string(free_blocks()) + " of " +
                             std::to_string(num_blocks_) + " free (raise kv_cache.memory_mib)");
  }
  tables->resize(groups());
  for (auto& t : *tables) {
    while (static_cast<int64_t>(t.size()) < want) t.push_back(Take());
  }
  return Status::Ok();
}

void KvBlockPool::FreeBefore(KvTables* tables, int64_t next_pos) {
  for (size_t g = 0; g < tables->size() && g < layout_.group_chunk.size(); ++g) {
    const int64_t chunk = layout_.group_chunk[g];
    if (chunk == 0) continue;
    const int64_t first_kept = next_pos / chunk * chunk / block_size_;  // the block of the chunk's start
    auto& t = (*tables)[g];
    for (int64_t b = 0; b < first_kept && b < static_cast<int64_t>(t.size()); ++b) {
      if (t[b] >= 0) Unref(t[b]), t[b] = -1;
    }
  }
}

void KvBlockPool::Release(KvTables* tables) {
  for (auto& t : *tables) {
    for (int32_t b : t) {
      if (b >= 0) Unref(b);
    }
  }
  tables->clear();
}

int64_t KvBlockPool::BlocksHeld(int64_t length) const {
  if (layout_.group_chunk.empty()) return BlocksFor(length);
  int64_t held = 0;
  for (int chunk : layout_.group_chunk) {
    held += BlocksFor(length) - (chunk == 0 ? 0 : std::min(BlocksFor(length), length / chunk * chunk / block_size_));
  }
  return held;
}

int64_t KvBlockPool::BlocksToGrow(int64_t length, int64_t n) const {
  return groups() * (BlocksFor(length + n) - BlocksFor(length));
}

int64_t KvBlockPool::TokensThatFit(int64_t length, int64_t avail) const {
  return (BlocksFor(length) + avail / groups()) * block_size_ - length;
}

int64_t KvBlockPool::MaxSequenceTokens(int64_t max_step_tokens) const {
  int64_t full = 0, chunked = 0, chunk_blocks = 0;
  for (int chunk : layout_.group_chunk) {
    if (chunk == 0) {
      ++full;
    } else {
      ++chunked;
      // A step starting anywhere in a chunk keeps that chunk's blocks and adds its own tokens.
      chunk_blocks = BlocksFor(chunk + max_step_tokens) + 1;
    }
  }
  if (layout_.group_chunk.empty()) full = 1;
  if (full == 0) return chunked * chunk_blocks <= num_blocks_ ? INT64_MAX / 2 : (num_blocks_ / chunked) * block_size_;
  int64_t blocks = num_blocks_ / (full + chunked);  // every table the same length, all below a chunk
  if (blocks >= chunk_blocks) blocks = std::max(blocks, (num_blocks_ - chunked * chunk_blocks) / full);
  return blocks * block_size_;
}

int64_t KvCache::BlockBytes(const ModelConfig& c, int block_size) {
  return int64_t{c.kv_cache_has_v() ? 2 : 1} * KvLayout::For(c).layers_per_group * block_size * c.kv_cache_width() *
         static_cast<int64_t>(sizeof(float));
}

KvCache::KvCache(const ModelConfig& c, int block_size, int64_t num_blocks)
    : KvBlockPool(block_size, num_blocks, KvLayout::For(c)),
      // MLA: one "head" of the latent ‖ rope-key width, and no V.
      kv_heads_(c.mla ? 1 : c.num_kv_heads),
      head_dim_(c.mla ? c.kv_cache_width() : c.head_dim) {
  const size_t per_slot = static_cast<size_t>(num_blocks) * block_size * c.kv_cache_width();
  k_.assign(layout().layers_per_group, std::vector<float>(per_slot));
  if (c.kv_cache_has_v()) v_.assign(layout().layers_per_group, std::vector<float>(per_slot));
}

void KvCache::CopyBlock(int32_t from, int32_t to) {
  const size_t n = static_cast<size_t>(block_size()) * kv_heads_ * head_dim_;
  for (auto* storage : {&k_, &v_}) {
    for (std::vector<float>& slot : *storage) {
      std::copy_n(slot.begin() + static_cast<std::ptrdiff_t>(from * n), n, slot.begin() + static_cast<std::ptrdiff_t>(to * n));
    }
  }
}

kernels::PagedKvLayer KvCache::Layer(int layer) {
  const int slot = layout().layer_slot[layer];
  return {k_[slot].data(), v_.empty() ? nullptr : v_[slot].data(), block_size(), kv_heads_, head_dim_};
}

}  // namespace shoal
