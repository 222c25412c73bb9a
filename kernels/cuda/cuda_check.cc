#include "kernels/cuda/cuda_check.h"

#include <atomic>

namespace shoal::cuda {
namespace {

std::atomic<int> g_rank{-1};

std::string Where(const char* library, const char* call, const char* file, int line) {
  std::string s = std::string(library) + " error";
  if (int r = g_rank.load(); r >= 0) s += " on rank " + std::to_string(r);
  return s + " in " + call + " at " + file + ":" + std::to_string(line);
}

}  // namespace

void SetCudaErrorRank(int rank) { g_rank.store(rank); }
int CudaErrorRank() { return g_rank.load(); }

Status CudaStatus(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return Status::Ok();
  std::string msg = Where("CUDA", call, file, line) + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")";
  if (err == cudaErrorMemoryAllocation) return ResourceExhausted(msg);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) return Unavailable(msg);
  return Internal(msg);
}

Status CublasStatus(cublasStatus_t err, const char* call, const char* file, int line) {
  if (err == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  std::string msg = Where("cuBLAS", call, file, line) + ": " + cublasGetStatusName(err) + " (" +
                    cublasGetStatusString(err) + ")";
  if (err == CUBLAS_STATUS_ALLOC_FAILED) return ResourceExhausted(msg);
  if (err == CUBLAS_STATUS_INVALID_VALUE || err == CUBLAS_STATUS_NOT_SUPPORTED) return InvalidArgument(msg);
  return Internal(msg);
}

Status NcclStatus(int result, const char* result_string, const char* detail, const char* call, const char* file,
                  int line) {
  if (result == 0) return Status::Ok();
  std::string msg = Where("NCCL", call, file, line) + ": " + (result_string ? result_string : "unknown error");
  if (detail && *detail) msg += std::string(" — ") + detail;
  // ncclResult_t: 1 unhandled cuda, 2 system, 3 internal, 4 invalid argument, 5 invalid usage,
  // 6 remote error, 7 in progress.
  switch (result) {
    case 2:
    case 6:
      return Unavailable(msg);
    case 4:
    case 5:
      return InvalidArgument(msg);
    default:
      return Internal(msg);
  }
}

int CudaDeviceCount(std::string* why) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later queries start clean
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA-capable device";
  return n;
}

}  // namespace shoal::cuda
