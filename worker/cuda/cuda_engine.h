// The forward pass on one GPU: the same contract as the CPU engine (worker/engine.h) for a group of
// one — a batch of sequences each adding any number of tokens (prefill chunks and decode steps
// mixed) over a paged KV cache — computed with the CUDA kernels (kernels/cuda/) and cuBLAS.
//
// Precision: weights bf16, residual stream and GEMM outputs f32, GEMM inputs bf16, KV cache bf16,
// f32 accumulation (kernels/cuda/cuda_kernels.h). Results therefore differ from the f32 CPU engine by
// bf16 rounding; the gpu tests bound the difference on the fixtures' logits.
//
// Per step: validate and reserve KV blocks on the host (worker/sequence_table.h, shared with the CPU
// engine, so both accept the same batches), upload the step's rows, then per layer RMSNorm → q/k/v
// GEMMs (+bias) → q/k norm → RoPE → KV write → paged attention → o_proj added into the residual →
// RMSNorm → MoE: router GEMM → top-k → expert-major permutation → grouped expert GEMMs (gate|up
// fused) → SiLU·up → down → weighted combine into the residual (+ Qwen2-MoE's gated shared expert).
// Each MoE layer brings its expert row counts to the host (cuBLAS takes problem sizes from host
// memory), one small synchronisation per layer.
//
// It is a StepEngine: the scheduler, batch generation and the serve loop drive it as they drive the
// CPU engine (`shoal generate --device cuda`, `shoal worker --device cuda`). A rank of an
// expert-parallel group of GPUs holds only its experts and exchanges rows over NCCL at every MoE layer.
// Thread-safety: none; one engine loop drives it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <vector>

#include "common/config.h"
#include "comm/nccl/device_expert_exchange.h"
#include "comm/placement.h"
#include "common/status.h"
#include "kernels/cuda/gemm.h"
#include "model/model_config.h"
#include "model/weights.h"
#include "worker/cuda/device_weights.h"
#include "worker/sequence_table.h"
#include "worker/step_engine.h"

namespace shoal::cuda {

class CudaEngine final : public StepEngine {
 public:
  // Uploads `weights` to `device`. KV cache sized like the CPU engine's (kv_cache.memory_mib, or
  // kv_cache.num_blocks), in bf16.
  // Expert parallelism: `group` (owned; null = a group of one) is this rank's expert-parallel group on
  // device buffers — an NcclGroup (comm/nccl/nccl_group.h) — and `placement` (default Balanced) gives
  // this rank its experts, which `weights` must hold; every MoE layer then exchanges rows with the
  // other ranks (comm/nccl/device_expert_exchange.h: contiguous placements without replicas) — also at
  // one rank, when a group is given.
  static StatusOr<std::unique_ptr<CudaEngine>> Create(ModelConfig config, const ModelWeights& weights,
                                                      const EngineConfig& cfg, int device,
                                                      std::unique_ptr<comm::Group> group = nullptr,
                                                      const Placement* placement = nullptr);
  // Random weights generated on the device (DeviceWeights::Synthetic), for benchmarks.
  static StatusOr<std::unique_ptr<CudaEngine>> CreateSynthetic(ModelConfig config, const EngineConfig& cfg,
                                                               int device, uint64_t seed);
  ~CudaEngine();
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  const ModelConfig& config() const override { return config_; }
  const DeviceWeights& weights() const { return weights_; }
  const KvBlockPool& kv_blocks() const override { return blocks_; }
  // K and V of every layer in bf16.
  int64_t kv_bytes_per_token() const override { return int64_t{2} * config_.num_layers * config_.kv_dim() * 2; }
  int max_num_seqs() const override { return seqs_.max_num_seqs(); }
  int max_step_tokens() const override { return max_step_tokens_; }
  comm::Group& group() override { return *group_; }
  int64_t collective_timeout_ms() const override { return collective_timeout_ms_; }
  std::string Describe() const override;
  void set_expert_gemm_mode(ExpertGemmMode mode) { expert_mode_ = mode; }
  // Decode-sized steps (at most kDeviceMoeMaxTokens tokens, a group of one) run the routed experts
  // with the device-offset kernels (MoeGateUpSilu / MoeDown: no host synchronisation), and decode
  // steps of that size — every input one token, no all_logits — replay a CUDA graph captured once per
  // batch size. Both on by default where the model allows (device_moe_available()); off for
  // comparisons and benchmarks. Turning the device MoE path off turns graphs off too.
  static constexpr int64_t kDeviceMoeMaxTokens = 16;
  void set_device_moe(bool on) { use_device_moe_ = on; }
  // engine.experimental_gpu_kernels: on small steps, SkinnyLinear for the dense projections, the
  // tensor-core expert kernels, the fused attention prologue (every step), one-launch routing and
  // split attention (kernels/cuda/cuda_kernels.h) — compiled and unit-tested code that has NOT YET RUN
  // ON A GPU. Changing it drops the captured graphs.
  void set_experimental_kernels(bool on) {
    if (on != experimental_) ClearGraphs();
    experimental_ = on;
  }
  void set_decode_graphs(bool on) { use_graphs_ = on; }
  bool device_moe_available() const { return device_moe_; }
  // Steps that replayed a captured graph, and graphs captured, since creation.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graphs_captured() const { return graphs_captured_; }

  StatusOr<SeqId> NewSequence() override { return seqs_.New(); }
  StatusOr<SeqId> ForkSequence(SeqId parent) override;
  void ReleaseSequence(SeqId seq) override { seqs_.Release(seq, blocks_); }
  int64_t SequenceLength(SeqId seq) const override { return seqs_.Length(seq); }

  // As Engine::Forward: logits [rows, vocab] per input on the host. A rejected batch changes nothing.
  Status Forward(const std::vector<ForwardInput>& batch, std::vector<ForwardOutput>* out) override;
  // The greedy next token of each input (argmax on the device; only the ids come back). Inputs must
  // not ask for all_logits.
  Status ForwardGreedy(const std::vector<ForwardInput>& batch, std::vector<int32_t>* tokens);

  // Bytes of weight matrices the last step read: dense matrices, the experts with rows, lm_head, and
  // the embedding rows it touched.
  size_t last_step_weight_bytes() const override { return static_cast<size_t>(last_step_weight_bytes_); }
  // Rows each of this rank's experts processed so far, all layers (all E experts for a group of one).
  const std::vector<uint64_t>& expert_rows_total() const override { return expert_rows_total_; }
  const std::vector<uint64_t>& layer_expert_rows() const override { return layer_expert_rows_; }

 private:
  struct Workspace;
  CudaEngine(ModelConfig config, const EngineConfig& cfg, int64_t num_blocks, int device);
  Status Init(const ModelWeights* host, uint64_t seed);
  Status InitDeviceMoe();
  Status EnsureWorkspace(int64_t tokens);
  // Runs the step up to the logits of the rows asked for (on the device, in the workspace).
  Status Step(const std::vector<ForwardInput>& batch, int64_t* logit_rows);
  // The device work of a step whose inputs are uploaded: embedding, every layer, final norm, lm_head
  // over the R logit rows. What a decode graph captures.
  Status Body(int64_t T, int64_t R);
  // Replays the graph of a decode step of T tokens, capturing it first if there is none.
  Status LaunchDecodeGraph(int64_t T, int64_t R);
  void ClearGraphs();
  Status EnsureLogits(int64_t rows);
  // After a device-MoE step has synchronised: its experts' rows and weight bytes, from the per-layer
  // offsets copied back at the end of the step.
  void AccountDeviceMoe();
  // Runs every layer with no tokens, so the peers of an expert-parallel group are not left waiting in
  // an exchange after this rank rejected its batch. Nothing for a group of one.
  void JoinLayersWithoutTokens();
  // The routed experts of one layer through the expert exchange (groups of more than one rank).
  Status ExchangeExperts(int l, int64_t T);
  // Qwen2-MoE's sigmoid-gated shared expert, added into the residual (nothing for other models).
  Status SharedExpert(const DeviceLayer& L, int64_t T);
  Status Layer(int l, int64_t T);
  // Projections of one input: SkinnyLinear in one launch on small steps with the experimental kernels,
  // else one cuBLAS GEMM each (plus AddBias).
  Status Project(const bf16* x, int64_t T, int64_t k, std::initializer_list<SkinnyOutput> outputs);
  Status Moe(int l, int64_t T);

  ModelConfig config_;
  int device_;
  int multiprocessors_ = 1;
  int max_step_tokens_;
  bool experimental_ = false;
  int64_t collective_timeout_ms_;
  std::unique_ptr<comm::Group> group_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  // Per-expert calls by default: cuBLAS documents grouped GEMMs for bf16 → bf16 only (kernels/cuda/gemm.h).
  ExpertGemmMode expert_mode_ = ExpertGemmMode::kPerExpert;
  DeviceWeights weights_;
  double kv_memory_fraction_ = 0;  // kv_cache.memory_fraction: blocks_ sized in Init after the upload
  KvBlockPool blocks_;
  SequenceTable seqs_;
  StepRows rows_;
  std::unique_ptr<Workspace> ws_;
  void* kv_base_ = nullptr;  // K then V of every layer, bf16
  std::vector<PagedKvLayer> kv_layers_;
  float* inv_freq_ = nullptr;
  int max_blocks_per_seq_ = 0;
  int step_max_positions_ = 0;
  int64_t step_weight_bytes_ = 0;
  int64_t last_step_weight_bytes_ = 0;
  std::vector<int64_t> host_offsets_;
  std::vector<uint64_t> expert_rows_total_;
  std::vector<uint64_t> layer_expert_rows_;  // [num_layers × expert_rows_total_.size()]
  // Expert parallelism (group size > 1).
  std::optional<Placement> placement_;
  std::unique_ptr<comm::DeviceExpertExchange> exchange_;
  std::vector<const bf16*> local_gate_up_, local_down_, block_gate_up_, block_down_;
  std::vector<uint8_t> local_used_;  // per layer: which local experts got rows (no allocation per step)
  // Device-offset MoE and decode graphs (group of one).
  bool device_moe_ = false;            // the model fits the kernels (widths, alignment, every expert here)
  bool use_device_moe_ = true, use_graphs_ = true;
  bool step_device_moe_ = false;       // the current step runs its experts on the device path
  const bf16** expert_ptrs_ = nullptr; // device, [layers][2][E]: gate|up then down weight pointers
  int64_t* layer_offsets_host_ = nullptr;  // pinned, [layers][E + 1]: the step's expert offsets
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    int64_t weight_bytes = 0;  // what the step reads besides the routed experts (fixed per batch size)
  };
  std::vector<DecodeGraph> graphs_;  // by T - 1
  int64_t graph_replays_ = 0, graphs_captured_ = 0;
  void* ep_base_ = nullptr;  // expert-side FFN buffers for the rows other ranks send, grown on demand
  int64_t ep_rows_ = 0;
  float* ep_gate_up_ = nullptr;
  bf16* ep_hidden_ = nullptr;
};

}  // namespace shoal::cuda
