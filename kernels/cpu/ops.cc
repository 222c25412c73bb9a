// Element-wise and per-row ops of the CPU backend: bias, embedding gather, RMSNorm, RoPE, router top-k,
// SiLU gating, the gated FFN, argmax. Each follows the HF transformers formula named in kernels.h.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/kernels.h"

namespace shoal::kernels {

void AddBias(float* y, int64_t m, int64_t n, const float* bias) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y[i * n + j] += bias[j];
}

void GatherRow(const Matrix& w, int64_t r, float* out) {
  const int64_t k = w.cols;
  switch (w.dtype) {
    case DType::kF32: {
      const float* p = static_cast<const float*>(w.data) + r * k;
      std::copy(p, p + k, out);
      break;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + r * k;
      for (int64_t j = 0; j < k; ++j) out[j] = Bf16ToF32(p[j]);
      break;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + r * k;
      for (int64_t j = 0; j < k; ++j) out[j] = F16ToF32(p[j]);
      break;
    }
    case DType::kF8E4M3: {
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + r * k;
      const float* scale = w.block_scale + ((w.scale_row0 + r) / w.block_rows) * w.scale_cols;
      for (int64_t j = 0; j < k; ++j) out[j] = F8E4M3ToF32(p[j]) * scale[j / w.block_cols];
      break;
    }
  }
}

void RmsNorm(const float* x, int64_t m, int64_t d, const float* weight, float eps, float* y) {
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
    for (int64_t j = 0; j < d; ++j) yi[j] = weight[j] * (xi[j] * inv);
  }
}

void RopeTable(const int32_t* positions, int64_t m, const float* inv_freq, int half, float attention_factor,
               float* cos, float* sin) {
  for (int64_t t = 0; t < m; ++t) {
    // As transformers does: angle = f32(position) · f32(inv_freq), cos/sin of that f32 angle.
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos[t * half + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_factor;
      sin[t * half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_factor;
    }
  }
}

void RotateHead(float* v, int head_dim, const float* cos, const float* sin, bool interleaved) {
  const int half = head_dim / 2;
  // Pair i is (v[a], v[b]): (2i, 2i+1) interleaved, (i, i + half) rotate-half.
  const int a_step = interleaved ? 2 : 1, b_off = interleaved ? 1 : half;
  for (int i = 0; i < half; ++i) {
    float* pa = v + i * a_step;
    float* pb = pa + b_off;
    const float a = *pa, b = *pb;
    *pa = a * cos[i] - b * sin[i];
    *pb = b * cos[i] + a * sin[i];
  }
}

namespace {

void RopeHeads(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin, bool interleaved) {
  const int half = head_dim / 2;
  for (int64_t t = 0; t < m; ++t) {
    for (int h = 0; h < heads; ++h) {
      RotateHead(x + (t * heads + h) * head_dim, head_dim, cos + t * half, sin + t * half, interleaved);
    }
  }
}

}  // namespace

void ApplyRope(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin) {
  RopeHeads(x, m, heads, head_dim, cos, sin, /*interleaved=*/false);
}

void ApplyRopeInterleaved(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin) {
  RopeHeads(x, m, heads, head_dim, cos, sin, /*interleaved=*/true);
}

void RouterGroupedTopK(const float* logits, int64_t m, int num_experts, int top_k, int n_group, int topk_group,
                       const float* bias, bool renormalize, float scaling, int32_t* ids, float* weights) {
  const int per_group = num_experts / n_group;
  std::vector<float> score(num_experts), choice(num_experts), group_score(n_group);
  std::vector<int32_t> order(num_experts), groups(n_group);
  std::vector<char> kept(n_group);
  for (int64_t t = 0; t < m; ++t) {
    const float* l = logits + t * num_experts;
    for (int e = 0; e < num_experts; ++e) {
      score[e] = 1.0f / (1.0f + std::exp(-l[e]));
      choice[e] = score[e] + (bias ? bias[e] : 0.0f);
    }
    for (int g = 0; g < n_group; ++g) {  // a group's score: the sum of its two best choice scores
      float a = -INFINITY, b = -INFINITY;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (choice[e] > a) b = a, a = choice[e]; else if (choice[e] > b) b = choice[e];
      }
      group_score[g] = a + b;
    }
    std::iota(groups.begin(), groups.end(), 0);
    std::partial_sort(groups.begin(), groups.begin() + topk_group, groups.end(), [&](int32_t a, int32_t b) {
      return group_score[a] != group_score[b] ? group_score[a] > group_score[b] : a < b;
    });
    std::fill(kept.begin(), kept.end(), 0);
    for (int j = 0; j < topk_group; ++j) kept[groups[j]] = 1;
    int n = 0;
    for (int e = 0; e < num_experts; ++e) {
      if (kept[e / per_group]) order[n++] = e;
    }
    std::partial_sort(order.begin(), order.begin() + top_k, order.begin() + n,
                      [&](int32_t a, int32_t b) { return choice[a] != choice[b] ? choice[a] > choice[b] : a < b; });
    float sum = 0.0f;
    for (int j = 0; j < top_k; ++j) sum += score[order[j]];
    const float denom = renormalize ? sum + 1e-20f : 1.0f;
    for (int j = 0; j < top_k; ++j) {
      ids[t * top_k + j] = order[j];
      weights[t * top_k + j] = score[order[j]] / denom * scaling;
    }
  }
}

void RouterTopKSigmoid(const float* logits, int64_t m, int num_experts, int top_k, int32_t* ids, float* scores) {
  std::vector<int32_t> order(num_experts);
  for (int64_t t = 0; t < m; ++t) {
    const float* l = logits + t * num_experts;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
    for (int j = 0; j < top_k; ++j) {
      ids[t * top_k + j] = order[j];
      scores[t * top_k + j] = 1.0f / (1.0f + std::exp(-l[order[j]]));
    }
  }
}

void RouterTopK(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                float* weights) {
  std::vector<float> p(num_experts);
  std::vector<int32_t> order(num_experts);
  for (int64_t t = 0; t < m; ++t) {
    const float* l = logits + t * num_experts;
    const float mx = *std::max_element(l, l + num_experts);
    float sum = 0.0f;
    for (int e = 0; e < num_experts; ++e) sum += p[e] = std::exp(l[e] - mx);
    for (int e = 0; e < num_experts; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
    float chosen = 0.0f;
    for (int j = 0; j < top_k; ++j) chosen += p[order[j]];
    for (int j = 0; j < top_k; ++j) {
      ids[t * top_k + j] = order[j];
      weights[t * top_k + j] = renormalize ? p[order[j]] / chosen : p[order[j]];
    }
  }
}

void SiluMul(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void SiluGatedFfn(const float* x, int64_t m, const Matrix& gate, const Matrix& up, const Matrix& down, float* scratch,
                  float* out, ThreadPool& pool) {
  float* g = scratch;
  float* u = scratch + m * gate.rows;
  const MatMulJob gate_up[] = {{x, m, &gate, g}, {x, m, &up, u}};
  MatMulBatch(gate_up, pool);  // one parallel region for both
  SiluMul(g, u, m * gate.rows);
  MatMul(g, m, down, out, pool);
}

int32_t ArgMax(const float* x, int n) {
  // Skips NaNs: a NaN first element would otherwise win every comparison against it.
  int32_t best = -1;
  for (int i = 0; i < n; ++i)
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  return best < 0 ? 0 : best;
}

}  // namespace shoal::kernels
