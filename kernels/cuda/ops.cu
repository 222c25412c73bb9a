// Element-wise and per-row ops of the CUDA backend: embedding gather, RMSNorm, RoPE, bias, SiLU gating
// and the f32 → bf16 cast. Each matches the CPU kernel of the same name (kernels/cpu/ops.cc) up to the
// documented rounding; the multiply/add sequences that the CPU does without FMA are written with
// explicit __fmul_rn/__fadd_rn so nvcc cannot contract them and the f32 results agree bit for bit.
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {
namespace {

constexpr int kBlockThreads = 256;
// Grid-stride loops cover any m, so the grid only needs enough blocks to fill the machine.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

bool Aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Per-row kernels use a 2-D block: threadIdx.x walks the row (a power of two, at least a warp, so
// short rows do not leave most of the block idle) and threadIdx.y picks one of several rows.
struct RowLaunch {
  dim3 block;
  unsigned grid;
};

RowLaunch RowConfig(int64_t items_per_row, int64_t rows) {
  int tpr = 32;
  while (tpr < kBlockThreads && tpr < items_per_row) tpr *= 2;
  const int rpb = kBlockThreads / tpr;
  const int64_t blocks = (rows + rpb - 1) / rpb;
  return {dim3(tpr, rpb), static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks)};
}

unsigned FlatGrid(int64_t items) {
  const int64_t blocks = (items + kBlockThreads - 1) / kBlockThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

__device__ __forceinline__ int64_t FirstRow() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t RowStride() { return static_cast<int64_t>(gridDim.x) * blockDim.y; }

// bf16 → f32 is exact: the bf16 bits are the high half of the f32.
__device__ __forceinline__ float Bf16Lo(uint32_t pair) { return __uint_as_float(pair << 16); }
__device__ __forceinline__ float Bf16Hi(uint32_t pair) { return __uint_as_float(pair & 0xffff0000u); }

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Four consecutive outputs in one store: 16 bytes of f32 or 8 bytes of bf16.
__device__ __forceinline__ void Store4(float* y, float4 v) { *reinterpret_cast<float4*>(y) = v; }
__device__ __forceinline__ void Store4(bf16* y, float4 v) {
  *reinterpret_cast<uint2*>(y) = make_uint2(PackBf16(v.x, v.y), PackBf16(v.z, v.w));
}
__device__ __forceinline__ void Store1(float* y, float v) { *y = v; }
__device__ __forceinline__ void Store1(bf16* y, float v) { *y = __float2bfloat16_rn(v); }

// ---- Embed ----

template <bool kVec>
__global__ void EmbedKernel(const bf16* __restrict__ table, int64_t d, const int32_t* __restrict__ ids, int64_t m,
                            float* __restrict__ out) {
  for (int64_t t = FirstRow(); t < m; t += RowStride()) {
    const bf16* src = table + static_cast<int64_t>(ids[t]) * d;
    float* dst = out + t * d;
    if constexpr (kVec) {
      const uint4* s = reinterpret_cast<const uint4*>(src);
      float4* o = reinterpret_cast<float4*>(dst);
      for (int64_t v = threadIdx.x; v < d / 8; v += blockDim.x) {
        const uint4 q = s[v];
        o[2 * v] = make_float4(Bf16Lo(q.x), Bf16Hi(q.x), Bf16Lo(q.y), Bf16Hi(q.y));
        o[2 * v + 1] = make_float4(Bf16Lo(q.z), Bf16Hi(q.z), Bf16Lo(q.w), Bf16Hi(q.w));
      }
    } else {
      for (int64_t i = threadIdx.x; i < d; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
    }
  }
}

// ---- RMSNorm ----

// One row per kRowThreads threads: a warp for short rows (per-head q/k norm, head_dim ≤ 1024) so a
// block serves several rows, the whole block for hidden-size rows. x and y are not __restrict__:
// RmsNormF32 may run in place, which is safe because every thread reads its elements for the sum
// before the row's reduction completes and later rewrites only the elements it reads again itself.
template <int kRowThreads, bool kVec, typename OutT>
__global__ void RmsNormKernel(const float* x, int64_t m, int d, const float* __restrict__ w, float eps, OutT* y) {
  static_assert(kRowThreads == 32 || kRowThreads == kBlockThreads);
  constexpr int kWarps = kBlockThreads / 32;
  __shared__ float warp_sums[kWarps];
  __shared__ float row_inv;
  const int lane = threadIdx.x % kRowThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (kBlockThreads / kRowThreads) + threadIdx.x / kRowThreads;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (kBlockThreads / kRowThreads);
  // Every thread runs the same number of iterations (the block variant syncs inside the loop).
  const int64_t iterations = (m - (first - threadIdx.x / kRowThreads) + stride - 1) / stride;
  for (int64_t it = 0; it < iterations; ++it) {
    const int64_t row = first + it * stride;
    const bool active = row < m;
    const float* xr = x + (active ? row : 0) * static_cast<int64_t>(d);
    float ss = 0.0f;
    if (active) {
      if constexpr (kVec) {
        for (int v = lane; v < d / 4; v += kRowThreads) {
          const float4 a = reinterpret_cast<const float4*>(xr)[v];
          ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        }
      } else {
        for (int i = lane; i < d; i += kRowThreads) ss += xr[i] * xr[i];
      }
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float inv;
    if constexpr (kRowThreads == 32) {
      inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
    } else {
      if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
      __syncthreads();
      if (threadIdx.x < 32) {
        float s = threadIdx.x < kWarps ? warp_sums[threadIdx.x] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (threadIdx.x == 0) row_inv = 1.0f / sqrtf(s / static_cast<float>(d) + eps);
      }
      __syncthreads();
      inv = row_inv;
    }
    if (!active) continue;
    OutT* yr = y + row * static_cast<int64_t>(d);
    // weight * (x * inv), in the CPU's order.
    if constexpr (kVec) {
      for (int v = lane; v < d / 4; v += kRowThreads) {
        const float4 a = reinterpret_cast<const float4*>(xr)[v];
        const float4 g = reinterpret_cast<const float4*>(w)[v];
        Store4(yr + 4 * v, make_float4(g.x * (a.x * inv), g.y * (a.y * inv), g.z * (a.z * inv), g.w * (a.w * inv)));
      }
    } else {
      for (int i = lane; i < d; i += kRowThreads) Store1(yr + i, w[i] * (xr[i] * inv));
    }
    // The block variant's row_inv is rewritten next iteration only after the first __syncthreads,
    // which every thread reaches after it has read row_inv here.
  }
}

template <typename OutT>
Status LaunchRmsNorm(const char* name, const float* x, int64_t m, int64_t d, const float* w, float eps, OutT* y,
                     cudaStream_t stream) {
  if (m < 0 || d <= 0 || d > INT32_MAX) return InvalidArgument(std::string(name) + ": bad shape");
  if (m == 0) return Status::Ok();
  const bool vec = d % 4 == 0 && Aligned(x, 16) && Aligned(w, 16) && Aligned(y, 4 * sizeof(OutT));
  const int di = static_cast<int>(d);
  auto launch = [&](auto kernel, int row_threads) {
    const int64_t rpb = kBlockThreads / row_threads;
    const int64_t blocks = (m + rpb - 1) / rpb;
    kernel<<<static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks), kBlockThreads, 0, stream>>>(
        x, m, di, w, eps, y);
  };
  if (d <= 1024) {
    if (vec) launch(RmsNormKernel<32, true, OutT>, 32);
    else launch(RmsNormKernel<32, false, OutT>, 32);
  } else {
    if (vec) launch(RmsNormKernel<kBlockThreads, true, OutT>, kBlockThreads);
    else launch(RmsNormKernel<kBlockThreads, false, OutT>, kBlockThreads);
  }
  return Status::Ok();
}

// ---- RoPE ----

__global__ void RopeTableKernel(const int32_t* __restrict__ positions, int64_t m, const float* __restrict__ inv_freq,
                                int half, float attention_factor, float* __restrict__ cos_out,
                                float* __restrict__ sin_out) {
  const int64_t total = m * half;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = k / half;
    const int i = static_cast<int>(k - t * half);
    // The f32 angle transformers computes; the precise sincosf (not __sinf) keeps large positions
    // accurate to a couple of ulp of the double-rounded CPU value.
    const float angle = __fmul_rn(static_cast<float>(positions[t]), inv_freq[i]);
    float s, c;
    sincosf(angle, &s, &c);
    cos_out[k] = c * attention_factor;
    sin_out[k] = s * attention_factor;
  }
}

__global__ void ApplyRopeKernel(float* __restrict__ x, int64_t m, int heads, int head_dim,
                                const float* __restrict__ cos_t, const float* __restrict__ sin_t) {
  const int half = head_dim / 2;
  const int64_t rows = m * heads;
  for (int64_t r = FirstRow(); r < rows; r += RowStride()) {
    const int64_t t = r / heads;
    float* v = x + r * head_dim;
    const float* c = cos_t + t * half;
    const float* s = sin_t + t * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float a = v[i], b = v[i + half];
      v[i] = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, s[i]));
      v[i + half] = __fadd_rn(__fmul_rn(b, c[i]), __fmul_rn(a, s[i]));
    }
  }
}

// ---- Bias, SiLU gating, cast ----

template <bool kVec>
__global__ void AddBiasKernel(float* __restrict__ y, int64_t m, int64_t n, const float* __restrict__ bias) {
  for (int64_t r = FirstRow(); r < m; r += RowStride()) {
    float* yr = y + r * n;
    if constexpr (kVec) {
      for (int64_t v = threadIdx.x; v < n / 4; v += blockDim.x) {
        float4 a = reinterpret_cast<float4*>(yr)[v];
        const float4 b = reinterpret_cast<const float4*>(bias)[v];
        a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
        reinterpret_cast<float4*>(yr)[v] = a;
      }
    } else {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] += bias[i];
    }
  }
}

// silu(g)·u as the CPU writes it: g / (1 + exp(-g)) * u, with the precise expf.
__device__ __forceinline__ float SiluMul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <bool kVec>
__global__ void SiluMulKernel(const float* __restrict__ gate_up, int64_t rows, int64_t n, bf16* __restrict__ h) {
  for (int64_t r = FirstRow(); r < rows; r += RowStride()) {
    const float* g = gate_up + r * 2 * n;
    const float* u = g + n;
    bf16* o = h + r * n;
    if constexpr (kVec) {
      for (int64_t v = threadIdx.x; v < n / 4; v += blockDim.x) {
        const float4 a = reinterpret_cast<const float4*>(g)[v];
        const float4 b = reinterpret_cast<const float4*>(u)[v];
        Store4(o + 4 * v, make_float4(SiluMul(a.x, b.x), SiluMul(a.y, b.y), SiluMul(a.z, b.z), SiluMul(a.w, b.w)));
      }
    } else {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) o[i] = __float2bfloat16_rn(SiluMul(g[i], u[i]));
    }
  }
}

// Aligned pointers take four elements per thread per step; the last count % 4 elements go one by one.
template <bool kVec>
__global__ void ToBf16Kernel(const float* __restrict__ src, int64_t count, bf16* __restrict__ x) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec) {
    const int64_t quads = count / 4;
    for (int64_t v = first; v < quads; v += stride) Store4(x + 4 * v, reinterpret_cast<const float4*>(src)[v]);
    done = quads * 4;
  }
  for (int64_t i = done + first; i < count; i += stride) x[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

Status Embed(const bf16* table, int64_t d, const int32_t* ids, int64_t m, float* out, cudaStream_t stream) {
  if (m < 0 || d <= 0) return InvalidArgument("Embed: bad shape");
  if (m == 0) return Status::Ok();
  const bool vec = d % 8 == 0 && Aligned(table, 16) && Aligned(out, 16);
  const RowLaunch c = RowConfig(vec ? d / 8 : d, m);
  if (vec) EmbedKernel<true><<<c.grid, c.block, 0, stream>>>(table, d, ids, m, out);
  else EmbedKernel<false><<<c.grid, c.block, 0, stream>>>(table, d, ids, m, out);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("EmbedKernel");
  return Status::Ok();
}

Status RmsNormToBf16(const float* x, int64_t m, int64_t d, const float* w, float eps, bf16* y, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(LaunchRmsNorm("RmsNormToBf16", x, m, d, w, eps, y, stream));
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("RmsNormKernel<bf16>");
  return Status::Ok();
}

Status RmsNormF32(const float* x, int64_t m, int64_t d, const float* w, float eps, float* y, cudaStream_t stream) {
  SHOAL_RETURN_IF_ERROR(LaunchRmsNorm("RmsNormF32", x, m, d, w, eps, y, stream));
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("RmsNormKernel<f32>");
  return Status::Ok();
}

Status RopeTable(const int32_t* positions, int64_t m, const float* inv_freq, int half, float attention_factor,
                 float* cos, float* sin, cudaStream_t stream) {
  if (m < 0 || half <= 0) return InvalidArgument("RopeTable: bad shape");
  if (m == 0) return Status::Ok();
  RopeTableKernel<<<FlatGrid(m * half), kBlockThreads, 0, stream>>>(positions, m, inv_freq, half, attention_factor,
                                                                    cos, sin);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("RopeTableKernel");
  return Status::Ok();
}

Status ApplyRope(float* x, int64_t m, int heads, int head_dim, const float* cos, const float* sin,
                 cudaStream_t stream) {
  if (m < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0) return InvalidArgument("ApplyRope: bad shape");
  if (m == 0) return Status::Ok();
  const RowLaunch c = RowConfig(head_dim / 2, m * heads);
  ApplyRopeKernel<<<c.grid, c.block, 0, stream>>>(x, m, heads, head_dim, cos, sin);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("ApplyRopeKernel");
  return Status::Ok();
}

Status AddBias(float* y, int64_t m, int64_t n, const float* bias, cudaStream_t stream) {
  if (m < 0 || n <= 0) return InvalidArgument("AddBias: bad shape");
  if (m == 0) return Status::Ok();
  const bool vec = n % 4 == 0 && Aligned(y, 16) && Aligned(bias, 16);
  const RowLaunch c = RowConfig(vec ? n / 4 : n, m);
  if (vec) AddBiasKernel<true><<<c.grid, c.block, 0, stream>>>(y, m, n, bias);
  else AddBiasKernel<false><<<c.grid, c.block, 0, stream>>>(y, m, n, bias);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("AddBiasKernel");
  return Status::Ok();
}

Status SiluMulToBf16(const float* gate_up, int64_t rows, int64_t n, bf16* h, cudaStream_t stream) {
  if (rows < 0 || n <= 0) return InvalidArgument("SiluMulToBf16: bad shape");
  if (rows == 0) return Status::Ok();
  const bool vec = n % 4 == 0 && Aligned(gate_up, 16) && Aligned(h, 8);
  const RowLaunch c = RowConfig(vec ? n / 4 : n, rows);
  if (vec) SiluMulKernel<true><<<c.grid, c.block, 0, stream>>>(gate_up, rows, n, h);
  else SiluMulKernel<false><<<c.grid, c.block, 0, stream>>>(gate_up, rows, n, h);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("SiluMulKernel");
  return Status::Ok();
}

Status ToBf16(const float* src, int64_t count, bf16* x, cudaStream_t stream) {
  if (count < 0) return InvalidArgument("ToBf16: negative count");
  if (count == 0) return Status::Ok();
  const bool vec = Aligned(src, 16) && Aligned(x, 8);
  const unsigned grid = FlatGrid(vec ? (count + 3) / 4 : count);
  if (vec) ToBf16Kernel<true><<<grid, kBlockThreads, 0, stream>>>(src, count, x);
  else ToBf16Kernel<false><<<grid, kBlockThreads, 0, stream>>>(src, count, x);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("ToBf16Kernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
