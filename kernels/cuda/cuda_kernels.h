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
#include <span>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "common/sampling_params.h"
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

// EXPERIMENTAL, not yet run on a GPU (used with engine.experimental_gpu_kernels only).
// The attention prologue of one layer in one launch: in place on q [m, num_heads, head_dim] and
// k [m, kv_heads, head_dim] (f32), the per-head RMSNorm (q_norm / k_norm [head_dim], Qwen3; null: none)
// then RoPE with the table's row t (cos/sin [m, head_dim / 2], RopeTable's); then k and v rounded to
// bf16 into slots[t] of the layer (a negative slot is not written). The same as RmsNormF32 on q and k,
// ApplyRope on both and WriteKv, up to the order of the norm's sum of squares.
Status AttentionPrologue(float* q, float* k, const float* v, int64_t m, int num_heads, const float* q_norm,
                         const float* k_norm, float eps, const float* cos, const float* sin, const int64_t* slots,
                         const PagedKvLayer& layer, cudaStream_t stream);

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
// splits > 1 (flash-decoding, for steps with few tokens; EXPERIMENTAL, not yet run on a GPU — the
// engine passes splits > 1 only with engine.experimental_gpu_kernels): each (token, head)'s key range is cut into
// `splits` parts attended by separate thread blocks, whose partial softmax states a second kernel
// combines — more blocks in flight when a decode step has few tokens. split_scratch: device floats,
// PagedAttentionScratchFloats(m · num_heads, splits, head_dim) of them. The split count depends only
// on the batch shape, not on the context lengths, so a decode step stays capturable as a graph.
constexpr int kMaxAttentionSplits = 32;
Status PagedAttention(const float* q, int64_t m, int num_heads, const int32_t* positions, const int32_t* token_seq,
                      const int32_t* block_tables, int max_blocks, int max_positions, const PagedKvLayer& layer,
                      float scale, int sliding_window, bf16* out, cudaStream_t stream, int splits = 1,
                      float* split_scratch = nullptr);
// Splits that give about two blocks per multiprocessor for `items` (token, head) pairs, in [1, 32].
int PagedAttentionSplits(int64_t items, int multiprocessors);
int64_t PagedAttentionScratchFloats(int64_t items, int splits, int head_dim);

// --- MoE routing, permutation and combine (kernels/cuda/moe.cu) ---------------------------------

// Router as the CPU one: softmax over logits[m, E], the top_k largest (descending; ties → lower id),
// optionally renormalised. ids/weights [m, top_k]. E ≤ 1024, top_k ≤ 32.
Status RouterTopK(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                  float* weights, cudaStream_t stream);

// EXPERIMENTAL, not yet run on a GPU (used with engine.experimental_gpu_kernels only).
// RouterTopK then MoePermutePlan in one single-block launch, for small steps (m · top_k ≤
// kMaxRoutePlanPairs): the same ids, weights, offsets and rows as the two calls, without the plan's
// scratch.
constexpr int kMaxRoutePlanPairs = 512;
Status RouteAndPlan(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                    float* weights, int64_t* expert_offsets, int32_t* row_of, int32_t* row_token, cudaStream_t stream);

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

// The routed experts of a decode-sized step with the row counts on the device (kernels/cuda/moe_gemv.cu),
// so the step needs no host synchronisation and can run as a CUDA graph. For every expert e with rows
// [expert_offsets[e], expert_offsets[e + 1]) (MoePermutePlan's device offsets):
//   MoeGateUpSilu: h[r, i] = bf16(silu(x[row_token[r]] · Wgu_e[i]) · (x[row_token[r]] · Wgu_e[I + i]))
//                  for i < I — the fused gate|up projection [2I, H] (DeviceWeights' stacking), SiLU·up
//                  and the row gather in one launch; h [rows, I] bf16, expert-major like the plan.
//   MoeDown:       y[r, :] = h[r, :] · Wd_eᵀ, Wd_e [H, I]; y [rows, H] f32 (UnpermuteCombine's input).
// gate_up / down: DEVICE arrays of E weight pointers (each 16-byte aligned; null only for an expert
// that gets no rows). Widths that are read (H for gate|up, I for down) must be multiples of 8 and the
// input rows 16-byte aligned. Experts without rows cost a block that exits. Rows per expert beyond 8
// re-read the weights (from L2): meant for decode steps, where the cuBLAS path's host sync dominates.
Status MoeGateUpSilu(const bf16* x, int64_t hidden, const int32_t* row_token, const int64_t* expert_offsets,
                     int num_experts, const bf16* const* gate_up, int64_t inter, bf16* h, cudaStream_t stream);
Status MoeDown(const bf16* h, int64_t inter, const int64_t* expert_offsets, int num_experts, const bf16* const* down,
               int64_t hidden, float* y, cudaStream_t stream);

// EXPERIMENTAL, not yet run on a GPU (kernels/cuda/skinny_gemm.cu; the engine uses them only with
// engine.experimental_gpu_kernels): skinny GEMMs on the tensor cores (mma.sync m16n8k16), a block of
// 4 warps per 16 output columns × 8 token rows, the warps splitting k. The same contracts as
// MoeGateUpSilu / MoeDown (input widths multiples of 8, rows 16-byte aligned), and:
Status MoeGateUpSiluTc(const bf16* x, int64_t hidden, const int32_t* row_token, const int64_t* expert_offsets,
                       int num_experts, const bf16* const* gate_up, int64_t inter, bf16* h, cudaStream_t stream);
Status MoeDownTc(const bf16* h, int64_t inter, const int64_t* expert_offsets, int num_experts, const bf16* const* down,
                 int64_t hidden, float* y, cudaStream_t stream);
// Dense projections of the same m rows in one launch, one per output: y[r, :] (= or +=) x[r, :] · Wᵀ
// (+ bias), W [n, k] bf16 (16-byte aligned), y [m, n] f32, bias [n] f32 or null. accumulate adds into
// y (the residual stream), as Gemm::Linear's beta = 1.
constexpr int kMaxSkinny = 3;
struct SkinnyOutput {
  const bf16* w = nullptr;
  int64_t n = 0;
  float* y = nullptr;
  const float* bias = nullptr;
  bool accumulate = false;
};
Status SkinnyLinear(const bf16* x, int64_t m, int64_t k, std::span<const SkinnyOutput> outputs, cudaStream_t stream);

// residual[t, :] += sigmoid(gate_logit[t]) · shared[t, :] (Qwen2-MoE's gated shared expert).
Status AddSigmoidGated(const float* shared, const float* gate_logit, int64_t m, int64_t d, float* residual,
                       cudaStream_t stream);

// --- Sampling (kernels/cuda/sampling.cu) --------------------------------------------------------

// out[r] = index of the largest of logits[r, :vocab] (ties → lowest index; NaNs never win, all NaN → 0).
Status ArgMax(const float* logits, int64_t m, int vocab, int32_t* out, cudaStream_t stream);

struct SamplingRow {
  float temperature = 0.0f;  // below shoal::kGreedyBelowTemperature (0, NaN) = greedy, as ArgMax
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;         // with `offset`: a Philox stream, so a row's draw is independent of the batch
  uint64_t offset = 0;
};
// One token per row from logits[m, vocab] (modified in place): greedy rows as ArgMax; others keep the
// top_k largest, then the smallest prefix (by probability) holding top_p of the mass, and draw from
// softmax(logits / temperature) over what is kept. NaN logits are never kept (the CPU's -inf); a row
// with no finite logit, or whose largest logit / temperature overflows, is greedy. rows: device array [m].
Status SampleRows(float* logits, int64_t m, int vocab, const SamplingRow* rows, int32_t* out, cudaStream_t stream);

}  // namespace shoal::cuda
