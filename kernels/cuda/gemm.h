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
//
// cuBLAS documents cublasGemmGroupedBatchedEx with CUBLAS_COMPUTE_32F for matching input and output
// types only (bf16→bf16, f16→f16, f32→f32), so a given cuBLAS may refuse bf16 inputs with an f32
// output. Create probes both output types once with a tiny call; kGrouped with a refused output type
// returns Unimplemented with the probe's reason, and nothing in the engine depends on kGrouped.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::cuda {

enum class ExpertGemmMode { kGrouped, kPerExpert };

// What Gemm::Create found out about cublasGemmGroupedBatchedEx on this device and cuBLAS.
struct GroupedGemmSupport {
  bool f32_out = false;   // bf16 × bf16 → f32 (this class's usual output)
  bool bf16_out = false;  // bf16 × bf16 → bf16, f32 accumulation
  std::string why_not;    // the refusals, for logs ("bf16→f32: CUBLAS_STATUS_NOT_SUPPORTED")
};

class Gemm {
 public:
  // A cuBLAS handle bound to `stream` (not owned), with its workspace. Needs a current device. Probes
  // grouped-GEMM support with two tiny calls on `stream` (it synchronizes `stream` once).
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
  // The same with a bf16 output (rounded from the f32 accumulator): the type combination cuBLAS
  // documents for grouped GEMMs.
  Status ExpertLinear(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                      int64_t k, bf16* y, ExpertGemmMode mode);

  const GroupedGemmSupport& grouped_support() const { return grouped_; }

 private:
  Gemm() = default;
  // One grouped call with the problems of the experts in fork_->active; `y_type` is CUDA_R_32F or
  // CUDA_R_16BF. Returns cuBLAS's status as is (the probe needs NOT_SUPPORTED apart from errors).
  Status Grouped(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                 int64_t k, void* y, cudaDataType y_type, cublasStatus_t* status);
  Status ExpertLinearAny(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                         int64_t k, void* y, cudaDataType y_type, ExpertGemmMode mode);
  Status ProbeGrouped();
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  // kPerExpert: forked streams, joined back to stream_ with events before the call returns.
  struct Fork;
  std::unique_ptr<Fork> fork_;
  GroupedGemmSupport grouped_;
};

}  // namespace shoal::cuda
