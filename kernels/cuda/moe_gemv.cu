// The routed experts of a decode-sized step on the device alone: MoeGateUpSilu and MoeDown of
// kernels/cuda/cuda_kernels.h. The cuBLAS path (gemm.h ExpertLinear) needs every expert's row count
// on the host, one synchronisation per MoE layer, which keeps a decode step from being a CUDA graph;
// these kernels read the counts on the device, so a whole step can be captured once and replayed.
// (Run on an H200: docs/benchmarks.md. The tensor-core variants in skinny_gemm.cu are not yet.)
//
// Shape of the work: a block per (column tile, expert). A block whose expert has no rows leaves at
// once, so only the weights of experts that were chosen are read, as with the cuBLAS path. Each warp
// takes whole weight rows (output columns): its lanes stream the row in 16-byte pieces (8 bf16),
// kUnroll pieces in flight per lane, and multiply each piece with the same 16 bytes of every token
// row of the chunk (read through L1: a decode step's token rows are a few KB, shared by all blocks);
// a warp reduction gives each dot product. Token rows go kRows at a time; more rows than that re-read
// the weight tile (from L2), which is why these kernels are for decode-sized steps only — with many
// rows per expert the tensor-core GEMMs of the cuBLAS path win.
//
// MoeGateUpSilu reads its input rows through row_token (the permutation plan's gather) instead of a
// permuted copy, and applies SiLU·up to the pair (gate column i, up column I + i) that one warp
// computes, writing bf16 — the fused gate|up GEMM, SiluMulToBf16 and PermuteRows in one launch.
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 8;         // token rows per pass over a weight tile
constexpr int kUnroll = 4;       // 16-byte weight loads in flight per lane
constexpr int kPiece = 8;        // bf16 per 16-byte load
constexpr int kColsPerWarp = 2;  // weight rows (gate/up pairs) a warp takes per tile

__device__ __forceinline__ float Lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float Hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

// Σ of 8 bf16 products, in f32.
__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b) {
  float s = Lo(a.x) * Lo(b.x);
  s = fmaf(Hi(a.x), Hi(b.x), s);
  s = fmaf(Lo(a.y), Lo(b.y), s);
  s = fmaf(Hi(a.y), Hi(b.y), s);
  s = fmaf(Lo(a.z), Lo(b.z), s);
  s = fmaf(Hi(a.z), Hi(b.z), s);
  s = fmaf(Lo(a.w), Lo(b.w), s);
  s = fmaf(Hi(a.w), Hi(b.w), s);
  return s;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// acc[p][r] += W row p · x row r over the whole width k (multiple of 8, 16-byte aligned rows).
// kPairs weight rows at once (2 for gate|up, 1 for down).
template <int kPairs>
__device__ __forceinline__ void DotRows(const bf16* const (&w)[kPairs], const bf16* const (&x)[kRows], int nr,
                                        int k, int lane, float (&acc)[kPairs][kRows]) {
  const int pieces = k / kPiece;
  for (int p0 = lane; p0 < pieces; p0 += 32 * kUnroll) {
    uint4 wv[kPairs][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int p = p0 + u * 32;
#pragma unroll
      for (int c = 0; c < kPairs; ++c)
        wv[c][u] = p < pieces ? __ldg(reinterpret_cast<const uint4*>(w[c]) + p) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= nr) break;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int p = p0 + u * 32;
        if (p >= pieces) break;
        const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x[r]) + p);
#pragma unroll
        for (int c = 0; c < kPairs; ++c) acc[c][r] += Dot8(wv[c][u], xv);
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    MoeGateUpSiluKernel(const bf16* __restrict__ x, int hidden, const int32_t* __restrict__ row_token,
                        const int64_t* __restrict__ offsets, const bf16* const* __restrict__ weights, int inter,
                        bf16* __restrict__ h) {
  const int e = blockIdx.y;
  const int64_t r0 = offsets[e], r1 = offsets[e + 1];
  if (r1 <= r0) return;
  const bf16* w = weights[e];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t c0 = r0; c0 < r1; c0 += kRows) {
    const int nr = static_cast<int>(r1 - c0 < kRows ? r1 - c0 : kRows);
    const bf16* xr[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) xr[r] = x + static_cast<int64_t>(r < nr ? row_token[c0 + r] : 0) * hidden;
#pragma unroll
    for (int j = 0; j < kColsPerWarp; ++j) {
      const int i = (blockIdx.x * kColsPerWarp + j) * kWarps + warp;  // the gate/up pair
      if (i >= inter) break;
      const bf16* const rows[2] = {w + static_cast<int64_t>(i) * hidden, w + static_cast<int64_t>(inter + i) * hidden};
      float acc[2][kRows] = {};
      DotRows<2>(rows, xr, nr, hidden, lane, acc);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nr) break;
        const float g = WarpSum(acc[0][r]), u = WarpSum(acc[1][r]);
        // silu(g)·u as SiluMulToBf16 writes it: g / (1 + exp(-g)) * u, rounded once to bf16.
        if (lane == 0) h[(c0 + r) * inter + i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    MoeDownKernel(const bf16* __restrict__ h, int inter, const int64_t* __restrict__ offsets,
                  const bf16* const* __restrict__ weights, int hidden, float* __restrict__ y) {
  const int e = blockIdx.y;
  const int64_t r0 = offsets[e], r1 = offsets[e + 1];
  if (r1 <= r0) return;
  const bf16* w = weights[e];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t c0 = r0; c0 < r1; c0 += kRows) {
    const int nr = static_cast<int>(r1 - c0 < kRows ? r1 - c0 : kRows);
    const bf16* hr[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) hr[r] = h + (c0 + (r < nr ? r : 0)) * inter;
    // Two output columns per warp per pass (kPairs = 2): the same loads in flight as gate|up.
    const int base = blockIdx.x * kColsPerWarp * 2 * kWarps + warp * 2;
#pragma unroll
    for (int j = 0; j < kColsPerWarp; ++j) {
      const int col = base + j * 2 * kWarps;
      if (col >= hidden) break;
      const int col2 = col + 1 < hidden ? col + 1 : col;
      const bf16* const rows[2] = {w + static_cast<int64_t>(col) * inter, w + static_cast<int64_t>(col2) * inter};
      float acc[2][kRows] = {};
      DotRows<2>(rows, hr, nr, inter, lane, acc);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nr) break;
        const float a = WarpSum(acc[0][r]), b = WarpSum(acc[1][r]);
        if (lane == 0) {
          y[(c0 + r) * hidden + col] = a;
          if (col2 != col) y[(c0 + r) * hidden + col2] = b;
        }
      }
    }
  }
}

Status CheckMoeGemv(const char* fn, int64_t k, int64_t n, int num_experts, const void* in, const void* out,
                    const int64_t* offsets, const void* weights) {
  if (k <= 0 || n <= 0 || k % kPiece != 0 || k > INT32_MAX || n > INT32_MAX)
    return InvalidArgument(std::string(fn) + ": the input width " + std::to_string(k) +
                           " must be a positive multiple of 8 and the output width " + std::to_string(n) +
                           " positive (both below 2^31)");
  if (num_experts <= 0 || num_experts > 65535)
    return InvalidArgument(std::string(fn) + ": " + std::to_string(num_experts) + " experts (1 to 65535)");
  if (in == nullptr || out == nullptr || offsets == nullptr || weights == nullptr)
    return InvalidArgument(std::string(fn) + ": null input, output, offsets or weights");
  if (reinterpret_cast<uintptr_t>(in) % 16 != 0)
    return InvalidArgument(std::string(fn) + ": the input rows must be 16-byte aligned");
  return Status::Ok();
}

}  // namespace

Status MoeGateUpSilu(const bf16* x, int64_t hidden, const int32_t* row_token, const int64_t* expert_offsets,
                     int num_experts, const bf16* const* gate_up, int64_t inter, bf16* h, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckMoeGemv("MoeGateUpSilu", hidden, inter, num_experts, x, h, expert_offsets, gate_up));
  if (row_token == nullptr) return InvalidArgument("MoeGateUpSilu: null row_token");
  const int64_t per_block = int64_t{kColsPerWarp} * kWarps;
  const dim3 grid(static_cast<unsigned>((inter + per_block - 1) / per_block), static_cast<unsigned>(num_experts));
  MoeGateUpSiluKernel<<<grid, kThreads, 0, stream>>>(x, static_cast<int>(hidden), row_token, expert_offsets, gate_up,
                                                     static_cast<int>(inter), h);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("MoeGateUpSiluKernel");
  return Status::Ok();
}

Status MoeDown(const bf16* h, int64_t inter, const int64_t* expert_offsets, int num_experts, const bf16* const* down,
               int64_t hidden, float* y, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckMoeGemv("MoeDown", inter, hidden, num_experts, h, y, expert_offsets, down));
  const int64_t per_block = int64_t{kColsPerWarp} * 2 * kWarps;
  const dim3 grid(static_cast<unsigned>((hidden + per_block - 1) / per_block), static_cast<unsigned>(num_experts));
  MoeDownKernel<<<grid, kThreads, 0, stream>>>(h, static_cast<int>(inter), expert_offsets, down,
                                               static_cast<int>(hidden), y);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("MoeDownKernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
