#include "worker/mla.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shoal {

namespace {

// DeepSeek's q_a_layernorm and kv_a_layernorm keep RMSNorm's default eps (1e-6), not rms_norm_eps.
constexpr float kLatentNormEps = 1e-6f;

}  // namespace

void MlaAttention(const ModelConfig& c, const LayerWeights& L, const float* h, int64_t T, const int32_t* positions,
                  const float* cos, const float* sin, const kernels::PagedKvLayer& kv, const int64_t* slots,
                  const int32_t* const* tables, MlaWorkspace& ws, float* attn, ThreadPool& pool) {
  const int heads = c.num_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vdim = c.v_head_dim;
  const int lora = c.kv_lora_rank, qk = nope + rope, width = lora + rope;
  const int half = rope / 2;

  // q [T, heads, nope | rope].
  ws.q.resize(static_cast<size_t>(T * heads * qk));
  if (c.q_lora_rank > 0) {
    ws.q_a.resize(static_cast<size_t>(T * c.q_lora_rank));
    kernels::MatMul(h, T, L.q_a, ws.q_a.data(), pool);
    if (!L.q_a_bias.empty()) kernels::AddBias(ws.q_a.data(), T, c.q_lora_rank, L.q_a_bias.data());
    kernels::RmsNorm(ws.q_a.data(), T, c.q_lora_rank, L.q_a_norm.data(), kLatentNormEps, ws.q_a.data());
    kernels::MatMul(ws.q_a.data(), T, L.q_b, ws.q.data(), pool);
  } else {
    kernels::MatMul(h, T, L.q, ws.q.data(), pool);
  }
  // The step's cache rows: normalised latent ‖ rotated rope key.
  ws.latent.resize(static_cast<size_t>(T * width));
  kernels::MatMul(h, T, L.kv_a, ws.latent.data(), pool);
  if (!L.kv_a_bias.empty()) kernels::AddBias(ws.latent.data(), T, width, L.kv_a_bias.data());
  for (int64_t t = 0; t < T; ++t) {
    float* row = ws.latent.data() + t * width;
    kernels::RmsNorm(row, 1, lora, L.kv_a_norm.data(), kLatentNormEps, row);
    // rope_interleave: transformers permutes q and k alike, so their dot products are the same.
    kernels::RotateHead(row + lora, rope, cos + t * half, sin + t * half, c.rope_interleaved);
    for (int hd = 0; hd < heads; ++hd) {
      kernels::RotateHead(ws.q.data() + (t * heads + hd) * qk + nope, rope, cos + t * half, sin + t * half,
                          c.rope_interleaved);
    }
  }
  kernels::WriteKv(kv, ws.latent.data(), nullptr, T, slots);

  // q_lat[t, head, :] = Σ_i q_nope[t, head, i] · W_UK[head][i, :], one widened kv_b row at a time.
  ws.q_lat.assign(static_cast<size_t>(T * heads * lora), 0.0f);
  const kernels::Matrix& kvb = L.kv_b;
  pool.ParallelFor(heads, [&](int64_t begin, int64_t end) {
    std::vector<float> row(lora);
    for (int64_t hd = begin; hd < end; ++hd) {
      for (int i = 0; i < nope; ++i) {
        kernels::GatherRow(kvb, hd * (nope + vdim) + i, row.data());
        for (int64_t t = 0; t < T; ++t) {
          const float qv = ws.q[(t * heads + hd) * qk + i];
          float* dst = ws.q_lat.data() + (t * heads + hd) * lora;
          for (int l = 0; l < lora; ++l) dst[l] += qv * row[l];
        }
      }
    }
  });

  // Causal attention over the latent cache, one item per (token, head); out_lat is [heads, T, lora]
  // so each head's rows go through W_UV as one matrix product.
  ws.out_lat.resize(static_cast<size_t>(heads * T * lora));
  const float scale = static_cast<float>(c.attention_scale);
  const int bs = kv.block_size;
  pool.ParallelFor(T * heads, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t t = it / heads;
      const int hd = static_cast<int>(it % heads);
      const int32_t pos = positions[t];
      const int32_t* table = tables[t];
      const float* ql = ws.q_lat.data() + (t * heads + hd) * lora;
      const float* qr = ws.q.data() + (t * heads + hd) * qk + nope;
      scores.resize(static_cast<size_t>(pos + 1));
      float mx = -INFINITY;
      for (int32_t j = 0; j <= pos; ++j) {
        const float* cj = kv.k + (static_cast<int64_t>(table[j / bs]) * bs + j % bs) * width;
        float s = 0.0f;
        for (int l = 0; l < lora; ++l) s += ql[l] * cj[l];
        for (int r = 0; r < rope; ++r) s += qr[r] * cj[lora + r];
        s *= scale;
        scores[j] = s;
        mx = std::max(mx, s);
      }
      float sum = 0.0f;
      for (float& s : scores) sum += s = std::exp(s - mx);
      const float inv = 1.0f / sum;
      float* out = ws.out_lat.data() + (static_cast<int64_t>(hd) * T + t) * lora;
      std::fill(out, out + lora, 0.0f);
      for (int32_t j = 0; j <= pos; ++j) {
        const float* cj = kv.k + (static_cast<int64_t>(table[j / bs]) * bs + j % bs) * width;
        const float p = scores[j] * inv;
        for (int l = 0; l < lora; ++l) out[l] += p * cj[l];
      }
    }
  });

  // attn[t, head·v + k] = W_UV[head] · out_lat[head, t].
  ws.head_out.resize(static_cast<size_t>(T * vdim));
  for (int hd = 0; hd < heads; ++hd) {
    const kernels::Matrix w_uv = kvb.RowSlice(static_cast<int64_t>(hd) * (nope + vdim) + nope, vdim);
    kernels::MatMul(ws.out_lat.data() + static_cast<int64_t>(hd) * T * lora, T, w_uv, ws.head_out.data(), pool);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(attn + (t * heads + hd) * vdim, ws.head_out.data() + t * vdim, sizeof(float) * vdim);
    }
  }
}

}  // namespace shoal
