// MoE routing, the expert-major permutation and the weighted combine of the CUDA backend.
//
// The permutation plan is a stable counting sort of the m·top_k (token, choice) pairs by expert,
// done in three launches over fixed chunks of the flat pair array (pair i = t·top_k + j):
//   1. each warp counts its chunk's pairs per expert            → counts[chunk][expert]
//   2. one block turns the counts into each (expert, chunk)'s first row, expert-major then chunk
//      order, and writes expert_offsets
//   3. each warp walks its chunk in order again and hands out consecutive rows per expert
// Chunks are in pair order and rows within a chunk are given in pair order, so within one expert the
// rows follow the flat index, the CPU order. The number of chunks is capped, so the scratch depends
// on the expert count only (MoePlanScratchBytes(E)); chunks just grow with m.
#include <cmath>
#include <cstdint>
#include <string>

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kMaxExperts = 1024;   // RouterTopK's contract
constexpr int kMaxTopK = 32;        // RouterTopK's contract; UnpermuteCombine sorts ≤ this many per token
constexpr int kPlanMaxChunks = 256;
constexpr int64_t kPlanMinChunk = 256;  // below this a chunk is not worth a warp
// A plan warp keeps one int counter per expert in shared memory; the default 48 KiB bounds E.
constexpr int kPlanSharedBytes = 48 * 1024;
constexpr int kPlanMaxWarpsPerBlock = 4;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

bool Aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned CappedGrid(int64_t blocks) { return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks); }

__device__ __forceinline__ unsigned LaneMaskLt() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

// ---- RouterTopK: one warp per token, the token's probabilities in shared memory ----

constexpr int kRouterWarps = 4;

// Token t's top_k experts by the calling warp; p: the warp's shared scratch of num_experts floats.
__device__ void RouteToken(const float* __restrict__ logits, int64_t t, int num_experts, int top_k, bool renormalize,
                           float* p, int32_t* __restrict__ ids, float* __restrict__ weights) {
  const int lane = threadIdx.x % 32;
  const float* l = logits + t * num_experts;
  float mx = -INFINITY;
  for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, l[e]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.0f;
  for (int e = lane; e < num_experts; e += 32) {
    const float v = expf(l[e] - mx);
    p[e] = v;
    sum += v;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  // Dividing every exp by the same sum keeps the CPU's order and ties among the probabilities.
  for (int e = lane; e < num_experts; e += 32) p[e] /= sum;
  __syncwarp();

  // top_k rounds of a warp arg-max. A chosen expert is marked -2 and a NaN ranks as -1, both below
  // every probability, so each round finds a valid unchosen id (top_k ≤ E) even for NaN logits.
  int my_id = 0;
  float my_p = 0.0f, chosen = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float best = -3.0f;
    int best_e = 0;
    for (int e = lane; e < num_experts; e += 32) {
      const float v = p[e];
      const float rank = v != v ? -1.0f : v;
      if (rank > best) best = rank, best_e = e;  // e rises within a lane, so ties keep the lower id
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ov > best || (ov == best && oe < best_e)) best = ov, best_e = oe;
    }
    const float pv = p[best_e];
    if (lane == j) my_id = best_e, my_p = pv;
    chosen += pv;  // the CPU's order: j ascending
    __syncwarp();
    if (lane == best_e % 32) p[best_e] = -2.0f;
    __syncwarp();
  }
  if (lane < top_k) {
    ids[t * top_k + lane] = my_id;
    weights[t * top_k + lane] = renormalize ? my_p / chosen : my_p;
  }
  __syncwarp();  // the next token rewrites p
}

__global__ void __launch_bounds__(kRouterWarps * 32)
    RouterTopKKernel(const float* __restrict__ logits, int64_t m, int num_experts, int top_k, bool renormalize,
                     int32_t* __restrict__ ids, float* __restrict__ weights) {
  __shared__ float probs[kRouterWarps][kMaxExperts];
  const int warp = threadIdx.x / 32;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kRouterWarps + warp; t < m;
       t += static_cast<int64_t>(gridDim.x) * kRouterWarps) {
    RouteToken(logits, t, num_experts, top_k, renormalize, probs[warp], ids, weights);
  }
}

// RouterTopK and MoePermutePlan of a small step in one block: the warps route the tokens, then the
// block counts the pairs per expert, scans the counts and hands out rows in pair order (the same
// stable order as the three-kernel plan).
constexpr int kRoutePlanThreads = kRouterWarps * 32;

__global__ void __launch_bounds__(kRoutePlanThreads)
    RouteAndPlanKernel(const float* __restrict__ logits, int64_t m, int num_experts, int top_k, bool renormalize,
                       int32_t* __restrict__ ids, float* __restrict__ weights, int64_t* __restrict__ expert_offsets,
                       int32_t* __restrict__ row_of, int32_t* __restrict__ row_token) {
  __shared__ float probs[kRouterWarps][kMaxExperts];
  __shared__ int count[kMaxExperts];
  __shared__ int first_row[kMaxExperts];
  __shared__ int warp_total[kRouterWarps];
  __shared__ int32_t pair_expert[kMaxRoutePlanPairs];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t t = warp; t < m; t += kRouterWarps) {
    RouteToken(logits, t, num_experts, top_k, renormalize, probs[warp], ids, weights);
  }
  for (int e = threadIdx.x; e < num_experts; e += kRoutePlanThreads) count[e] = 0;
  __syncthreads();  // ids (global, written by this block) and count are ready
  const int pairs = static_cast<int>(m) * top_k;
  for (int i = threadIdx.x; i < pairs; i += kRoutePlanThreads) {
    const int e = ids[i];
    pair_expert[i] = e;
    atomicAdd(&count[e], 1);
  }
  __syncthreads();
  // Exclusive scan of the counts: each thread a run of consecutive experts, then the runs' totals
  // across the block (warp shuffles, then the warps' totals).
  constexpr int kPer = (kMaxExperts + kRoutePlanThreads - 1) / kRoutePlanThreads;
  const int e0 = threadIdx.x * kPer;
  int run = 0;
  for (int j = 0; j < kPer; ++j) run += e0 + j < num_experts ? count[e0 + j] : 0;
  int incl = run;
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += u;
  }
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  int before = incl - run;
  for (int w = 0; w < warp; ++w) before += warp_total[w];
  for (int j = 0; j < kPer && e0 + j < num_experts; ++j) {
    first_row[e0 + j] = before;
    expert_offsets[e0 + j] = before;
    before += count[e0 + j];
  }
  if (threadIdx.x == kRoutePlanThreads - 1) expert_offsets[num_experts] = pairs;
  __syncthreads();
  // Pair i's row: its expert's first row plus the pairs of that expert before it.
  for (int i = threadIdx.x; i < pairs; i += kRoutePlanThreads) {
    const int e = pair_expert[i];
    int rank = 0;
    for (int j = 0; j < i; ++j) rank += pair_expert[j] == e;
    const int row = first_row[e] + rank;
    row_of[i] = row;
    row_token[row] = i / top_k;
  }
}

// ---- MoePermutePlan ----

struct PlanShape {
  int64_t pairs;
  int64_t chunk;  // pairs per chunk
  int chunks;
  int warps_per_block;
};

// Warp w of block b owns chunk b·warps + w: [c·chunk, min(pairs, (c+1)·chunk)).
__global__ void PlanCountKernel(const int32_t* __restrict__ ids, PlanShape s, int num_experts,
                                int32_t* __restrict__ counts) {
  extern __shared__ int hist_all[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = blockIdx.x * s.warps_per_block + warp;
  if (c >= s.chunks) return;  // no block-wide sync below, so idle warps may leave
  int* hist = hist_all + warp * num_experts;
  for (int e = lane; e < num_experts; e += 32) hist[e] = 0;
  __syncwarp();
  const int64_t begin = c * s.chunk, end = min(s.pairs, begin + s.chunk);
  for (int64_t i = begin + lane; i < end; i += 32) {
    const int e = ids[i];
    if (static_cast<unsigned>(e) < static_cast<unsigned>(num_experts)) atomicAdd(&hist[e], 1);
  }
  __syncwarp();
  int32_t* out = counts + static_cast<int64_t>(c) * num_experts;
  for (int e = lane; e < num_experts; e += 32) out[e] = hist[e];
}

constexpr int kScanThreads = 1024;

// Exclusive prefix sum over the block; *total gets the sum of all inputs. Contains __syncthreads.
__device__ int64_t BlockExclusiveScan(int64_t v, int64_t* total) {
  __shared__ int64_t warp_tot[kScanThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int64_t u = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += u;
  }
  if (lane == 31) warp_tot[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int64_t w = lane < static_cast<int>(blockDim.x / 32) ? warp_tot[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t u = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += u;
    }
    warp_tot[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int64_t before = warp == 0 ? 0 : warp_tot[warp - 1];
  *total = warp_tot[blockDim.x / 32 - 1];
  __syncthreads();  // warp_tot is reused by the next call
  return before + incl - v;
}

// counts[c][e] becomes the number of expert e's pairs in chunks before c; expert_offsets[e] the
// expert's first row. Thread e owns column e, so the reads across a warp are contiguous.
__global__ void __launch_bounds__(kScanThreads)
    PlanScanKernel(int32_t* __restrict__ counts, int chunks, int num_experts, int64_t* __restrict__ expert_offsets) {
  int64_t carry = 0;
  for (int e0 = 0; e0 < num_experts; e0 += kScanThreads) {
    const int e = e0 + threadIdx.x;
    int64_t column = 0;
    if (e < num_experts) {
      // A batch of loads before the dependent stores, or each chunk would cost a full L2 round trip.
      constexpr int kBatch = 16;
      for (int c0 = 0; c0 < chunks; c0 += kBatch) {
        int32_t v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u)
          v[u] = c0 + u < chunks ? counts[static_cast<int64_t>(c0 + u) * num_experts + e] : 0;
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          if (c0 + u < chunks) counts[static_cast<int64_t>(c0 + u) * num_experts + e] = static_cast<int32_t>(column);
          column += v[u];
        }
      }
    }
    int64_t total;
    const int64_t before = BlockExclusiveScan(column, &total);
    if (e < num_experts) expert_offsets[e] = carry + before;
    carry += total;
  }
  if (threadIdx.x == 0) expert_offsets[num_experts] = carry;
}

__global__ void PlanScatterKernel(const int32_t* __restrict__ ids, PlanShape s, int top_k, int num_experts,
                                  const int32_t* __restrict__ counts, const int64_t* __restrict__ expert_offsets,
                                  int32_t* __restrict__ row_of, int32_t* __restrict__ row_token) {
  extern __shared__ int next_all[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = blockIdx.x * s.warps_per_block + warp;
  if (c >= s.chunks) return;
  int* next = next_all + warp * num_experts;  // the next free row of each expert for this chunk
  const int32_t* base = counts + static_cast<int64_t>(c) * num_experts;
  for (int e = lane; e < num_experts; e += 32) next[e] = static_cast<int>(expert_offsets[e]) + base[e];
  __syncwarp();
  const int64_t begin = c * s.chunk, end = min(s.pairs, begin + s.chunk);
  // Warp-uniform trip count: __match_any_sync needs every lane.
  for (int64_t i0 = begin; i0 < end; i0 += 32) {
    const int64_t i = i0 + lane;
    int e = i < end ? ids[i] : -1;
    if (static_cast<unsigned>(e) >= static_cast<unsigned>(num_experts)) e = -1;
    // Lanes with the same expert take consecutive rows in lane (= pair) order.
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & LaneMaskLt());
    const int first = e >= 0 ? next[e] : 0;
    __syncwarp();
    if (e >= 0 && rank == 0) next[e] = first + __popc(peers);
    __syncwarp();
    if (e >= 0) {
      const int row = first + rank;
      row_of[i] = row;
      row_token[row] = static_cast<int32_t>(i / top_k);
    }
  }
}

PlanShape MakePlanShape(int64_t pairs, int num_experts) {
  PlanShape s{};
  s.pairs = pairs;
  const int64_t by_cap = (pairs + kPlanMaxChunks - 1) / kPlanMaxChunks;
  s.chunk = by_cap > kPlanMinChunk ? by_cap : kPlanMinChunk;
  s.chunks = static_cast<int>((pairs + s.chunk - 1) / s.chunk);
  const int fit = kPlanSharedBytes / (num_experts * static_cast<int>(sizeof(int)));
  s.warps_per_block = fit < kPlanMaxWarpsPerBlock ? fit : kPlanMaxWarpsPerBlock;
  return s;
}

// ---- Row permutation and combine ----

// Rows are moved in the widest unit that the row width and both pointers allow: 16 bytes for the
// usual hidden sizes. Several rows share a block when rows are short.
constexpr int kPermuteUnroll = 4;  // loads in flight per thread before the first store

template <typename V>
__global__ void PermuteRowsKernel(const V* __restrict__ x, int64_t row_vecs, const int32_t* __restrict__ row_token,
                                  int64_t rows, V* __restrict__ out) {
  constexpr int kUnroll = kPermuteUnroll;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const V* src = x + static_cast<int64_t>(row_token[r]) * row_vecs;
    V* dst = out + r * row_vecs;
    for (int64_t v0 = threadIdx.x; v0 < row_vecs; v0 += kUnroll * blockDim.x) {
      V buf[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + u * blockDim.x;
        if (v < row_vecs) buf[u] = src[v];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + u * blockDim.x;
        if (v < row_vecs) dst[v] = buf[u];
      }
    }
  }
}

template <typename V>
Status LaunchPermute(const bf16* x, int64_t d, const int32_t* row_token, int64_t rows, bf16* out,
                     cudaStream_t stream) {
  const int64_t vecs = d * static_cast<int64_t>(sizeof(bf16)) / static_cast<int64_t>(sizeof(V));
  // Size the row's thread group so each thread has kPermuteUnroll loads in flight: with one vector
  // per thread a block would not keep enough bytes in flight to approach copy bandwidth.
  int tpr = 32;
  while (tpr < 256 && tpr * kPermuteUnroll < vecs) tpr *= 2;
  const int rpb = 256 / tpr;
  PermuteRowsKernel<V><<<CappedGrid((rows + rpb - 1) / rpb), dim3(tpr, rpb), 0, stream>>>(
      reinterpret_cast<const V*>(x), vecs, row_token, rows, reinterpret_cast<V*>(out));
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("PermuteRowsKernel");
  return Status::Ok();
}

// One block per token. The token's choices are put in ascending expert order once, in shared memory;
// the sum then runs in that order with separately rounded products and adds, as the CPU's
// `o += y * w` (no FMA) does, and is added to the residual last, as the CPU adds the MoE output.
template <bool kVec>
__global__ void UnpermuteCombineKernel(const float* __restrict__ expert_out, int64_t d,
                                       const int32_t* __restrict__ row_of, const int32_t* __restrict__ ids,
                                       const float* __restrict__ weights, int64_t m, int top_k,
                                       float* __restrict__ residual) {
  constexpr int kBatch = 8;  // expert rows loaded before they are summed
  __shared__ int64_t src_row[kMaxTopK];
  __shared__ float src_w[kMaxTopK];
  for (int64_t t = blockIdx.x; t < m; t += gridDim.x) {
    if (threadIdx.x < top_k) {
      const int j = threadIdx.x;
      const int32_t e = ids[t * top_k + j];
      int rank = 0;
      for (int i = 0; i < top_k; ++i) {
        const int32_t o = ids[t * top_k + i];
        rank += o < e || (o == e && i < j);
      }
      src_row[rank] = row_of[t * top_k + j];
      src_w[rank] = weights[t * top_k + j];
    }
    __syncthreads();
    float* res = residual + t * d;
    if constexpr (kVec) {
      for (int64_t v = threadIdx.x; v < d / 4; v += blockDim.x) {
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int j0 = 0; j0 < top_k; j0 += kBatch) {
          float4 y[kBatch];
#pragma unroll
          for (int u = 0; u < kBatch; ++u)
            if (j0 + u < top_k) y[u] = reinterpret_cast<const float4*>(expert_out + src_row[j0 + u] * d)[v];
#pragma unroll
          for (int u = 0; u < kBatch; ++u) {
            if (j0 + u < top_k) {
              const float w = src_w[j0 + u];
              acc.x = __fadd_rn(acc.x, __fmul_rn(y[u].x, w));
              acc.y = __fadd_rn(acc.y, __fmul_rn(y[u].y, w));
              acc.z = __fadd_rn(acc.z, __fmul_rn(y[u].z, w));
              acc.w = __fadd_rn(acc.w, __fmul_rn(y[u].w, w));
            }
          }
        }
        float4 r = reinterpret_cast<float4*>(res)[v];
        r.x += acc.x, r.y += acc.y, r.z += acc.z, r.w += acc.w;
        reinterpret_cast<float4*>(res)[v] = r;
      }
    } else {
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < top_k; ++j) acc = __fadd_rn(acc, __fmul_rn(expert_out[src_row[j] * d + i], src_w[j]));
        res[i] += acc;
      }
    }
    __syncthreads();  // src_row/src_w are rewritten for the next token
  }
}

template <bool kVec>
__global__ void AddSigmoidGatedKernel(const float* __restrict__ shared, const float* __restrict__ gate_logit,
                                      int64_t m, int64_t d, float* __restrict__ residual) {
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; t < m;
       t += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const float g = 1.0f / (1.0f + expf(-gate_logit[t]));
    const float* s = shared + t * d;
    float* r = residual + t * d;
    if constexpr (kVec) {
      for (int64_t v = threadIdx.x; v < d / 4; v += blockDim.x) {
        const float4 a = reinterpret_cast<const float4*>(s)[v];
        float4 b = reinterpret_cast<float4*>(r)[v];
        b.x = __fadd_rn(b.x, __fmul_rn(g, a.x));
        b.y = __fadd_rn(b.y, __fmul_rn(g, a.y));
        b.z = __fadd_rn(b.z, __fmul_rn(g, a.z));
        b.w = __fadd_rn(b.w, __fmul_rn(g, a.w));
        reinterpret_cast<float4*>(r)[v] = b;
      }
    } else {
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) r[i] = __fadd_rn(r[i], __fmul_rn(g, s[i]));
    }
  }
}

int ThreadsPerRow(int64_t items) {
  int tpr = 32;
  while (tpr < 256 && tpr < items) tpr *= 2;
  return tpr;
}

}  // namespace

Status RouteAndPlan(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                    float* weights, int64_t* expert_offsets, int32_t* row_of, int32_t* row_token, cudaStream_t stream) {
  if (m < 0 || num_experts <= 0 || num_experts > kMaxExperts || top_k <= 0 || top_k > kMaxTopK ||
      top_k > num_experts || m * top_k > kMaxRoutePlanPairs)
    return InvalidArgument("RouteAndPlan: need 0 < top_k ≤ min(32, E), E ≤ 1024 and m · top_k ≤ " +
                           std::to_string(kMaxRoutePlanPairs) + ", got m " + std::to_string(m) + ", top_k " +
                           std::to_string(top_k) + ", E " + std::to_string(num_experts));
  if (m == 0) {
    SHOAL_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(expert_offsets, 0, sizeof(int64_t) * (static_cast<size_t>(num_experts) + 1), stream));
    return Status::Ok();
  }
  RouteAndPlanKernel<<<1, kRoutePlanThreads, 0, stream>>>(logits, m, num_experts, top_k, renormalize, ids, weights,
                                                          expert_offsets, row_of, row_token);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("RouteAndPlanKernel");
  return Status::Ok();
}

Status RouterTopK(const float* logits, int64_t m, int num_experts, int top_k, bool renormalize, int32_t* ids,
                  float* weights, cudaStream_t stream) {
  if (m < 0 || num_experts <= 0 || num_experts > kMaxExperts || top_k <= 0 || top_k > kMaxTopK ||
      top_k > num_experts)
    return InvalidArgument("RouterTopK: need 0 < top_k ≤ min(32, E) and E ≤ 1024, got top_k " +
                           std::to_string(top_k) + ", E " + std::to_string(num_experts));
  if (m == 0) return Status::Ok();
  RouterTopKKernel<<<CappedGrid((m + kRouterWarps - 1) / kRouterWarps), kRouterWarps * 32, 0, stream>>>(
      logits, m, num_experts, top_k, renormalize, ids, weights);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("RouterTopKKernel");
  return Status::Ok();
}

int64_t MoePlanScratchBytes(int num_experts) {
  return int64_t{kPlanMaxChunks} * (num_experts > 0 ? num_experts : 0) * static_cast<int64_t>(sizeof(int32_t));
}

Status MoePermutePlan(const int32_t* ids, int64_t m, int top_k, int num_experts, int64_t* expert_offsets,
                      int32_t* row_of, int32_t* row_token, void* scratch, cudaStream_t stream) {
  if (m < 0 || top_k <= 0 || num_experts <= 0 ||
      num_experts > kPlanSharedBytes / static_cast<int>(sizeof(int)))
    return InvalidArgument("MoePermutePlan: bad shape (top_k " + std::to_string(top_k) + ", E " +
                           std::to_string(num_experts) + ")");
  const int64_t pairs = m * top_k;
  if (pairs > INT32_MAX) return InvalidArgument("MoePermutePlan: more than 2^31 rows");
  if (m == 0) {
    // Nothing to launch, but callers read the offsets: every expert gets the empty range.
    SHOAL_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(expert_offsets, 0, sizeof(int64_t) * (static_cast<size_t>(num_experts) + 1), stream));
    return Status::Ok();
  }
  const PlanShape s = MakePlanShape(pairs, num_experts);
  auto* counts = static_cast<int32_t*>(scratch);
  const unsigned blocks = static_cast<unsigned>((s.chunks + s.warps_per_block - 1) / s.warps_per_block);
  const size_t shared = sizeof(int) * static_cast<size_t>(s.warps_per_block) * num_experts;
  PlanCountKernel<<<blocks, s.warps_per_block * 32, shared, stream>>>(ids, s, num_experts, counts);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("PlanCountKernel");
  PlanScanKernel<<<1, kScanThreads, 0, stream>>>(counts, s.chunks, num_experts, expert_offsets);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("PlanScanKernel");
  PlanScatterKernel<<<blocks, s.warps_per_block * 32, shared, stream>>>(ids, s, top_k, num_experts, counts,
                                                                        expert_offsets, row_of, row_token);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("PlanScatterKernel");
  return Status::Ok();
}

Status PermuteRows(const bf16* x, int64_t d, const int32_t* row_token, int64_t rows, bf16* out,
                   cudaStream_t stream) {
  if (d <= 0 || rows < 0) return InvalidArgument("PermuteRows: bad shape");
  if (rows == 0) return Status::Ok();
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(bf16));
  auto fits = [&](int64_t unit) { return row_bytes % unit == 0 && Aligned(x, unit) && Aligned(out, unit); };
  if (fits(16)) return LaunchPermute<uint4>(x, d, row_token, rows, out, stream);
  if (fits(8)) return LaunchPermute<uint2>(x, d, row_token, rows, out, stream);
  if (fits(4)) return LaunchPermute<uint32_t>(x, d, row_token, rows, out, stream);
  return LaunchPermute<uint16_t>(x, d, row_token, rows, out, stream);
}

Status UnpermuteCombine(const float* expert_out, int64_t d, const int32_t* row_of, const int32_t* ids,
                        const float* weights, int64_t m, int top_k, float* residual, cudaStream_t stream) {
  if (d <= 0 || m < 0 || top_k <= 0 || top_k > kMaxTopK)
    return InvalidArgument("UnpermuteCombine: need d > 0 and 0 < top_k ≤ 32, got top_k " + std::to_string(top_k));
  if (m == 0) return Status::Ok();
  const bool vec = d % 4 == 0 && Aligned(expert_out, 16) && Aligned(residual, 16);
  // ThreadsPerRow gives at least a warp, so at least top_k threads: they sort the token's choices.
  const int threads = ThreadsPerRow(vec ? d / 4 : d);
  if (vec)
    UnpermuteCombineKernel<true><<<CappedGrid(m), threads, 0, stream>>>(expert_out, d, row_of, ids, weights, m,
                                                                       top_k, residual);
  else
    UnpermuteCombineKernel<false><<<CappedGrid(m), threads, 0, stream>>>(expert_out, d, row_of, ids, weights, m,
                                                                        top_k, residual);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("UnpermuteCombineKernel");
  return Status::Ok();
}

Status AddSigmoidGated(const float* shared, const float* gate_logit, int64_t m, int64_t d, float* residual,
                       cudaStream_t stream) {
  if (m < 0 || d <= 0) return InvalidArgument("AddSigmoidGated: bad shape");
  if (m == 0) return Status::Ok();
  const bool vec = d % 4 == 0 && Aligned(shared, 16) && Aligned(residual, 16);
  const int tpr = ThreadsPerRow(vec ? d / 4 : d);
  const int rpb = 256 / tpr;
  const unsigned grid = CappedGrid((m + rpb - 1) / rpb);
  if (vec)
    AddSigmoidGatedKernel<true><<<grid, dim3(tpr, rpb), 0, stream>>>(shared, gate_logit, m, d, residual);
  else
    AddSigmoidGatedKernel<false><<<grid, dim3(tpr, rpb), 0, stream>>>(shared, gate_logit, m, d, residual);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("AddSigmoidGatedKernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
