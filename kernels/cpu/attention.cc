// Causal GQA attention over the paged KV cache (CPU). One work item per (query token, head); each keeps
// its scores in a per-thread buffer, then softmax in f32 as transformers' eager attention does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"

namespace shoal::kernels {

void WriteKv(const PagedKvLayer& layer, const float* k, const float* v, int64_t m, const int64_t* slots) {
  const int64_t w = static_cast<int64_t>(layer.num_kv_heads) * layer.head_dim;
  for (int64_t t = 0; t < m; ++t) {
    std::memcpy(layer.k + slots[t] * w, k + t * w, sizeof(float) * w);
    if (layer.v != nullptr) std::memcpy(layer.v + slots[t] * w, v + t * w, sizeof(float) * w);
  }
}

void PagedAttention(const float* q, int64_t m, int num_heads, const int32_t* positions,
                    const int32_t* const* block_tables, const PagedKvLayer& layer, float scale, int sliding_window,
                    float* out, ThreadPool& pool, int attention_chunk) {
  const int d = layer.head_dim;
  const int group = num_heads / layer.num_kv_heads;
  const int64_t kv_stride = static_cast<int64_t>(layer.num_kv_heads) * d;
  const int64_t items = m * num_heads;
  pool.ParallelFor(items, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<float> acc(d);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t t = it / num_heads;
      const int h = static_cast<int>(it % num_heads);
      const int kvh = h / group;
      const int32_t pos = positions[t];
      int32_t first = sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
      if (attention_chunk > 0) first = std::max(first, pos / attention_chunk * attention_chunk);
      const int32_t* table = block_tables[t];
      const float* qh = q + (t * num_heads + h) * d;
      scores.resize(static_cast<size_t>(pos - first + 1));
      float mx = -INFINITY;
      for (int32_t j = first; j <= pos; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / layer.block_size]) * layer.block_size + j % layer.block_size;
        const float* kh = layer.k + slot * kv_stride + kvh * d;
        float s = 0.0f;
        for (int i = 0; i < d; ++i) s += qh[i] * kh[i];
        s *= scale;
        scores[j - first] = s;
        mx = std::max(mx, s);
      }
      float sum = 0.0f;
      for (float& s : scores) sum += s = std::exp(s - mx);
      const float inv = 1.0f / sum;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t j = first; j <= pos; ++j) {
        const int64_t slot = static_cast<int64_t>(table[j / layer.block_size]) * layer.block_size + j % layer.block_size;
        const float* vh = layer.v + slot * kv_stride + kvh * d;
        const float p = scores[j - first] * inv;
        for (int i = 0; i < d; ++i) acc[i] += p * vh[i];
      }
      std::memcpy(out + (t * num_heads + h) * d, acc.data(), sizeof(float) * d);
    }
  });
}

}  // namespace shoal::kernels
