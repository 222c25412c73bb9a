// The CUDA backend of the op set in kernels/kernels.h: host launchers (this header, plain C++) for
// kernels whose __global__ code stays in the .cu files next to it.
//
// Conventions (the GPU forward pass, worker/cuda/):
//  - Every pointer is device memory unless named host_*; every launcher enqueues on `stream`, checks
//    the launch, and returns a Status (an error names the kernel and the rank, kernels/cuda/cuda_check.h).
//    Launchers never synchronize unless they say so.
//  - The residual stream and every GEMM output are f32 ([m, d], row-major); GEMM inputs (normalised
//    activations, the SiLU product, attention output) are bf16; weights are bf16 ([out, in], the
//    nn.Linear layout); norm weights and biases f32. Accumulation is f32 everywhere.
//  - The KV cache is bf16, paged like the CPU one: token slot s of a layer at k + s * kv_heads * head_dim.
//  - Semantics are those of the CPU kernels (kernels/kernels.h), which the gpu tests compare against.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "common/status.h"

namespace shoal::cuda {

using bf16 = __nv_bfloat16;

// --- Element-wise and normalisation (kernels/cuda/ops.cu) ---------------------------------------

// out[t, :] = f32(table[ids[t], :]) for t < m; table [vocab, d] bf16. Ids are validated on the host.
Status Embed(const bf16* table, int64_t d, const int32_t* ids, int64_t m, float* out, cudaStream_t stream);

// HF RMSNorm of m rows of width d: y = bf16(x / sqrt(mean(x²) + eps) * w). Feeds a GEMM.
Status RmsNormToBf16(const float* x, int64_t m, int64_t d, const float* w, float eps, bf16* y, cudaStream_t stream);
// The same in f32; y may equal x (Qwen3's per-head q/k norm: m = tokens × heads rows of head_dim).
Status RmsNormF32(const float* x, int64_t m, int64_t d, const float* w, float eps, float* y, cudaStream_t stream);

// cos/sin[t, i] = attention_factor · cos/sin(positions[t] · inv_freq[i]), i < half; [m, half] each.
Status RopeTable(const int32_t* positions, int64_t m, const float* inv_freq, int half, float attention_factor,
                 float* cos, float* sin, cudaStream_t stream);
// "rotate_half" RoPE in place on x[m, heads, head_dim] with the table's row t.
Status ApplyRope(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin,
                 cudaStream_t stream);

// y[i] += bias[i % n] for m rows of width n (Qwen2 q/k/v biases).
Status AddBias(float* y, int64_t m, int64_t n, const float* bias, cudaStream_t stream);

// h[r, i] = bf16(silu(gate_up[r, i]) * gate_up[r, n + i]) for r < rows, i < n: the fused gate|up
// projection's output [rows, 2n] → the down projection's input [rows, n].
Status SiluMulToBf16(const float* gate_up, int64_t rows, int64_t n, bf16* h, cudaStream_t stream);

// x[i] = bf16(src[i]) for `count` elements.
Status ToBf16(const float* src, int64_t count, bf16* x, cudaStream_t stream);

// --- Attention over the paged KV cache (kernels/cuda/attention.cu) ------------------------------

struct PagedKvLayer {
  bf16* k = nullptr;
  bf16* v = nullptr;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // ≤ 256
};

// Stores k[m, kv_heads*head_dim], v[m, ...] (f32, rounded to bf16) into slots[m] of the layer.
Status WriteKv(const PagedKvLayer& layer, const float* k, const float* v, int64_t m, const int64_t* slots,
               cudaStream_t stream);

// Causal GQA of m query tokens over the paged cache (prefill chunks and decode tokens mixed). Token t
// belongs to sequence token_seq[t], whose block table is block_tables[token_seq[t] * max_blocks ...];
// it attends to positions j ≤ positions[t] (and positions[t] - j < sliding_window when > 0). Its own
// step's keys must already be written. q[m, num_heads, head_dim] f32 → out[m, num_heads, head_dim] bf16.
// max_positions bounds positions[t] + 1 over the batch (sizes the launch; the host knows it).
// Table entries past a sequence's blocks are padding, -1 by convention; a token whose position is
// outside [0, max_positions) or whose key range reaches a negative entry gets NaN outputs (a broken
// table shows in the logits instead of as a read of another sequence's cache).
Status PagedAttention(const float* q, int64_t m, int num_heads, const int32_t* positions, const int32_t* token_seq,
                      const int32_t* block_tables, int max_blocks, int max_positions, const PagedKvLayer& layer,
                      float scale, int sliding_window, bf16* out, cudaStream_t stream);

// --- MoE routing, permutation and combine (kernels/cuda/moe.cu) ---------------------------------

// Router as the CPU one: softmax over logits[m, E], the top_k largest (descending; ties → lower id),
// optionally renormalised. ids/weights [m, top_k]. E ≤ 1024, top_k ≤ 32.
Status RouterTopK(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                  float* weights, cudaStream_t stream);

// Orders the m·top_k (token, choice) pairs expert-major, then by token (a stable order, the CPU one):
//   expert_offsets[E + 1]  row range of each expert in the permuted layout (exclusive prefix sum)
//   row_of[m * top_k]      the permuted row of pair (t, j)
//   row_token[m * top_k]   the token of each permuted row
// Ids must be in [0, num_experts) (RouterTopK's output is). scratch: MoePlanScratchBytes(E) bytes.
int64_t MoePlanScratchBytes(int num_experts);
Status MoePermutePlan(const int32_t* ids, int64_t m, int top_k, int num_experts, int64_t* expert_offsets,
                      int32_t* row_of, int32_t* row_token, void* scratch, cudaStream_t stream);

// out[r, :] = x[row_token[r], :] for r < rows (x [*, d] bf16): the expert-major copy of the rows.
Status PermuteRows(const bf16* x, int64_t d, const int32_t* row_token, int64_t rows, bf16* out,
                   cudaStream_t stream);

// residual[t, :] += Σ_j weights[t, j] · expert_out[row_of[t, j], :], the j taken in ascending order of
// ids[t, j] (the CPU order). expert_out [m * top_k, d] f32.
Status UnpermuteCombine(const float* expert_out, int64_t d, const int32_t* row_of, const int32_t* ids,
                        const float* weights, int64_t m, int top_k, float* residual, cudaStream_t stream);

// residual[t, :] += sigmoid(gate_logit[t]) · shared[t, :] (Qwen2-MoE's gated shared expert).
Status AddSigmoidGated(const float* shared, const float* gate_logit, int64_t m, int64_t d, float* residual,
                       cudaStream_t stream);

// --- Sampling (kernels/cuda/sampling.cu) --------------------------------------------------------

// out[r] = index of the largest of logits[r, :vocab] (ties → lowest index).
Status ArgMax(const float* logits, int64_t m, int vocab, int32_t* out, cudaStream_t stream);

struct SamplingRow {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;         // with `offset`: a Philox stream, so a row's draw is independent of the batch
  uint64_t offset = 0;
};
// One token per row from logits[m, vocab] (modified in place): greedy rows as ArgMax; others keep the
// top_k largest, then the smallest prefix (by probability) holding top_p of the mass, and draw from
// softmax(logits / temperature) over what is kept. rows: device array [m].
Status SampleRows(float* logits, int64_t m, int vocab, const SamplingRow* rows, int32_t* out, cudaStream_t stream);

}  // namespace shoal::cuda
