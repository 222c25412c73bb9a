#include "worker/moe.h"

#include <algorithm>
#include <cmath>

namespace shoal {

void RunMoeLayer(const ModelConfig& c, const LayerWeights& L, const float* h, int64_t T, float* out,
                 MoeWorkspace& ws, ThreadPool& pool) {
  const int E = c.num_experts, K = c.num_experts_per_tok;
  const int64_t H = c.hidden_size;
  ws.router_logits.resize(static_cast<size_t>(T * E));
  ws.topk_ids.resize(static_cast<size_t>(T * K));
  ws.topk_weights.resize(static_cast<size_t>(T * K));
  kernels::MatMul(h, T, L.router, ws.router_logits.data(), pool);
  kernels::RouterTopK(ws.router_logits.data(), T, E, K, c.norm_topk_prob, ws.topk_ids.data(), ws.topk_weights.data());

  // Counting sort of (token, choice) pairs by expert; within an expert, rows stay in token order.
  ws.expert_offsets.assign(E + 1, 0);
  for (int64_t i = 0; i < T * K; ++i) ++ws.expert_offsets[ws.topk_ids[i] + 1];
  for (int e = 0; e < E; ++e) ws.expert_offsets[e + 1] += ws.expert_offsets[e];
  ws.row_token.resize(static_cast<size_t>(T * K));
  ws.row_slot.resize(static_cast<size_t>(T * K));
  {
    std::vector<int32_t> cursor(ws.expert_offsets.begin(), ws.expert_offsets.end() - 1);
    for (int64_t t = 0; t < T; ++t) {
      for (int j = 0; j < K; ++j) {
        const int32_t r = cursor[ws.topk_ids[t * K + j]]++;
        ws.row_token[r] = static_cast<int32_t>(t);
        ws.row_slot[r] = j;
      }
    }
  }
  ws.rows_in.resize(static_cast<size_t>(T * K * H));
  ws.rows_out.resize(static_cast<size_t>(T * K * H));
  for (int64_t r = 0; r < T * K; ++r) std::copy_n(h + ws.row_token[r] * H, H, ws.rows_in.data() + r * H);

  ws.expert_used.assign(E, 0);
  int64_t max_rows = 0;
  for (int e = 0; e < E; ++e) max_rows = std::max<int64_t>(max_rows, ws.expert_offsets[e + 1] - ws.expert_offsets[e]);
  ws.ffn_scratch.resize(static_cast<size_t>(2 * max_rows * c.moe_intermediate_size));
  for (int e = 0; e < E; ++e) {
    const int64_t b = ws.expert_offsets[e], n = ws.expert_offsets[e + 1] - b;
    if (n == 0) continue;
    ws.expert_used[e] = 1;
    const FfnWeights& f = L.experts[e];
    kernels::SiluGatedFfn(ws.rows_in.data() + b * H, n, f.gate, f.up, f.down, ws.ffn_scratch.data(),
                          ws.rows_out.data() + b * H, pool);
  }

  // Combine: out[t] = Σ_e w_{t,e} · y_{t,e}, added in ascending expert order as transformers does.
  std::fill(out, out + T * H, 0.0f);
  for (int64_t r = 0; r < T * K; ++r) {
    const int32_t t = ws.row_token[r];
    const float w = ws.topk_weights[t * K + ws.row_slot[r]];
    const float* y = ws.rows_out.data() + r * H;
    float* o = out + t * H;
    for (int64_t i = 0; i < H; ++i) o[i] += y[i] * w;
  }

  if (L.shared_expert.present()) {
    ws.shared_out.resize(static_cast<size_t>(T * H));
    ws.shared_gate.resize(static_cast<size_t>(T));
    ws.ffn_scratch.resize(static_cast<size_t>(2 * T * c.shared_expert_intermediate_size));
    kernels::SiluGatedFfn(h, T, L.shared_expert.gate, L.shared_expert.up, L.shared_expert.down, ws.ffn_scratch.data(),
                          ws.shared_out.data(), pool);
    kernels::MatMul(h, T, L.shared_expert_gate, ws.shared_gate.data(), pool);
    for (int64_t t = 0; t < T; ++t) {
      const float g = 1.0f / (1.0f + std::exp(-ws.shared_gate[t]));
      for (int64_t i = 0; i < H; ++i) out[t * H + i] += g * ws.shared_out[t * H + i];
    }
  }
}

}  // namespace shoal
