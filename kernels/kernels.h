// The op set of the forward pass. Every backend implements these with the same semantics; this header
// is the CPU backend's interface (kernels/cpu/), and the reference the CUDA backend is tested against.
//
// Conventions:
//  - Activations are f32, row-major, one row per token: x[m, d].
//  - Weight matrices keep the checkpoint dtype (f32, f16 or bf16) in the HF/PyTorch nn.Linear layout
//    W[out, in]; MatMul computes y = x · Wᵀ with f32 accumulation.
//  - Small vectors (norm weights, biases) are f32, widened once at load.
//  - Functions that take a ThreadPool split their work over it; results do not depend on the thread
//    count except through the order of float additions inside one dot product (none: each output
//    element is reduced by one thread in a fixed order).
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "common/dtype.h"
#include "common/sampling_params.h"
#include "common/thread_pool.h"

namespace shoal::kernels {

// A weight matrix W[rows, cols] (rows = output features, cols = input features), row-major.
// FP8 (e4m3) weights carry their dequantisation scales, one per block of block_rows × block_cols
// elements (edge blocks partial), [ceil(rows' / block_rows), scale_cols] f32 where rows' counts from
// the start of the tensor this matrix views: element (r, c) is F8E4M3ToF32(w) ·
// block_scale[((scale_row0 + r) / block_rows) · scale_cols + c / block_cols].
struct Matrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* block_scale = nullptr;  // FP8 only
  int64_t scale_row0 = 0, scale_cols = 0;
  int block_rows = 0, block_cols = 0;

  // Rows [r0, r0 + n) as a matrix of their own (block scales included).
  Matrix RowSlice(int64_t r0, int64_t n) const {
    Matrix m = *this;
    m.data = static_cast<const uint8_t*>(data) + static_cast<size_t>(r0 * cols) * DTypeSize(dtype);
    m.rows = n;
    m.scale_row0 = scale_row0 + r0;
    return m;
  }

  // The weights' bytes, and an FP8 matrix's block scales (resident and read like the weights).
  size_t nbytes() const {
    const size_t scales = block_scale ? static_cast<size_t>((rows + block_rows - 1) / block_rows * scale_cols) * 4 : 0;
    return static_cast<size_t>(rows * cols) * DTypeSize(dtype) + scales;
  }
  bool empty() const { return data == nullptr; }
};

// Which instruction set the CPU kernels picked at run time ("avx2+fma+f16c" or "generic").
const char* CpuKernelIsa();

// y[m, W.rows] = x[m, W.cols] · Wᵀ. `x` and `y` must not overlap.
void MatMul(const float* x, int64_t m, const Matrix& w, float* y, ThreadPool& pool);

// Several independent MatMuls in one parallel region (one wake-up and one barrier instead of one per
// matrix: q/k/v, or every routed expert's gate and up). Work is split by cost (rows × cols × m) over
// blocks of 8 rows of each matrix — the boundaries MatMul's own split uses — so every output is
// bit-identical to MatMul's. Jobs with m = 0 are skipped.
struct MatMulJob {
  const float* x = nullptr;
  int64_t m = 0;
  const Matrix* w = nullptr;
  float* y = nullptr;
};
void MatMulBatch(std::span<const MatMulJob> jobs, ThreadPool& pool);

// y[i, :] += bias for each of m rows of width n.
void AddBias(float* y, int64_t m, int64_t n, const float* bias);

// Row r of W widened to f32 (embedding lookup). out has W.cols floats.
void GatherRow(const Matrix& w, int64_t r, float* out);

// HF RMSNorm: y = x / sqrt(mean(x²) + eps) * weight, for m rows of width d. y may equal x.
void RmsNorm(const float* x, int64_t m, int64_t d, const float* weight, float eps, float* y);

// RoPE angles for m tokens: cos/sin[t, i] = attention_factor · cos/sin(positions[t] · inv_freq[i]) for
// i < half, with the angle computed in f32 as transformers does. One table serves q and k of every
// layer in a step.
void RopeTable(const int32_t* positions, int64_t m, const float* inv_freq, int half, float attention_factor,
               float* cos, float* sin);

// Rotary embedding in the HF "rotate_half" convention on x[m, heads, head_dim] in place: for
// i < head_dim/2, (x_i, x_{i+h/2}) is rotated by the angle whose cos/sin are row t of the RopeTable.
void ApplyRope(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin);

// The same rotation in the interleaved (complex-pair) convention of Llama 4: (x_2i, x_2i+1) is
// rotated by the angle of row t, column i of the RopeTable.
void ApplyRopeInterleaved(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin);

// One vector of head_dim values rotated by one RopeTable row (cos/sin: head_dim/2 values), in the
// rotate-half or the interleaved convention: the step both functions above apply per head.
void RotateHead(float* v, int head_dim, const float* cos, const float* sin, bool interleaved);

// The paged KV cache of one layer: blocks of block_size token slots, each slot [num_kv_heads, head_dim]
// of K (and likewise V). Token slot s lives at k + s * num_kv_heads * head_dim.
struct PagedKvLayer {
  float* k = nullptr;
  float* v = nullptr;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// Stores k[m, kv_dim], v[m, kv_dim] into token slots slots[m] of the layer (v: none when layer.v is
// null, as for an MLA latent cache).
void WriteKv(const PagedKvLayer& layer, const float* k, const float* v, int64_t m, const int64_t* slots);

// Causal grouped-query attention of m query tokens over the paged cache. Token t has position
// positions[t] and its sequence's block table block_tables[t] (block ids; slot of key position p is
// table[p / block_size] * block_size + p % block_size). It attends to keys at positions j ≤ positions[t]
// with, when sliding_window > 0, positions[t] - j < sliding_window, and when attention_chunk > 0,
// j in the same chunk: j / attention_chunk == positions[t] / attention_chunk (Llama 4's chunked
// layers). The keys of its own step must already be written; block-table entries of positions it
// cannot see are never read. q[m, num_heads, head_dim] → out[m, num_heads, head_dim].
void PagedAttention(const float* q, int64_t m, int num_heads, const int32_t* positions,
                    const int32_t* const* block_tables, const PagedKvLayer& layer, float scale, int sliding_window,
                    float* out, ThreadPool& pool, int attention_chunk = 0);

// Router: softmax over logits[m, num_experts] (f32), the top_k largest (descending; ties → lower id),
// optionally renormalised to sum to 1. Writes ids[m, top_k] and weights[m, top_k].
void RouterTopK(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                float* weights);

// DeepSeek-V3's router (transformers' DeepseekV3TopkRouter): scores = sigmoid(logits); choice scores
// = scores + bias; of n_group equal groups, the topk_group with the largest sum of their two best
// choice scores stay; the top_k choice scores there are chosen (ties → lower id); their weights are
// the unbiased scores, divided by their sum (+1e-20) when renormalize, times scaling.
void RouterGroupedTopK(const float* logits, int64_t m, int num_experts, int top_k, int n_group, int topk_group,
                       const float* bias, bool renormalize, float scaling, int32_t* ids, float* weights);

// Llama 4's router: the top_k largest logits (descending; ties → lower id), each scored
// sigmoid(logit). Writes ids[m, top_k] and scores[m, top_k].
void RouterTopKSigmoid(const float* logits, int64_t m, int num_experts, int top_k, int32_t* ids, float* scores);

// h[m, n] = silu(gate[m, n]) * up[m, n], in place into gate.
void SiluMul(float* gate, const float* up, int64_t count);

// SiLU-gated FFN: out[m, H] = (silu(x·Gᵀ) ⊙ (x·Uᵀ)) · Dᵀ. scratch needs 2·m·G.rows floats. out may be
// x itself (x is read only before out is written; the MoE block runs experts in place).
void SiluGatedFfn(const float* x, int64_t m, const Matrix& gate, const Matrix& up, const Matrix& down, float* scratch,
                  float* out, ThreadPool& pool);

// Sampling of one token from logits[vocab] (modified in place: NaN logits, from a diverged model,
// become -inf, so they are never drawn; an all-NaN row gives 0, as ArgMax does). Reads temperature,
// top_k and top_p; the penalties are applied by the caller (the scheduler), the seed is in `rng`.
int32_t SampleToken(float* logits, int vocab, const SamplingParams& params, std::mt19937_64& rng);

// The log-softmax of logits[vocab] at a temperature (1 when greedy): what logprobs report. NaN logits
// count as -inf. Where the sampler falls back to the argmax — a +inf maximum, one that overflows at
// this temperature, or a row with no finite logit — so does this: that token 0, every other -inf.
// Every value is <= 0 or -inf, never NaN.
class LogSoftmax {
 public:
  LogSoftmax(const float* logits, int vocab, float temperature);
  float At(int32_t token) const;

 private:
  const float* logits_;
  float inv_t_ = 1.0f;
  double log_z_ = 0.0;
  int32_t only_token_ = -1;  // >= 0 in the argmax fallback
};

// Index of the largest element (ties → lowest index; NaNs never win, all NaN → 0): greedy decoding.
int32_t ArgMax(const float* x, int n);

}  // namespace shoal::kernels
