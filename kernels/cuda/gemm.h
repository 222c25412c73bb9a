// GEMMs of the GPU forward pass on cuBLAS: dense projections and the experts of one MoE layer.
//
// Every GEMM is y[m, n] (f32) = x[m, k] (bf16) · W[n, k]ᵀ (bf16) + beta · y, f32 accumulation
// (CUBLAS_COMPUTE_32F): W in the nn.Linear layout, so cuBLAS (column-major) computes yᵀ = W · xᵀ
// with W transposed — no copy of the weights. beta = 1 adds into y (the residual stream).
//
// Expert GEMMs run every local expert on its own rows of one expert-major buffer (the rows of expert
// e are [offsets[e], offsets[e+1]), kernels/cuda/cuda_kernels.h MoePermutePlan). Two strategies, both
// kept because which one wins depends on the shapes (gpu-check measures them side by side):
//   kGrouped     one cublasGemmGroupedBatchedEx call for all experts with rows
//   kPerExpert   one cublasGemmEx per expert, round-robin over a few streams forked from the caller's
// Row offsets must be on the host: cuBLAS takes problem sizes from host memory (the expert exchange
// brings the counts to the host anyway).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {

enum class ExpertGemmMode { kGrouped, kPerExpert };

class Gemm {
 public:
  // A cuBLAS handle bound to `stream` (not owned), with its workspace. Needs a current device.
  static StatusOr<std::unique_ptr<Gemm>> Create(cudaStream_t stream, int per_expert_streams = 4);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  cudaStream_t stream() const { return stream_; }

  // y[m, n] = x[m, k] · W[n, k]ᵀ + beta · y. m = 0 is a no-op.
  Status Linear(const bf16* x, int64_t m, int64_t k, const bf16* w, int64_t n, float* y, float beta = 0.0f);

  // For each expert e < host_offsets.size() - 1 with rows: y[rows of e, n] = x[rows of e, k] ·
  // weights[e][n, k]ᵀ (weights: host array of device pointers, one per expert; null only for an
  // expert with no rows). x [rows, k] bf16, y [rows, n] f32.
  Status ExpertLinear(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                      int64_t k, float* y, ExpertGemmMode mode);

 private:
  Gemm() = default;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  // kPerExpert: forked streams, joined back to stream_ with events before the call returns.
  struct Fork;
  std::unique_ptr<Fork> fork_;
};

}  // namespace shoal::cuda
