// Attention over the paged bf16 KV cache: WriteKv and PagedAttention of kernels/cuda/cuda_kernels.h,
// with the semantics of the CPU kernels (kernels/cpu/attention.cc).
//
// PagedAttention runs one thread block per (query token, query head), for decode tokens and prefill
// chunks alike. The block walks the token's key range [first, pos] in tiles of kTile keys and keeps an
// online softmax (running max, running sum, rescaled accumulator), so no buffer grows with the
// context and a 100k-token decode needs no scratch memory:
//   1. scores: thread i computes the score of key (tile start + i) — the key range is split across all
//      threads of the block, each reading its key's row straight from the cache;
//   2. block-wide max and sum of the tile (warp shuffles, then the kWarps partials in shared memory);
//   3. P·V: the threads are split into `key_groups` groups; a group covers one V row (a thread per VEC
//      consecutive dims, so a row is one coalesced read) and the groups take interleaved keys of the
//      tile. Every thread holds the same running max, so the groups' partial accumulators share one
//      scale and are summed once at the end.
// The reductions run in a fixed order, so the result does not depend on scheduling.
//
// What this leaves on the table, and what a FlashAttention-style prefill would change: here every
// (token, head) block reads its whole K/V range on its own, so a prefill chunk of n tokens reads
// O(n²·head_dim) bytes of cache (L2 absorbs part of it, as neighbouring blocks are neighbouring heads
// and tokens), and the dot products run on CUDA cores. A tiled kernel would give one block a tile of
// Br query rows of one sequence (times the num_heads/num_kv_heads query heads sharing a kv head),
// stage each Bc-key K/V tile in shared memory once for all of them, compute S = Q·Kᵀ and O += P·V with
// bf16 tensor-core MMAs (q rounded to bf16, f32 accumulation), keep a running max/sum per query row,
// apply the causal/window mask only on the diagonal tiles and skip the tiles above it — cutting cache
// traffic by ~Br·group. For decode, a batch of few sequences gives few blocks (m·num_heads); splitting
// one token's key range across blocks (flash-decoding) needs a partial-result buffer and a second
// reduction kernel, which this launcher's contract (no scratch argument) does not provide.
#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kThreads = 128;  // per attention block; one key per thread in the score phase
constexpr int kWarps = kThreads / 32;
constexpr int kTile = kThreads;
// Blocks beyond this are served by the grid-stride loop; far below the 2³¹-1 limit of gridDim.x.
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;

static_assert(kThreads % 32 == 0, "whole warps");
// With VEC = 1 a row has up to kMaxHeadDim columns and a thread owns at most two of them.
static_assert(kMaxHeadDim <= 2 * kThreads, "a thread holds at most two columns of a V row");

// VEC consecutive bf16 values widened to f32. VEC = 8 is one 16-byte load; the caller guarantees the
// alignment (head_dim % VEC == 0 and a cache base aligned to 2·VEC bytes).
template <int VEC>
__device__ __forceinline__ void LoadBf16(const bf16* __restrict__ p, float (&f)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 t = __bfloat1622float2(h[e]);
      f[2 * e] = t.x;
      f[2 * e + 1] = t.y;
    }
  } else if constexpr (VEC == 2) {
    const float2 t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    f[0] = t.x;
    f[1] = t.y;
  } else {
    static_assert(VEC == 1, "VEC is 1, 2 or 8");
    f[0] = __bfloat162float(p[0]);
  }
}

// Block-wide max / sum; every thread returns the same value (the partials are combined in the same
// order by all threads), which keeps the online-softmax state identical across the block. `red` must
// not be rewritten until every thread has returned (the callers' later barriers ensure that).
__device__ __forceinline__ float BlockMax(float x, float* red, int lane, int warp) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float r = red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, red[w]);
  return r;
}

__device__ __forceinline__ float BlockSum(float x, float* red, int lane, int warp) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  if (lane == 0) red[warp] = x;
  __syncthreads();
  float r = red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r += red[w];
  return r;
}

__global__ void WriteKvKernel(const float* __restrict__ k, const float* __restrict__ v, int64_t m, int64_t width,
                              const int64_t* __restrict__ slots, bf16* __restrict__ k_cache,
                              bf16* __restrict__ v_cache) {
  const int64_t total = m * width;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t t = i / width;
    const int64_t c = i - t * width;
    const int64_t slot = slots[t];
    // A negative slot is a padding row (no cache slot); the CPU kernel is never given one, and here it
    // must not turn into a write before the cache.
    if (slot < 0) continue;
    k_cache[slot * width + c] = __float2bfloat16(k[i]);
    v_cache[slot * width + c] = __float2bfloat16(v[i]);
  }
}

// A warp per (token, head) row of q and k: the per-head RMSNorm (Qwen3), then RoPE, and for k rows
// the k and v rows into the cache slot. The row is staged in the warp's shared memory, so RoPE's pairs
// (i, i + half) need not be owned by one lane.
constexpr int kPrologueWarps = 4;

__global__ void __launch_bounds__(kPrologueWarps * 32)
    AttentionPrologueKernel(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v, int64_t m,
                            int heads, int kv_heads, int head_dim, const float* __restrict__ q_norm,
                            const float* __restrict__ k_norm, float eps, const float* __restrict__ cos_t,
                            const float* __restrict__ sin_t, const int64_t* __restrict__ slots,
                            bf16* __restrict__ k_cache, bf16* __restrict__ v_cache) {
  __shared__ float row_s[kPrologueWarps][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* buf = row_s[warp];
  const int per_token = heads + kv_heads, half = head_dim / 2;
  const int64_t kv_width = static_cast<int64_t>(kv_heads) * head_dim;
  const int64_t rows = m * per_token;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kPrologueWarps + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kPrologueWarps) {
    const int64_t t = r / per_token;
    const int hh = static_cast<int>(r - t * per_token);
    const bool is_q = hh < heads;
    const int kvh = hh - heads;
    float* x = is_q ? q + (t * heads + hh) * head_dim : k + t * kv_width + static_cast<int64_t>(kvh) * head_dim;
    const float* norm = is_q ? q_norm : k_norm;
    float ss = 0.0f;
    for (int i = lane; i < head_dim; i += 32) {
      const float a = x[i];
      buf[i] = a;
      ss += a * a;
    }
    if (norm != nullptr) {
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      const float inv = 1.0f / sqrtf(ss / static_cast<float>(head_dim) + eps);
      for (int i = lane; i < head_dim; i += 32) buf[i] = norm[i] * (buf[i] * inv);  // RmsNormF32's order
    }
    __syncwarp();
    const float* c = cos_t + t * half;
    const float* sn = sin_t + t * half;
    const int64_t slot = is_q ? -1 : slots[t];
    bf16* kc = slot >= 0 ? k_cache + slot * kv_width + static_cast<int64_t>(kvh) * head_dim : nullptr;
    for (int i = lane; i < half; i += 32) {
      const float a = buf[i], b = buf[i + half];
      const float ra = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, sn[i]));  // ApplyRope's arithmetic
      const float rb = __fadd_rn(__fmul_rn(b, c[i]), __fmul_rn(a, sn[i]));
      x[i] = ra;
      x[i + half] = rb;
      if (kc != nullptr) kc[i] = __float2bfloat16(ra), kc[i + half] = __float2bfloat16(rb);
    }
    if (slot >= 0) {
      const float* vr = v + t * kv_width + static_cast<int64_t>(kvh) * head_dim;
      bf16* vc = v_cache + slot * kv_width + static_cast<int64_t>(kvh) * head_dim;
      for (int i = lane; i < head_dim; i += 32) vc[i] = __float2bfloat16(vr[i]);
    }
    __syncwarp();  // buf is rewritten by the warp's next row
  }
}

struct AttentionParams {
  const float* q;
  int64_t items;  // m · num_heads
  int num_heads;
  int group;  // query heads per kv head
  const int32_t* positions;
  const int32_t* token_seq;
  const int32_t* block_tables;
  int max_blocks;
  int max_positions;
  const bf16* k;
  const bf16* v;
  int block_size;
  int head_dim;
  int64_t kv_stride;  // elements per token slot: num_kv_heads · head_dim
  float scale;
  int sliding_window;
  bf16* out;
  // splits > 1: work unit (item, split) covers the split-th of `splits` equal parts of the item's key
  // range and writes its unnormalised partial (m, l, acc[head_dim]) to partial[unit]; the combine
  // kernel then writes out. splits = 1: the unit is the item and writes out itself.
  int splits;
  float* partial;
};

// A poisoned unit: NaN in its output (one pass) or its partial (split).
__device__ __forceinline__ void WriteNaN(bf16* out, float* partial, int d_head, int tid, float nan) {
  if (partial != nullptr) {
    for (int d = tid; d < d_head + 2; d += kThreads) partial[d] = nan;
  } else {
    for (int d = tid; d < d_head; d += kThreads) out[d] = __float2bfloat16(nan);
  }
}

// kSplit = false: the one-pass kernel as it ran on an H200 (docs/benchmarks.md); every `if constexpr
// (kSplit)` below keeps that instantiation's statements as they were. kSplit = true: the experimental
// split (flash-decoding) variant, with more loads in flight — not yet run on a GPU.
template <int VEC, bool kSplit>
__global__ void __launch_bounds__(kThreads) PagedAttentionKernel(const AttentionParams p) {
  // Columns of VEC dims a thread owns in P·V: two only when VEC = 1 and head_dim > kThreads.
  constexpr int kMaxCols = (kMaxHeadDim / VEC + kThreads - 1) / kThreads;
  // key_groups · head_dim: ≤ kThreads · VEC while a row fits one group, head_dim when it does not.
  constexpr int kCombine = kThreads * VEC > kMaxHeadDim ? kThreads * VEC : kMaxHeadDim;
  __shared__ __align__(16) float q_s[kMaxHeadDim];
  __shared__ float p_s[kTile];        // the tile's scores, then its unnormalised probabilities
  __shared__ int64_t slot_s[kTile];   // the tile's cache slots, so P·V does not redo the table lookups
  __shared__ float comb_s[kCombine];  // the key groups' partial accumulators, [key_groups][head_dim]
  __shared__ float red_max[kWarps];
  __shared__ float red_sum[kWarps];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int d_head = p.head_dim;
  const int cols = d_head / VEC;
  const int group_width = cols < kThreads ? cols : kThreads;
  const int key_groups = kThreads / group_width;
  const int my_group = tid / group_width;  // ≥ key_groups: idle in P·V (head_dim not dividing kThreads)
  const int my_col = tid % group_width;
  const float nan = __int_as_float(0x7fc00000);

  const int splits = kSplit ? p.splits : 1;
  const int64_t units = p.items * splits;
  for (int64_t unit = blockIdx.x; unit < units; unit += gridDim.x) {
    __syncthreads();  // the previous unit's reads of q_s / comb_s are done
    const int64_t item = unit / splits;
    const int split = static_cast<int>(unit - item * splits);
    float* partial = kSplit ? p.partial + unit * (d_head + 2) : nullptr;
    const int64_t t = item / p.num_heads;
    const int h = static_cast<int>(item - t * p.num_heads);
    const int kvh = h / p.group;
    const int pos = p.positions[t];
    const int seq = p.token_seq[t];
    bf16* out = p.out + item * d_head;
    // Outside the contract (the host validated the launch bounds, not each row): write NaN rather than
    // read outside the block table, so the fault shows in the logits instead of as a wild read.
    // Uniform across the block, so the `continue` keeps the barriers matched.
    if (pos < 0 || pos >= p.max_positions || seq < 0) {
      WriteNaN(out, partial, d_head, tid, nan);
      continue;
    }
    for (int d = tid; d < d_head; d += kThreads) q_s[d] = p.q[item * d_head + d];
    __syncthreads();

    const int window_first = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
    // This unit's share of the keys [window_first, pos]: the split-th of `splits` parts (the last
    // parts may be empty when the range is short); all of it in one pass.
    int first = window_first, last = pos;
    if constexpr (kSplit) {
      const int per = (pos - window_first + 1 + splits - 1) / splits;
      first = window_first + split * per;
      last = min(pos, first + per - 1);
    }
    const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks;
    const bf16* k_head = p.k + static_cast<int64_t>(kvh) * d_head;
    const bf16* v_head = p.v + static_cast<int64_t>(kvh) * d_head;

    bool poisoned = false;
    float m_run = -INFINITY;  // running max of the scores seen so far
    float l_run = 0.0f;       // running Σ exp(score - m_run)
    float acc[kMaxCols][VEC];
#pragma unroll
    for (int c = 0; c < kMaxCols; ++c)
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[c][e] = 0.0f;

    for (int start = first; start <= last; start += kTile) {
      const int n = min(kTile, last - start + 1);  // ≥ 1
      float s = -INFINITY;
      int no_block = 0;  // this thread's key lies in a table entry with no block (negative id)
      if (tid < n) {
        const int j = start + tid;
        const int32_t block = table[j / p.block_size];
        no_block = block < 0;
        // A key without a block reads slot 0 (never outside the cache) and the item is poisoned below.
        const int64_t slot = no_block ? 0 : static_cast<int64_t>(block) * p.block_size + j % p.block_size;
        slot_s[tid] = slot;
        const bf16* k_row = k_head + slot * p.kv_stride;
        float dot = 0.0f;
        if constexpr (kSplit) {
          // Fully unrolled to the largest head, so all of the row's loads can be in flight at once.
#pragma unroll
          for (int i = 0; i < kMaxHeadDim; i += VEC) {
            if (i >= d_head) break;
            float kf[VEC];
            LoadBf16<VEC>(k_row + i, kf);
#pragma unroll
            for (int e = 0; e < VEC; ++e) dot += q_s[i + e] * kf[e];
          }
        } else {
#pragma unroll 4
          for (int i = 0; i < d_head; i += VEC) {
            float kf[VEC];
            LoadBf16<VEC>(k_row + i, kf);
#pragma unroll
            for (int e = 0; e < VEC; ++e) dot += q_s[i + e] * kf[e];
          }
        }
        s = dot * p.scale;  // scaled after the dot product, as the CPU kernel does
      }
      // Positions up to pos must all have blocks (the host reserves them; tables are padded with -1):
      // a key without one means a broken table, and the item's output becomes NaN rather than a
      // softmax over whatever slot 0 holds. The same answer on every thread, so the break is uniform.
      if (__syncthreads_or(no_block)) {
        poisoned = true;
        break;
      }
      const float m_new = fmaxf(m_run, BlockMax(s, red_max, lane, warp));
      const float pj = tid < n ? expf(s - m_new) : 0.0f;
      p_s[tid] = pj;
      // The barrier inside BlockSum also publishes p_s and slot_s to the P·V phase.
      const float tile_sum = BlockSum(pj, red_sum, lane, warp);
      const float corr = expf(m_run - m_new);  // 0 on the first tile (m_run = -inf)
      l_run = l_run * corr + tile_sum;
      m_run = m_new;

      if (my_group < key_groups) {
#pragma unroll
        for (int c = 0; c < kMaxCols; ++c)
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[c][e] *= corr;
        if constexpr (!kSplit) {
          for (int jj = my_group; jj < n; jj += key_groups) {
            const float w = p_s[jj];
            const bf16* v_row = v_head + slot_s[jj] * p.kv_stride;
#pragma unroll
            for (int c = 0; c < kMaxCols; ++c) {
              const int col = my_col + c * group_width;
              if (col < cols) {
                float vf[VEC];
                LoadBf16<VEC>(v_row + col * VEC, vf);
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[c][e] += w * vf[e];
              }
            }
          }
        }
        // kKeysInFlight keys' V pieces are loaded before any is used (the keys are independent),
        // then added in key order, as one key at a time would.
        constexpr int kKeysInFlight = 4;
        for (int j0 = my_group; kSplit && j0 < n; j0 += key_groups * kKeysInFlight) {
          float vf[kKeysInFlight][kMaxCols][VEC];
#pragma unroll
          for (int u = 0; u < kKeysInFlight; ++u) {
            const int jj = j0 + u * key_groups;
            const bf16* v_row = v_head + (jj < n ? slot_s[jj] : 0) * p.kv_stride;
#pragma unroll
            for (int c = 0; c < kMaxCols; ++c) {
              const int col = my_col + c * group_width;
              if (jj < n && col < cols) LoadBf16<VEC>(v_row + col * VEC, vf[u][c]);
            }
          }
#pragma unroll
          for (int u = 0; u < kKeysInFlight; ++u) {
            const int jj = j0 + u * key_groups;
            if (jj >= n) break;
            const float w = p_s[jj];
#pragma unroll
            for (int c = 0; c < kMaxCols; ++c) {
              if (my_col + c * group_width < cols) {
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[c][e] += w * vf[u][c][e];
              }
            }
          }
        }
      }
      __syncthreads();  // p_s / slot_s / red_max are rewritten by the next tile
    }

    if (poisoned) {
      WriteNaN(out, partial, d_head, tid, nan);
      continue;  // the next unit's first barrier orders this unit's shared-memory reads before reuse
    }
    // Sum the key groups' partial accumulators (same scale m_run) and normalise.
    if (my_group < key_groups) {
#pragma unroll
      for (int c = 0; c < kMaxCols; ++c) {
        const int col = my_col + c * group_width;
        if (col < cols) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) comb_s[my_group * d_head + col * VEC + e] = acc[c][e];
        }
      }
    }
    __syncthreads();
    if constexpr (kSplit) {
      // An empty share (first > last) leaves m = -inf, l = 0 and a zero accumulator: no weight.
      if (tid == 0) partial[0] = m_run, partial[1] = l_run;
      for (int d = tid; d < d_head; d += kThreads) {
        float sum = 0.0f;
        for (int g = 0; g < key_groups; ++g) sum += comb_s[g * d_head + d];
        partial[2 + d] = sum;
      }
      continue;
    }
    const float inv = 1.0f / l_run;
    for (int d = tid; d < d_head; d += kThreads) {
      float sum = 0.0f;
      for (int g = 0; g < key_groups; ++g) sum += comb_s[g * d_head + d];
      out[d] = __float2bfloat16(sum * inv);
    }
  }
}

// The splits' partials of each item into its output: every split rescaled to the largest running max.
// A NaN partial (a poisoned split) makes the whole item NaN.
__global__ void __launch_bounds__(kThreads)
    CombineSplitsKernel(const float* __restrict__ partial, int64_t items, int splits, int d_head, bf16* __restrict__ out) {
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const float* part = partial + item * splits * (d_head + 2);
    float m = -INFINITY;
    bool nan = false;
    for (int s = 0; s < splits; ++s) {
      const float ms = part[s * (d_head + 2)], ls = part[s * (d_head + 2) + 1];
      nan |= ls != ls || ms != ms;
      m = fmaxf(m, ms);
    }
    for (int d = threadIdx.x; d < d_head; d += blockDim.x) {
      float l = 0.0f, a = 0.0f;
      for (int s = 0; s < splits; ++s) {
        const float* ps = part + s * (d_head + 2);
        if (!(ps[1] > 0.0f)) continue;  // empty share
        const float f = expf(ps[0] - m);
        l += ps[1] * f;
        a += ps[2 + d] * f;
      }
      out[item * d_head + d] = __float2bfloat16(nan ? __int_as_float(0x7fc00000) : a / l);
    }
  }
}

template <int VEC>
Status LaunchPagedAttention(const AttentionParams& params, cudaStream_t stream) {
  const int64_t units = params.items * params.splits;
  const int64_t blocks = units < kMaxGridBlocks ? units : kMaxGridBlocks;
  if (params.splits > 1) {
    PagedAttentionKernel<VEC, true><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(params);
  } else {
    PagedAttentionKernel<VEC, false><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(params);
  }
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("PagedAttentionKernel");
  if (params.splits > 1) {
    const int64_t combine = params.items < kMaxGridBlocks ? params.items : kMaxGridBlocks;
    CombineSplitsKernel<<<static_cast<unsigned>(combine), kThreads, 0, stream>>>(
        params.partial, params.items, params.splits, params.head_dim, params.out);
    SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("CombineSplitsKernel");
  }
  return Status::Ok();
}

Status CheckLayer(const PagedKvLayer& layer, const char* fn) {
  if (layer.head_dim <= 0 || layer.head_dim > kMaxHeadDim)
    return InvalidArgument(std::string(fn) + ": head_dim " + std::to_string(layer.head_dim) +
                           " is outside [1, " + std::to_string(kMaxHeadDim) + "]");
  if (layer.num_kv_heads <= 0)
    return InvalidArgument(std::string(fn) + ": num_kv_heads " + std::to_string(layer.num_kv_heads) +
                           " must be positive");
  if (layer.block_size <= 0)
    return InvalidArgument(std::string(fn) + ": block_size " + std::to_string(layer.block_size) +
                           " must be positive");
  return Status::Ok();
}

bool AlignedTo(const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

}  // namespace

Status AttentionPrologue(float* q, float* k, const float* v, int64_t m, int num_heads, const float* q_norm,
                         const float* k_norm, float eps, const float* cos, const float* sin, const int64_t* slots,
                         const PagedKvLayer& layer, cudaStream_t stream) {
  if (m < 0) return InvalidArgument("AttentionPrologue: m " + std::to_string(m) + " is negative");
  SHOAL_RETURN_IF_ERROR(CheckLayer(layer, "AttentionPrologue"));
  if (num_heads <= 0 || layer.head_dim % 2 != 0)
    return InvalidArgument("AttentionPrologue: num_heads " + std::to_string(num_heads) + " and head_dim " +
                           std::to_string(layer.head_dim) + " (even) must be positive");
  if (m == 0) return Status::Ok();
  if (q == nullptr || k == nullptr || v == nullptr || cos == nullptr || sin == nullptr || slots == nullptr ||
      layer.k == nullptr || layer.v == nullptr)
    return InvalidArgument("AttentionPrologue: null input, table, slot or cache pointer with m " + std::to_string(m));
  const int64_t rows = m * (num_heads + layer.num_kv_heads);
  int64_t blocks = (rows + kPrologueWarps - 1) / kPrologueWarps;
  if (blocks > kMaxGridBlocks) blocks = kMaxGridBlocks;
  AttentionPrologueKernel<<<static_cast<unsigned>(blocks), kPrologueWarps * 32, 0, stream>>>(
      q, k, v, m, num_heads, layer.num_kv_heads, layer.head_dim, q_norm, k_norm, eps, cos, sin, slots, layer.k,
      layer.v);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("AttentionPrologueKernel");
  return Status::Ok();
}

Status WriteKv(const PagedKvLayer& layer, const float* k, const float* v, int64_t m, const int64_t* slots,
               cudaStream_t stream) {
  if (m < 0) return InvalidArgument("WriteKv: m " + std::to_string(m) + " is negative");
  SHOAL_RETURN_IF_ERROR(CheckLayer(layer, "WriteKv"));
  if (m == 0) return Status::Ok();
  if (k == nullptr || v == nullptr || slots == nullptr || layer.k == nullptr || layer.v == nullptr)
    return InvalidArgument("WriteKv: null k, v, slots or cache pointer with m " + std::to_string(m));
  const int64_t width = static_cast<int64_t>(layer.num_kv_heads) * layer.head_dim;
  constexpr int kBlock = 256;
  const int64_t total = m * width;
  int64_t blocks = (total + kBlock - 1) / kBlock;
  if (blocks > kMaxGridBlocks) blocks = kMaxGridBlocks;  // the kernel's grid-stride loop covers the rest
  WriteKvKernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(k, v, m, width, slots, layer.k, layer.v);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("WriteKvKernel");
  return Status::Ok();
}

Status PagedAttention(const float* q, int64_t m, int num_heads, const int32_t* positions, const int32_t* token_seq,
                      const int32_t* block_tables, int max_blocks, int max_positions, const PagedKvLayer& layer,
                      float scale, int sliding_window, bf16* out, cudaStream_t stream, int splits,
                      float* split_scratch) {
  if (m < 0) return InvalidArgument("PagedAttention: m " + std::to_string(m) + " is negative");
  if (splits < 1 || splits > kMaxAttentionSplits || (splits > 1 && split_scratch == nullptr))
    return InvalidArgument("PagedAttention: splits " + std::to_string(splits) + " outside [1, " +
                           std::to_string(kMaxAttentionSplits) + "], or no scratch for them");
  SHOAL_RETURN_IF_ERROR(CheckLayer(layer, "PagedAttention"));
  if (num_heads <= 0 || num_heads % layer.num_kv_heads != 0)
    return InvalidArgument("PagedAttention: num_heads " + std::to_string(num_heads) +
                           " is not a positive multiple of num_kv_heads " + std::to_string(layer.num_kv_heads));
  if (m == 0) return Status::Ok();
  if (q == nullptr || positions == nullptr || token_seq == nullptr || block_tables == nullptr || out == nullptr ||
      layer.k == nullptr || layer.v == nullptr)
    return InvalidArgument("PagedAttention: null input, output or cache pointer with m " + std::to_string(m));
  if (max_positions <= 0)
    return InvalidArgument("PagedAttention: max_positions " + std::to_string(max_positions) +
                           " must be positive when m > 0");
  // Every position the kernel accepts (< max_positions) must index inside a table row.
  if (max_blocks <= 0 || static_cast<int64_t>(max_blocks) * layer.block_size < max_positions)
    return InvalidArgument("PagedAttention: max_blocks " + std::to_string(max_blocks) + " × block_size " +
                           std::to_string(layer.block_size) + " does not cover max_positions " +
                           std::to_string(max_positions));

  AttentionParams params;
  params.q = q;
  params.items = m * num_heads;
  params.num_heads = num_heads;
  params.group = num_heads / layer.num_kv_heads;
  params.positions = positions;
  params.token_seq = token_seq;
  params.block_tables = block_tables;
  params.max_blocks = max_blocks;
  params.max_positions = max_positions;
  params.k = layer.k;
  params.v = layer.v;
  params.block_size = layer.block_size;
  params.head_dim = layer.head_dim;
  params.kv_stride = static_cast<int64_t>(layer.num_kv_heads) * layer.head_dim;
  params.scale = scale;
  params.sliding_window = sliding_window;
  params.out = out;
  params.splits = splits;
  params.partial = split_scratch;

  // The widest load every row offset keeps aligned: offsets are multiples of head_dim elements.
  const int d = layer.head_dim;
  if (d % 8 == 0 && AlignedTo(layer.k, 16) && AlignedTo(layer.v, 16))
    return LaunchPagedAttention<8>(params, stream);
  if (d % 2 == 0 && AlignedTo(layer.k, 4) && AlignedTo(layer.v, 4)) return LaunchPagedAttention<2>(params, stream);
  return LaunchPagedAttention<1>(params, stream);
}

int PagedAttentionSplits(int64_t items, int multiprocessors) {
  if (items <= 0) return 1;
  const int64_t want = (2 * static_cast<int64_t>(multiprocessors) + items - 1) / items;
  return static_cast<int>(want < 1 ? 1 : want > kMaxAttentionSplits ? kMaxAttentionSplits : want);
}

int64_t PagedAttentionScratchFloats(int64_t items, int splits, int head_dim) {
  return splits > 1 ? items * splits * (head_dim + 2) : 0;
}

}  // namespace shoal::cuda
