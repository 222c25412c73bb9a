#include "worker/moe.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace shoal {

namespace {

// Runs `f` (a Dispatch or Combine) and adds its wall time to ws.exchange_seconds.
template <typename F>
Status TimedExchange(MoeWorkspace& ws, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  Status st = f();
  ws.exchange_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace

Status RunMoeLayer(const ModelConfig& c, int layer_index, const LayerWeights& L, const float* h, int64_t T, float* out,
                   MoeWorkspace& ws, comm::ExpertExchange& ex, int64_t timeout_ms, ThreadPool& pool,
                   bool add_shared_expert) {
  const int E = c.num_experts, K = c.num_experts_per_tok;
  const int64_t H = c.hidden_size;
  ws.router_logits.resize(static_cast<size_t>(T * E));
  ws.topk_ids.resize(static_cast<size_t>(T * K));
  ws.topk_weights.resize(static_cast<size_t>(T * K));
  const bool scale_input = c.router_sigmoid_scales_input;
  if (T > 0) kernels::MatMul(h, T, L.router, ws.router_logits.data(), pool);
  if (!scale_input) {
    if (T > 0 && c.router_grouped_sigmoid) {
      kernels::RouterGroupedTopK(ws.router_logits.data(), T, E, K, c.n_group, c.topk_group,
                                 L.router_bias.empty() ? nullptr : L.router_bias.data(), c.norm_topk_prob,
                                 static_cast<float>(c.routed_scaling_factor), ws.topk_ids.data(),
                                 ws.topk_weights.data());
    } else if (T > 0) {
      kernels::RouterTopK(ws.router_logits.data(), T, E, K, c.norm_topk_prob, ws.topk_ids.data(),
                          ws.topk_weights.data());
    }
    SHOAL_RETURN_IF_ERROR(TimedExchange(
        ws, [&] { return ex.Dispatch(h, T, ws.topk_ids.data(), ws.topk_weights.data(), Deadline::AfterMs(timeout_ms)); }));
  } else {
    // Llama 4: each (token, choice) is its own row h·score, sent with weight 1 through an exchange of
    // top-1 rows (the engine creates it so), and the K outputs of a token are summed after Combine.
    if (T > 0) {
      kernels::RouterTopKSigmoid(ws.router_logits.data(), T, E, K, ws.topk_ids.data(), ws.topk_weights.data());
    }
    ws.scaled_rows.resize(static_cast<size_t>(T * K * H));
    for (int64_t r = 0; r < T * K; ++r) {
      const float s = ws.topk_weights[r];
      const float* src = h + (r / K) * H;
      float* dst = ws.scaled_rows.data() + r * H;
      for (int64_t i = 0; i < H; ++i) dst[i] = src[i] * s;
    }
    std::fill(ws.topk_weights.begin(), ws.topk_weights.end(), 1.0f);
    SHOAL_RETURN_IF_ERROR(TimedExchange(ws, [&] {
      return ex.Dispatch(ws.scaled_rows.data(), T * K, ws.topk_ids.data(), ws.topk_weights.data(),
                         Deadline::AfterMs(timeout_ms));
    }));
  }

  // This rank's experts on the rows the group sent it.
  const std::vector<int>& local = ex.local_experts();
  const std::span<const int64_t> offsets = ex.expert_offsets();
  ws.expert_used.assign(E, 0);
  ws.expert_rows_total.resize(static_cast<size_t>(E), 0);
  ws.layer_expert_rows.resize(static_cast<size_t>(c.num_layers) * E, 0);
  uint64_t* layer_rows = ws.layer_expert_rows.data() + static_cast<size_t>(layer_index) * E;
  // Every expert's gate and up projections in one parallel region, then every down projection in
  // another (kernels::MatMulBatch: the same results as a MatMul per matrix, two barriers per layer
  // instead of three per expert). Expert i's gate and up outputs sit at [2·b·I, 2·(b+n)·I) of the
  // scratch, b its first row.
  const int64_t I = c.moe_intermediate_size;
  ws.ffn_scratch.resize(static_cast<size_t>(2 * ex.num_expert_rows() * I));
  std::vector<kernels::MatMulJob>& gate_up = ws.gate_up_jobs;
  std::vector<kernels::MatMulJob>& down = ws.down_jobs;
  gate_up.clear();
  down.clear();
  Status missing = Status::Ok();
  for (size_t i = 0; i < local.size(); ++i) {
    const int64_t b = offsets[i], n = offsets[i + 1] - b;
    if (n == 0) continue;
    const int e = local[i];
    ws.expert_rows_total[e] += static_cast<uint64_t>(n);
    layer_rows[e] += static_cast<uint64_t>(n);
    const FfnWeights& f = L.experts[e];
    if (!f.present()) {
      // Still combine (with zeros) so the peers are not left waiting; report afterwards.
      if (missing.ok()) missing = Internal("expert " + std::to_string(e) + " is placed on this rank but not loaded");
      std::fill(ex.expert_out() + b * H, ex.expert_out() + (b + n) * H, 0.0f);
      continue;
    }
    ws.expert_used[e] = 1;
    float* g = ws.ffn_scratch.data() + 2 * b * I;
    gate_up.push_back({ex.expert_rows() + b * H, n, &f.gate, g});
    gate_up.push_back({ex.expert_rows() + b * H, n, &f.up, g + n * I});
    down.push_back({g, n, &f.down, ex.expert_out() + b * H});
  }
  kernels::MatMulBatch(gate_up, pool);
  for (size_t j = 0; j < down.size(); ++j) {
    float* g = gate_up[2 * j].y;  // the expert's gate outputs, then its up outputs
    kernels::SiluMul(g, g + down[j].m * I, down[j].m * I);
  }
  kernels::MatMulBatch(down, pool);

  SHOAL_RETURN_IF_ERROR(TimedExchange(ws, [&] { return ex.Combine(Deadline::AfterMs(timeout_ms)); }));
  SHOAL_RETURN_IF_ERROR(missing);
  if (!scale_input) {
    ex.WeightedSum(out);
  } else {
    std::fill(out, out + T * H, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      for (int j = 0; j < K; ++j) {
        const float* row = ex.combined_row(t * K + j, 0);
        for (int64_t i = 0; i < H; ++i) out[t * H + i] += row[i];
      }
    }
  }

  if (add_shared_expert && L.shared_expert.present() && T > 0) {
    ws.shared_out.resize(static_cast<size_t>(T * H));
    RunSharedExpert(c, L, h, T, ws.shared_out.data(), ws, pool);
    for (int64_t i = 0; i < T * H; ++i) out[i] += ws.shared_out[i];
  }
  return Status::Ok();
}

void RunSharedExpert(const ModelConfig& c, const LayerWeights& L, const float* h, int64_t T, float* out,
                     MoeWorkspace& ws, ThreadPool& pool) {
  const int64_t H = c.hidden_size;
  if (!L.shared_expert.present() || T == 0) {
    std::fill(out, out + T * H, 0.0f);
    return;
  }
  ws.ffn_scratch.resize(static_cast<size_t>(2 * T * L.shared_expert.gate.rows));
  kernels::SiluGatedFfn(h, T, L.shared_expert.gate, L.shared_expert.up, L.shared_expert.down, ws.ffn_scratch.data(),
                        out, pool);
  if (L.shared_expert_gate.empty()) return;  // Llama 4, DeepSeek-V3: always on, unscaled
  ws.shared_gate.resize(static_cast<size_t>(T));
  kernels::MatMul(h, T, L.shared_expert_gate, ws.shared_gate.data(), pool);
  for (int64_t t = 0; t < T; ++t) {
    const float g = 1.0f / (1.0f + std::exp(-ws.shared_gate[t]));
    for (int64_t i = 0; i < H; ++i) out[t * H + i] *= g;
  }
}

}  // namespace shoal
