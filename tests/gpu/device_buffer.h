// Device memory for the GPU test and benchmark programs (tests/gpu/cuda_ops_test.cc,
// bench/gpu_kernels_bench.cc): an owning typed buffer, checked transfers on one stream, and the host
// side of random bf16 data (bf16 lives on the host as its raw bits, common/dtype.h conversions).
//
// Test helpers, not library code: a failed CUDA call here means the device or the context is gone, so
// it prints the call and throws CudaFailure instead of returning a Status. A gtest test body that
// throws fails on its own and the run goes on (scripts/gpu-check.sh runs cuda_ops_test one test per
// process, as an illegal address is sticky for the whole context); a benchmark catches it per
// section, so the sections before it keep their numbers and the JSON is still written.
// Every transfer is enqueued on the caller's stream rather than the legacy default stream, so a test
// observes exactly what the launchers ordered on that stream (a kernel left running on a stream the
// launcher forgot to join shows up as a wrong result instead of being hidden by an implicit sync).
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace shoal::gpu_util {

struct CudaFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void CheckCuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  const std::string what = std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  std::fflush(stdout);  // keep what was printed before (the test seed) ahead of the error
  std::fprintf(stderr, "%s\n", what.c_str());
  throw CudaFailure(what);
}

#define SHOAL_GPU_CHECK(call) ::shoal::gpu_util::CheckCuda((call), #call, __FILE__, __LINE__)

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : count_(count) {
    if (count_ > 0) SHOAL_GPU_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), bytes()));
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_ != nullptr) cudaFree(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  // Host element type U stands in for T when they have the same size (uint16_t bits for bf16).
  template <class U>
  void Upload(const std::vector<U>& host, cudaStream_t stream) {
    static_assert(sizeof(U) == sizeof(T), "host and device element sizes differ");
    if (host.size() != count_) {
      throw CudaFailure("DeviceBuffer::Upload: " + std::to_string(host.size()) + " host elements into a buffer of " +
                        std::to_string(count_));
    }
    if (count_ > 0) SHOAL_GPU_CHECK(cudaMemcpyAsync(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice, stream));
  }

  // Waits for the stream (so an asynchronous kernel fault is reported here, by name) and copies back.
  template <class U>
  std::vector<U> Download(cudaStream_t stream) const {
    static_assert(sizeof(U) == sizeof(T), "host and device element sizes differ");
    std::vector<U> host(count_);
    if (count_ > 0) SHOAL_GPU_CHECK(cudaMemcpyAsync(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost, stream));
    SHOAL_GPU_CHECK(cudaStreamSynchronize(stream));
    return host;
  }

  // All bytes 0xFF: NaN as f32 and bf16, -1 as an integer. An op that leaves an output (or part of
  // it) unwritten then fails its comparison instead of passing on stale or zeroed memory.
  void Poison(cudaStream_t stream) {
    if (count_ > 0) SHOAL_GPU_CHECK(cudaMemsetAsync(ptr_, 0xFF, bytes(), stream));
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

using Bits = std::vector<uint16_t>;  // bf16 values as raw bits
using Floats = std::vector<float>;

inline Floats Normal(size_t n, std::mt19937_64& rng, float stddev = 1.0f) {
  std::normal_distribution<float> nd(0.0f, stddev);
  Floats v(n);
  for (float& x : v) x = nd(rng);
  return v;
}
inline Bits ToBits(const Floats& v) {  // round to nearest even, as the GPU's conversions
  Bits b(v.size());
  std::transform(v.begin(), v.end(), b.begin(), F32ToBf16);
  return b;
}
inline Floats Widen(const Bits& b) {  // exact
  Floats v(b.size());
  std::transform(b.begin(), b.end(), v.begin(), Bf16ToF32);
  return v;
}

template <class T, class U>
DeviceBuffer<T> ToDevice(const std::vector<U>& host, cudaStream_t stream) {
  DeviceBuffer<T> d(host.size());
  d.Upload(host, stream);
  return d;
}

}  // namespace shoal::gpu_util
