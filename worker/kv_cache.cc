#include "worker/kv_cache.h"

namespace shoal {

KvBlockPool::KvBlockPool(int block_size, int64_t num_blocks) : block_size_(block_size), num_blocks_(num_blocks) {
  free_.reserve(num_blocks);
  // Hand out low block ids first (pop from the back).
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

Status KvBlockPool::Reserve(std::vector<int32_t>* table, int64_t tokens) {
  const int64_t need = (tokens + block_size_ - 1) / block_size_ - static_cast<int64_t>(table->size());
  if (need <= 0) return Status::Ok();
  if (need > free_blocks()) {
    return ResourceExhausted("KV cache full: need " + std::to_string(need) + " more blocks of " +
                             std::to_string(block_size_) + " tokens, " + std::to_string(free_blocks()) + " of " +
                             std::to_string(num_blocks_) + " free (raise kv_cache.memory_mib)");
  }
  for (int64_t i = 0; i < need; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return Status::Ok();
}

void KvBlockPool::Release(std::vector<int32_t>* table) {
  for (int32_t b : *table) free_.push_back(b);
  table->clear();
}

int64_t KvCache::BlockBytes(const ModelConfig& c, int block_size) {
  return int64_t{2} * c.num_layers * block_size * c.kv_dim() * static_cast<int64_t>(sizeof(float));
}

KvCache::KvCache(const ModelConfig& c, int block_size, int64_t num_blocks)
    : KvBlockPool(block_size, num_blocks), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  const size_t per_layer = static_cast<size_t>(num_blocks) * block_size * c.kv_dim();
  k_.assign(c.num_layers, std::vector<float>(per_layer));
  v_.assign(c.num_layers, std::vector<float>(per_layer));
}

kernels::PagedKvLayer KvCache::Layer(int layer) {
  return {k_[layer].data(), v_[layer].data(), block_size(), kv_heads_, head_dim_};
}

}  // namespace shoal
