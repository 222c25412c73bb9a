#include "worker/cuda/device_weights.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace shoal::cuda {

// Walks every tensor of the device layout once per pass: a sizing pass (no memory yet), then a pass
// that carves the single allocation and fills each tensor from the host checkpoint or with random
// values. One walk for both passes keeps sizes and offsets from drifting apart.
class WeightLayout {
 public:
  enum class Mode { kSize, kUpload, kSynthetic };
  WeightLayout(Mode mode, bool has_host, char* base, uint64_t seed, cudaStream_t stream)
      : mode_(mode), has_host_(has_host), base_(base), seed_(seed), stream_(stream) {}

  int64_t bytes() const { return offset_; }
  int64_t matrix_bytes() const { return matrix_bytes_; }

  // A [rows, cols] matrix; `src` is the host tensor (kUpload) and may be null only in kSynthetic.
  Status Matrix(const kernels::Matrix* src, int64_t rows, int64_t cols, const bf16** dst, const std::string& name) {
    bf16* p = Take<bf16>(rows * cols);
    matrix_bytes_ += rows * cols * 2;
    *dst = p;
    return Fill(src, p, rows, cols, name);
  }
  // gate [I, H] stacked over up [I, H] → [2I, H].
  Status Stacked(const kernels::Matrix* gate, const kernels::Matrix* up, int64_t rows, int64_t cols, const bf16** dst,
                 const std::string& name) {
    bf16* p = Take<bf16>(2 * rows * cols);
    matrix_bytes_ += 2 * rows * cols * 2;
    *dst = p;
    SHOAL_RETURN_IF_ERROR(Fill(gate, p, rows, cols, name + ".gate_proj"));
    return Fill(up, p == nullptr ? nullptr : p + rows * cols, rows, cols, name + ".up_proj");
  }
  // An f32 vector of n: from `src` when uploading (an empty src is an absent tensor → null), else
  // `synthetic_value` when the config implies the tensor.
  Status Vector(const std::vector<float>& src, int64_t n, bool in_synthetic, float synthetic_value, const float** dst) {
    *dst = nullptr;
    if (has_host_ ? src.empty() : !in_synthetic) return Status::Ok();
    float* p = Take<float>(n);
    *dst = p;
    if (mode_ == Mode::kUpload) {
      if (static_cast<int64_t>(src.size()) != n) {
        return Internal("vector of " + std::to_string(src.size()) + " floats, expected " + std::to_string(n));
      }
      SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpy(p, src.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    } else if (mode_ == Mode::kSynthetic) {
      SHOAL_RETURN_IF_ERROR(FillConstantF32(p, n, synthetic_value, stream_));
    }
    return Status::Ok();
  }

 private:
  template <class T>
  T* Take(int64_t count) {
    offset_ = (offset_ + 255) / 256 * 256;  // every tensor 256-byte aligned (vector loads, cuBLAS)
    T* p = base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + offset_);
    offset_ += count * static_cast<int64_t>(sizeof(T));
    return p;
  }

  Status Fill(const kernels::Matrix* src, bf16* p, int64_t rows, int64_t cols, const std::string& name) {
    if (mode_ == Mode::kSize) return Status::Ok();
    const int64_t n = rows * cols;
    if (mode_ == Mode::kSynthetic) {
      return FillUniformBf16(p, n, std::sqrt(3.0f / static_cast<float>(cols)), seed_ + 0x1000193ull * ++tensor_, stream_);
    }
    if (src == nullptr || src->empty() || src->rows != rows || src->cols != cols) {
      return Internal("tensor " + name + ": missing or not [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    if (src->dtype == DType::kBF16) {
      SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpy(p, src->data, n * 2, cudaMemcpyHostToDevice));
      return Status::Ok();
    }
    // f32 / f16 → bf16 on the host, in slices so a large tensor needs no tensor-sized buffer.
    constexpr int64_t kSlice = int64_t{1} << 22;
    staging_.resize(static_cast<size_t>(std::min(n, kSlice)));
    for (int64_t begin = 0; begin < n; begin += kSlice) {
      const int64_t len = std::min(kSlice, n - begin);
      for (int64_t i = 0; i < len; ++i) {
        float f;
        if (src->dtype == DType::kF32) {
          f = static_cast<const float*>(src->data)[begin + i];
        } else {
          f = F16ToF32(static_cast<const uint16_t*>(src->data)[begin + i]);
        }
        staging_[i] = F32ToBf16(f);
      }
      SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpy(p + begin, staging_.data(), len * 2, cudaMemcpyHostToDevice));
    }
    return Status::Ok();
  }

  Mode mode_;
  bool has_host_;
  char* base_;
  uint64_t seed_;
  cudaStream_t stream_;
  int64_t offset_ = 0;
  int64_t matrix_bytes_ = 0;
  uint64_t tensor_ = 0;
  std::vector<uint16_t> staging_;
};

namespace {

// The one walk over the model's tensors (see WeightLayout).
Status Walk(const ModelConfig& c, const ModelWeights* host, WeightLayout& w, DeviceWeights& out) {
  const int64_t H = c.hidden_size, V = c.vocab_size, Q = c.q_dim(), KV = c.kv_dim();
  const std::vector<float> none;
  SHOAL_RETURN_IF_ERROR(w.Matrix(host ? &host->embed : nullptr, V, H, &out.embed, "embed_tokens"));
  if (c.tie_word_embeddings) {
    out.lm_head = out.embed;
  } else {
    SHOAL_RETURN_IF_ERROR(w.Matrix(host ? &host->lm_head : nullptr, V, H, &out.lm_head, "lm_head"));
  }
  SHOAL_RETURN_IF_ERROR(w.Vector(host ? host->final_norm : none, H, true, 1.0f, &out.final_norm));
  out.layers.assign(c.num_layers, DeviceLayer{});
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights* L = host ? &host->layers[l] : nullptr;
    DeviceLayer& d = out.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->input_norm : none, H, true, 1.0f, &d.input_norm));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->post_attn_norm : none, H, true, 1.0f, &d.post_attn_norm));
    SHOAL_RETURN_IF_ERROR(w.Matrix(L ? &L->q : nullptr, Q, H, &d.q, p + "q_proj"));
    SHOAL_RETURN_IF_ERROR(w.Matrix(L ? &L->k : nullptr, KV, H, &d.k, p + "k_proj"));
    SHOAL_RETURN_IF_ERROR(w.Matrix(L ? &L->v : nullptr, KV, H, &d.v, p + "v_proj"));
    SHOAL_RETURN_IF_ERROR(w.Matrix(L ? &L->o : nullptr, H, Q, &d.o, p + "o_proj"));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->q_bias : none, Q, c.qkv_bias, 0.0f, &d.q_bias));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->k_bias : none, KV, c.qkv_bias, 0.0f, &d.k_bias));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->v_bias : none, KV, c.qkv_bias, 0.0f, &d.v_bias));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->o_bias : none, H, c.o_bias, 0.0f, &d.o_bias));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->q_norm : none, c.head_dim, c.qk_norm, 1.0f, &d.q_norm));
    SHOAL_RETURN_IF_ERROR(w.Vector(L ? L->k_norm : none, c.head_dim, c.qk_norm, 1.0f, &d.k_norm));
    d.is_moe = c.layer_is_moe[l];
    if (d.is_moe) {
      const int64_t I = c.moe_intermediate_size;
      SHOAL_RETURN_IF_ERROR(w.Matrix(L ? &L->router : nullptr, c.num_experts, H, &d.router, p + "mlp.gate"));
      d.experts.assign(c.num_experts, DeviceFfn{});
      d.expert_gate_up.assign(c.num_experts, nullptr);
      d.expert_down.assign(c.num_experts, nullptr);
      for (int e = 0; e < c.num_experts; ++e) {
        // An expert this process did not load (another rank's) takes no device memory.
        if (L && !L->experts[e].present()) continue;
        const FfnWeights* f = L ? &L->experts[e] : nullptr;
        const std::string name = p + "mlp.experts." + std::to_string(e);
        DeviceFfn& x = d.experts[e];
        x.intermediate = I;
        SHOAL_RETURN_IF_ERROR(w.Stacked(f ? &f->gate : nullptr, f ? &f->up : nullptr, I, H, &x.gate_up, name));
        SHOAL_RETURN_IF_ERROR(w.Matrix(f ? &f->down : nullptr, H, I, &x.down, name + ".down_proj"));
        d.expert_gate_up[e] = x.gate_up;
        d.expert_down[e] = x.down;
      }
      if (c.shared_expert_intermediate_size > 0) {
        const int64_t S = c.shared_expert_intermediate_size;
        const FfnWeights* f = L ? &L->shared_expert : nullptr;
        d.shared_expert.intermediate = S;
        SHOAL_RETURN_IF_ERROR(
            w.Stacked(f ? &f->gate : nullptr, f ? &f->up : nullptr, S, H, &d.shared_expert.gate_up, p + "shared_expert"));
        SHOAL_RETURN_IF_ERROR(w.Matrix(f ? &f->down : nullptr, H, S, &d.shared_expert.down, p + "shared_expert.down_proj"));
        SHOAL_RETURN_IF_ERROR(
            w.Matrix(L ? &L->shared_expert_gate : nullptr, 1, H, &d.shared_expert_gate, p + "shared_expert_gate"));
      }
    } else {
      const int64_t I = c.intermediate_size;
      const FfnWeights* f = L ? &L->dense_mlp : nullptr;
      d.dense_mlp.intermediate = I;
      SHOAL_RETURN_IF_ERROR(w.Stacked(f ? &f->gate : nullptr, f ? &f->up : nullptr, I, H, &d.dense_mlp.gate_up, p + "mlp"));
      SHOAL_RETURN_IF_ERROR(w.Matrix(f ? &f->down : nullptr, H, I, &d.dense_mlp.down, p + "mlp.down_proj"));
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<DeviceWeights> DeviceWeights::Build(const ModelConfig& c, const ModelWeights* host, uint64_t seed,
                                             cudaStream_t stream) {
  DeviceWeights out;
  WeightLayout sizing(WeightLayout::Mode::kSize, host != nullptr, nullptr, seed, stream);
  SHOAL_RETURN_IF_ERROR(Walk(c, host, sizing, out));
  void* base = nullptr;
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&base, static_cast<size_t>(sizing.bytes())));
  out.base_ = base;  // owned from here: freed by ~DeviceWeights on any error below
  out.total_bytes_ = sizing.bytes();
  WeightLayout fill(host ? WeightLayout::Mode::kUpload : WeightLayout::Mode::kSynthetic, host != nullptr, static_cast<char*>(base), seed,
                    stream);
  SHOAL_RETURN_IF_ERROR(Walk(c, host, fill, out));
  out.matrix_bytes_ = fill.matrix_bytes();
  // The uploads are cudaMemcpy calls on the legacy stream: from pageable memory they may return
  // before the DMA lands, and the engine's (non-blocking) stream does not order after the legacy
  // stream. Wait for the whole device, not just `stream` (which only carries the synthetic fills).
  SHOAL_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return out;
}

StatusOr<DeviceWeights> DeviceWeights::Upload(const ModelConfig& config, const ModelWeights& weights,
                                              cudaStream_t stream) {
  if (static_cast<int>(weights.layers.size()) != config.num_layers) {
    return InvalidArgument("weights have " + std::to_string(weights.layers.size()) + " layers, the config " +
                           std::to_string(config.num_layers));
  }
  return Build(config, &weights, 0, stream);
}

StatusOr<DeviceWeights> DeviceWeights::Synthetic(const ModelConfig& config, uint64_t seed, cudaStream_t stream) {
  return Build(config, nullptr, seed, stream);
}

DeviceWeights::DeviceWeights(DeviceWeights&& o) noexcept { *this = std::move(o); }

DeviceWeights& DeviceWeights::operator=(DeviceWeights&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) cudaFree(base_);
    embed = o.embed;
    lm_head = o.lm_head;
    final_norm = o.final_norm;
    layers = std::move(o.layers);
    base_ = std::exchange(o.base_, nullptr);
    matrix_bytes_ = o.matrix_bytes_;
    total_bytes_ = o.total_bytes_;
  }
  return *this;
}

DeviceWeights::~DeviceWeights() {
  if (base_ != nullptr) cudaFree(base_);
}

}  // namespace shoal::cuda
