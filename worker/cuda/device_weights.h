// A model's weights in GPU memory, laid out for the GPU forward pass (worker/cuda/cuda_engine.h).
//
// Matrices are bf16 in the nn.Linear layout [out, in] whatever the checkpoint's dtype (f32 and f16
// are rounded to bf16 on the host while uploading: the GPU path computes in bf16 with f32
// accumulation); norm weights and biases are f32. Each expert's gate and up projections are stacked
// into one [2I, H] matrix so one GEMM computes both (kernels/cuda/cuda_kernels.h SiluMulToBf16 reads
// its [rows, 2I] output). Everything lives in one device allocation.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "kernels/cuda/cuda_kernels.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace shoal::cuda {

struct DeviceFfn {
  const bf16* gate_up = nullptr;  // [2I, H]: gate rows, then up rows
  const bf16* down = nullptr;     // [H, I]
  int64_t intermediate = 0;       // I
  bool present() const { return gate_up != nullptr; }
};

struct DeviceLayer {
  const float* input_norm = nullptr;
  const float* post_attn_norm = nullptr;
  const bf16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;  // null when absent
  const float *q_norm = nullptr, *k_norm = nullptr;                                        // Qwen3-MoE
  bool is_moe = false;
  const bf16* router = nullptr;     // [E, H]
  std::vector<DeviceFfn> experts;   // [E]
  // Host arrays of the experts' device pointers, the form cuBLAS grouped GEMMs take.
  std::vector<const bf16*> expert_gate_up, expert_down;
  DeviceFfn shared_expert;          // Qwen2-MoE
  const bf16* shared_expert_gate = nullptr;  // [1, H]
  DeviceFfn dense_mlp;
};

class DeviceWeights {
 public:
  // Uploads `weights` (any checkpoint dtype) to the current device.
  static StatusOr<DeviceWeights> Upload(const ModelConfig& config, const ModelWeights& weights, cudaStream_t stream);
  // Random weights generated on the device (nothing on the host: a 10 GB benchmark model starts in a
  // second): matrices uniform in ±sqrt(3/in) (variance 1/in), norms 1, biases 0. Deterministic in seed.
  static StatusOr<DeviceWeights> Synthetic(const ModelConfig& config, uint64_t seed, cudaStream_t stream);

  DeviceWeights() = default;
  DeviceWeights(DeviceWeights&& o) noexcept;
  DeviceWeights& operator=(DeviceWeights&& o) noexcept;
  ~DeviceWeights();

  const bf16* embed = nullptr;    // [V, H]
  const bf16* lm_head = nullptr;  // [V, H] (the embedding when tied)
  const float* final_norm = nullptr;
  std::vector<DeviceLayer> layers;

  // Bytes of all matrices (the decode roofline's numerator is a share of this).
  int64_t matrix_bytes() const { return matrix_bytes_; }
  int64_t total_bytes() const { return total_bytes_; }

 private:
  // Sizes the layout, allocates it once, then uploads `host` (or fills randomly when null).
  static StatusOr<DeviceWeights> Build(const ModelConfig& config, const ModelWeights* host, uint64_t seed,
                                       cudaStream_t stream);
  void* base_ = nullptr;
  int64_t matrix_bytes_ = 0;
  int64_t total_bytes_ = 0;
};

// Fills used by DeviceWeights::Synthetic (worker/cuda/synthetic_fill.cu).
Status FillUniformBf16(bf16* p, int64_t count, float bound, uint64_t seed, cudaStream_t stream);
Status FillConstantF32(float* p, int64_t count, float value, cudaStream_t stream);

}  // namespace shoal::cuda
