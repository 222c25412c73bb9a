// Skinny GEMMs of decode-sized steps on the tensor cores: MoeGateUpSiluTc, MoeDownTc and SkinnyLinear
// of kernels/cuda/cuda_kernels.h — the experimental small-step path (engine.experimental_gpu_kernels),
// built and CPU-compiled but NOT YET RUN ON A GPU (the device lease of the session that wrote them
// ended first; cuda_ops_test has their tests). On the H200 profile of a batch-1 decode step, cuBLAS
// spent ~6 µs on each small dense GEMM (q, k, v, o, router) whatever its size, and the CUDA-core
// expert kernels of moe_gemv.cu read weights at 0.56–0.66 of copy bandwidth; these aim at both.
//
// A block of 4 warps computes a tile of 16 output columns × 8 token rows with mma.sync m16n8k16 (bf16
// in, f32 accumulate), the warps taking interleaved 32-wide slices of k and adding their partial tiles
// in shared memory at the end — four times the loads in flight of one warp per tile, which is what
// streaming weights at bandwidth needs when a decode step has only a few hundred tiles: A = 16 weight rows (the output columns; nn.Linear's [out, in] is A's row-major form),
// B = 8 token rows (each row contiguous in k, B's column-major form), D = the 16 × 8 tile. For every
// 32-wide slice of k each thread loads 16 contiguous bytes of its A rows and of its B row, and the
// slice goes through two mma steps. The fragment slots of k are permuted: within a slice, lane t's
// 8 loaded values fill its slots {2t, 2t+1, 2t+8, 2t+9} of step 0 (values 0-3) and of step 1 (4-7),
// the same permutation for A and B, so each product pairs the same physical k and the sum over k is
// complete — while every load is a whole, coalesced 16-byte piece. Token rows go 8 at a time; more
// rows re-read the weight tile (from L2). A block whose expert has no rows leaves at once.
//
// MoeGateUpSiluTc computes the gate tile and the up tile of the same 16 columns (two mma per step) and
// writes silu(g)·u as bf16; it reads its input rows through row_token (the plan's gather) instead of a
// permuted copy: the fused gate|up GEMM, SiluMulToBf16 and PermuteRows in one launch.
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = 32 * kWarpsPerBlock;
constexpr int kTileCols = 16;  // mma M
constexpr int kTileRows = 8;   // mma N: token rows per pass
constexpr int kSlice = 32;     // k per 16-byte load per lane group (4 lanes × 8 bf16)
constexpr int kUnroll = 4;     // slices in flight

// 16 bytes through the read-only path. volatile keeps the loads in program order ahead of the mma
// steps that use them: left to itself ptxas pipelines one slice at a time (three loads in flight per
// lane), far too few bytes in flight to approach memory bandwidth with a few warps per SM.
__device__ __forceinline__ uint4 Ldg16(const bf16* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 Load16(const bf16* p, bool valid) {
  return valid ? __ldg(reinterpret_cast<const uint4*>(p)) : make_uint4(0, 0, 0, 0);
}

// d += A·B for one m16n8k16 step. a_lo/a_hi: rows g and g + 8 of A (words for k slots {2t,2t+1} in .x
// and {2t+8,2t+9} in .y); b: row g of B likewise.
__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a_lo0, uint32_t a_hi0, uint32_t a_lo1, uint32_t a_hi1,
                                    uint32_t b0, uint32_t b1) {
  // Not volatile: the mma has no side effects, so the compiler may hoist the next slices' loads above it.
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a_lo0), "r"(a_hi0), "r"(a_lo1), "r"(a_hi1), "r"(b0), "r"(b1));
}

// One 32-wide k slice: two mma steps. lo/hi: this lane's 16 bytes of A rows g and g + 8; x: of B row g.
__device__ __forceinline__ void Slice(float (&d)[4], const uint4& lo, const uint4& hi, const uint4& x) {
  Mma(d, lo.x, hi.x, lo.y, hi.y, x.x, x.y);  // step 0: values 0-3
  Mma(d, lo.z, hi.z, lo.w, hi.w, x.z, x.w);  // step 1: values 4-7
}

// acc_j += W_j[col0 .. col0 + 16) · x rows over this warp's slices of k (slices warp, warp + 4, ...),
// for kMats weight matrices sharing the token rows (gate and up: 2; otherwise 1). w[j] points at row
// col0 of matrix j; cols_left ≥ 1. Rows of A past cols_left and this lane's B row past the chunk read
// a valid row instead (row cols_left - 1, and xrow pointing at the chunk's first row): their products
// only reach outputs that are never written, and the loads of whole slices need no predicate.
template <int kMats>
__device__ __forceinline__ void TileDot(const bf16* const (&w)[kMats], int cols_left, const bf16* xrow, int k,
                                        float (&acc)[kMats][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t lo_row = g < cols_left ? g : cols_left - 1, hi_row = g + 8 < cols_left ? g + 8 : cols_left - 1;
  const bf16* lo_ptr[kMats];
  const bf16* hi_ptr[kMats];
#pragma unroll
  for (int j = 0; j < kMats; ++j) lo_ptr[j] = w[j] + lo_row * k + t * 8, hi_ptr[j] = w[j] + hi_row * k + t * 8;
  const bf16* x_ptr = xrow + t * 8;
  constexpr int kStride = kSlice * kWarpsPerBlock;  // between one warp's consecutive slices
  const int full = k / kSlice;                      // slices with every lane's piece inside k
  int s = warp;
  for (; s + (kUnroll - 1) * kWarpsPerBlock < full; s += kUnroll * kWarpsPerBlock) {
    uint4 lo[kMats][kUnroll], hi[kMats][kUnroll], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int kk = s * kSlice + u * kStride;
#pragma unroll
      for (int j = 0; j < kMats; ++j) lo[j][u] = Ldg16(lo_ptr[j] + kk), hi[j][u] = Ldg16(hi_ptr[j] + kk);
      xv[u] = Ldg16(x_ptr + kk);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int j = 0; j < kMats; ++j) Slice(acc[j], lo[j][u], hi[j][u], xv[u]);
  }
  // This warp's remaining slices; the last one may end inside k (k is a multiple of 8, so a lane's
  // piece is whole or past the end, then zeros).
  for (; s * kSlice < k; s += kWarpsPerBlock) {
    const int kk = s * kSlice;
    const bool in = kk + t * 8 < k;
    const uint4 xv = Load16(x_ptr + kk, in);
#pragma unroll
    for (int j = 0; j < kMats; ++j) Slice(acc[j], Load16(lo_ptr[j] + kk, in), Load16(hi_ptr[j] + kk, in), xv);
  }
}

// Adds the block's four partial tiles; warp 0 returns true with the sums in acc.
template <int kMats>
__device__ __forceinline__ bool ReduceTile(float (&acc)[kMats][4], float (*red)[32][kMats * 4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp > 0) {
#pragma unroll
    for (int j = 0; j < kMats; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) red[warp - 1][lane][j * 4 + q] = acc[j][q];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int w = 0; w < kWarpsPerBlock - 1; ++w)
#pragma unroll
      for (int j = 0; j < kMats; ++j)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[j][q] += red[w][lane][j * 4 + q];
  }
  __syncthreads();  // red is rewritten by the next chunk of rows
  return warp == 0;
}

__device__ __forceinline__ float SiluMul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// The outputs of warp 0's reduced tile: acc[j][q] is column col0 + g (+ 8 for q ≥ 2), row 2t + (q & 1).
__device__ __forceinline__ int TileCol(int q) { return (threadIdx.x % 32) / 4 + (q >= 2 ? 8 : 0); }
__device__ __forceinline__ int TileRow(int q) { return 2 * (threadIdx.x % 4) + (q & 1); }

__global__ void __launch_bounds__(kThreads)
    MoeGateUpSiluTcKernel(const bf16* __restrict__ x, int hidden, const int32_t* __restrict__ row_token,
                        const int64_t* __restrict__ offsets, const bf16* const* __restrict__ weights, int inter,
                        bf16* __restrict__ h) {
  __shared__ float red[kWarpsPerBlock - 1][32][8];
  const int e = blockIdx.y;
  const int64_t r0 = offsets[e], r1 = offsets[e + 1];
  const int col0 = blockIdx.x * kTileCols;
  if (r1 <= r0 || col0 >= inter) return;  // uniform over the block
  const bf16* w = weights[e];
  const int g = (threadIdx.x % 32) / 4;
  const bf16* const mats[2] = {w + static_cast<int64_t>(col0) * hidden, w + static_cast<int64_t>(inter + col0) * hidden};
  for (int64_t c0 = r0; c0 < r1; c0 += kTileRows) {
    const int64_t nr = r1 - c0;
    const bf16* xrow = x + static_cast<int64_t>(row_token[c0 + (g < nr ? g : 0)]) * hidden;
    float acc[2][4] = {};
    TileDot<2>(mats, inter - col0, xrow, hidden, acc);
    if (!ReduceTile<2>(acc, red)) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int col = col0 + TileCol(q), row = TileRow(q);
      if (col < inter && row < nr) h[(c0 + row) * inter + col] = __float2bfloat16_rn(SiluMul(acc[0][q], acc[1][q]));
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    MoeDownTcKernel(const bf16* __restrict__ h, int inter, const int64_t* __restrict__ offsets,
                  const bf16* const* __restrict__ weights, int hidden, float* __restrict__ y) {
  __shared__ float red[kWarpsPerBlock - 1][32][4];
  const int e = blockIdx.y;
  const int64_t r0 = offsets[e], r1 = offsets[e + 1];
  const int col0 = blockIdx.x * kTileCols;
  if (r1 <= r0 || col0 >= hidden) return;
  const int g = (threadIdx.x % 32) / 4;
  const bf16* const mats[1] = {weights[e] + static_cast<int64_t>(col0) * inter};
  for (int64_t c0 = r0; c0 < r1; c0 += kTileRows) {
    const int64_t nr = r1 - c0;
    const bf16* xrow = h + (c0 + (g < nr ? g : 0)) * inter;
    float acc[1][4] = {};
    TileDot<1>(mats, hidden - col0, xrow, inter, acc);
    if (!ReduceTile<1>(acc, red)) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int col = col0 + TileCol(q), row = TileRow(q);
      if (col < hidden && row < nr) y[(c0 + row) * hidden + col] = acc[0][q];
    }
  }
}

// Up to kMaxSkinny weight matrices in one launch; blockIdx.y picks the matrix.
struct SkinnyParams {
  const bf16* x;
  int64_t m;
  int k;
  SkinnyOutput out[kMaxSkinny];
};

__global__ void __launch_bounds__(kThreads) SkinnyLinearKernel(const SkinnyParams p) {
  __shared__ float red[kWarpsPerBlock - 1][32][4];
  const SkinnyOutput& o = p.out[blockIdx.y];
  const int col0 = blockIdx.x * kTileCols;
  if (o.w == nullptr || col0 >= o.n) return;
  const int g = (threadIdx.x % 32) / 4;
  const bf16* const mats[1] = {o.w + static_cast<int64_t>(col0) * p.k};
  for (int64_t c0 = 0; c0 < p.m; c0 += kTileRows) {
    const int64_t nr = p.m - c0;
    const bf16* xrow = p.x + (c0 + (g < nr ? g : 0)) * p.k;
    float acc[1][4] = {};
    TileDot<1>(mats, o.n - col0, xrow, p.k, acc);
    if (!ReduceTile<1>(acc, red)) continue;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int col = col0 + TileCol(q), row = TileRow(q);
      if (col < o.n && row < nr) {
        float* dst = o.y + (c0 + row) * o.n + col;
        float v = acc[0][q];
        if (o.bias != nullptr) v += o.bias[col];
        *dst = o.accumulate ? *dst + v : v;
      }
    }
  }
}

Status CheckWidth(const char* fn, int64_t k, const void* in) {
  if (k <= 0 || k % 8 != 0 || k > INT32_MAX)
    return InvalidArgument(std::string(fn) + ": the input width " + std::to_string(k) +
                           " must be a positive multiple of 8 below 2^31");
  if (reinterpret_cast<uintptr_t>(in) % 16 != 0)
    return InvalidArgument(std::string(fn) + ": the input rows must be 16-byte aligned");
  return Status::Ok();
}

Status CheckMoe(const char* fn, int64_t k, int64_t n, int num_experts, const void* in, const void* out,
                const int64_t* offsets, const void* weights) {
  if (in == nullptr || out == nullptr || offsets == nullptr || weights == nullptr)
    return InvalidArgument(std::string(fn) + ": null input, output, offsets or weights");
  SHOAL_RETURN_IF_ERROR(CheckWidth(fn, k, in));
  if (n <= 0 || n > INT32_MAX) return InvalidArgument(std::string(fn) + ": output width " + std::to_string(n));
  if (num_experts <= 0 || num_experts > 65535)
    return InvalidArgument(std::string(fn) + ": " + std::to_string(num_experts) + " experts (1 to 65535)");
  return Status::Ok();
}

unsigned ColumnBlocks(int64_t n) { return static_cast<unsigned>((n + kTileCols - 1) / kTileCols); }

}  // namespace

Status MoeGateUpSiluTc(const bf16* x, int64_t hidden, const int32_t* row_token, const int64_t* expert_offsets,
                       int num_experts, const bf16* const* gate_up, int64_t inter, bf16* h, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckMoe("MoeGateUpSiluTc", hidden, inter, num_experts, x, h, expert_offsets, gate_up));
  if (row_token == nullptr) return InvalidArgument("MoeGateUpSiluTc: null row_token");
  const dim3 grid(ColumnBlocks(inter), static_cast<unsigned>(num_experts));
  MoeGateUpSiluTcKernel<<<grid, kThreads, 0, stream>>>(x, static_cast<int>(hidden), row_token, expert_offsets, gate_up,
                                                     static_cast<int>(inter), h);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("MoeGateUpSiluTcKernel");
  return Status::Ok();
}

Status MoeDownTc(const bf16* h, int64_t inter, const int64_t* expert_offsets, int num_experts, const bf16* const* down,
                 int64_t hidden, float* y, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(CheckMoe("MoeDownTc", inter, hidden, num_experts, h, y, expert_offsets, down));
  const dim3 grid(ColumnBlocks(hidden), static_cast<unsigned>(num_experts));
  MoeDownTcKernel<<<grid, kThreads, 0, stream>>>(h, static_cast<int>(inter), expert_offsets, down,
                                               static_cast<int>(hidden), y);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("MoeDownTcKernel");
  return Status::Ok();
}

Status SkinnyLinear(const bf16* x, int64_t m, int64_t k, std::span<const SkinnyOutput> outputs, cudaStream_t stream) {
  if (outputs.empty() || outputs.size() > static_cast<size_t>(kMaxSkinny))
    return InvalidArgument("SkinnyLinear: " + std::to_string(outputs.size()) + " outputs (1 to " +
                           std::to_string(kMaxSkinny) + ")");
  if (m < 0) return InvalidArgument("SkinnyLinear: m " + std::to_string(m) + " is negative");
  if (m == 0) return Status::Ok();
  if (x == nullptr) return InvalidArgument("SkinnyLinear: null x");
  SHOAL_RETURN_IF_ERROR(CheckWidth("SkinnyLinear", k, x));
  SkinnyParams p{};
  p.x = x;
  p.m = m;
  p.k = static_cast<int>(k);
  int64_t widest = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const SkinnyOutput& o = outputs[i];
    if (o.w == nullptr || o.y == nullptr || o.n <= 0 || o.n > INT32_MAX ||
        reinterpret_cast<uintptr_t>(o.w) % 16 != 0)
      return InvalidArgument("SkinnyLinear: output " + std::to_string(i) +
                             " needs a 16-byte aligned weight, an output and a width in [1, 2^31)");
    p.out[i] = o;
    widest = o.n > widest ? o.n : widest;
  }
  const dim3 grid(ColumnBlocks(widest), static_cast<unsigned>(outputs.size()));
  SkinnyLinearKernel<<<grid, kThreads, 0, stream>>>(p);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("SkinnyLinearKernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
