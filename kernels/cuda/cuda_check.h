// Errors from the CUDA runtime, cuBLAS and NCCL as Status values.
//
// Every CUDA/cuBLAS/NCCL call in shoal goes through one of the SHOAL_*_RETURN_IF_ERROR macros, and
// every kernel launch is followed by SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED(), so a fault on a GPU worker
// travels to the coordinator as an error naming the library's own error string, the call, the source
// line and the rank (library code never aborts the process). The rank is per process: a worker sets
// it once (SetCudaErrorRank) after it learns it.
#pragma once

#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/status.h"

namespace shoal::cuda {

// The rank named in error messages from this process; -1 (the default) leaves the rank out.
void SetCudaErrorRank(int rank);
int CudaErrorRank();

// "CUDA error on rank 3: cudaErrorMemoryAllocation (out of memory) in cudaMalloc(&p, n) at
// kernels/cuda/x.cu:12". OK when `err` is cudaSuccess. Out-of-memory becomes ResourceExhausted,
// everything else Internal.
Status CudaStatus(cudaError_t err, const char* call, const char* file, int line);
Status CublasStatus(cublasStatus_t err, const char* call, const char* file, int line);
// NCCL's result codes are plain ints here so this header does not need nccl.h; `detail` is
// ncclGetLastError() text when the caller has it. ncclRemoteError/ncclSystemError become
// Unavailable (a peer or the network failed), ncclInvalidArgument/ncclInvalidUsage InvalidArgument.
Status NcclStatus(int result, const char* result_string, const char* detail, const char* call, const char* file,
                  int line);

// Number of visible CUDA devices; 0 (not an error) when there is no driver or no device, with the
// reason in *why when given ("no CUDA driver", "no CUDA-capable device", ...).
int CudaDeviceCount(std::string* why = nullptr);

}  // namespace shoal::cuda

#define SHOAL_CUDA_RETURN_IF_ERROR(call)                                                          \
  do {                                                                                           \
    cudaError_t shoal_cuda_err_ = (call);                                                        \
    if (shoal_cuda_err_ != cudaSuccess)                                                          \
      return ::shoal::cuda::CudaStatus(shoal_cuda_err_, #call, __FILE__, __LINE__);              \
  } while (0)

// After a <<<...>>> launch: a bad configuration or an earlier asynchronous fault.
#define SHOAL_CUDA_RETURN_IF_LAUNCH_FAILED(kernel_name)                                          \
  do {                                                                                           \
    cudaError_t shoal_cuda_err_ = cudaGetLastError();                                            \
    if (shoal_cuda_err_ != cudaSuccess)                                                          \
      return ::shoal::cuda::CudaStatus(shoal_cuda_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

#define SHOAL_CUBLAS_RETURN_IF_ERROR(call)                                                        \
  do {                                                                                           \
    cublasStatus_t shoal_cublas_err_ = (call);                                                   \
    if (shoal_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                              \
      return ::shoal::cuda::CublasStatus(shoal_cublas_err_, #call, __FILE__, __LINE__);          \
  } while (0)

// In files that include nccl.h.
#define SHOAL_NCCL_RETURN_IF_ERROR(call)                                                          \
  do {                                                                                           \
    ncclResult_t shoal_nccl_err_ = (call);                                                       \
    if (shoal_nccl_err_ != ncclSuccess && shoal_nccl_err_ != ncclInProgress)                     \
      return ::shoal::cuda::NcclStatus(static_cast<int>(shoal_nccl_err_), ncclGetErrorString(shoal_nccl_err_), \
                                       ncclGetLastError(nullptr), #call, __FILE__, __LINE__);    \
  } while (0)
