// Device-side random fills for synthetic benchmark weights (worker/cuda/device_weights.h).
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "worker/cuda/device_weights.h"

namespace shoal::cuda {
namespace {

// A counter-based hash (splitmix64): element i's value depends only on (seed, i), so the fill is
// deterministic whatever the launch shape.
__device__ inline uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void FillUniformKernel(bf16* p, int64_t count, float bound, uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    const uint64_t r = Mix(seed ^ Mix(static_cast<uint64_t>(i)));
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1) from 24 bits
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * bound);
  }
}

__global__ void FillConstantKernel(float* p, int64_t count, float value) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) p[i] = value;
}

int Blocks(int64_t count) {
  const int64_t b = (count + 255) / 256;
  return static_cast<int>(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

}  // namespace

Status FillUniformBf16(bf16* p, int64_t count, float bound, uint64_t seed, cudaStream_t stream) {
  if (count <= 0) return Status::Ok();
  FillUniformKernel<<<Blocks(count), 256, 0, stream>>>(p, count, bound, seed);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("FillUniformKernel");
  return Status::Ok();
}

Status FillConstantF32(float* p, int64_t count, float value, cudaStream_t stream) {
  if (count <= 0) return Status::Ok();
  FillConstantKernel<<<Blocks(count), 256, 0, stream>>>(p, count, value);
  SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED("FillConstantKernel");
  return Status::Ok();
}

}  // namespace shoal::cuda
