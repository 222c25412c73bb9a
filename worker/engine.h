// The single-process forward pass: a batch of sequences of different lengths, each contributing any
// number of new tokens (prefill chunks and decode steps mixed), over a paged KV cache.
//
// Per layer: RMSNorm → q/k/v (+bias) → q/k norm (Qwen3) → RoPE → write KV → paged attention → o_proj →
// residual → RMSNorm → MoE (or dense MLP) → residual. Logits are computed only for the rows asked for.
//
// Expert parallelism: an engine is one rank of a comm::Group. It runs attention and the dense parts
// for its own sequences only (data-parallel attention) and holds only its placement's experts; every
// MoE layer exchanges rows with the other ranks (worker/moe.h). All ranks of a group must call
// Forward the same number of times — a rank with nothing to do passes an empty batch, and a rank
// whose batch is rejected still joins the step's collectives with no tokens before returning the
// error, so one bad request never stalls the group. A single process is a group of one.
//
// Tensor parallelism (parallel.attention_tp = T > 1, model/tensor_parallel_weights.h): the engine is
// one of the T ranks of a replica, which all receive the same batches. It holds a 1/T share of the
// heads (and their KV), of the dense MLPs and shared experts, and of the vocabulary; per layer the
// replica adds its o_proj partial sums (all-reduce), each rank sends a disjoint 1/T of the tokens
// through the expert exchange over the whole group, and the results come back to every rank of the
// replica (all-gather, or one all-reduce together with the shared expert's partial sums); logits are
// gathered by vocabulary range. Sums are reordered against one process, so results agree with it
// within float tolerance, not bit for bit; the ranks of a replica agree with each other exactly.
// Thread-safety: none; one engine loop drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "comm/expert_exchange.h"
#include "comm/group.h"
#include "comm/placement.h"
#include "common/config.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "model/model_config.h"
#include "model/tensor_parallel_weights.h"
#include "model/weights.h"
#include "worker/kv_cache.h"
#include "worker/mla.h"
#include "worker/moe.h"
#include "worker/sequence_table.h"
#include "worker/step_engine.h"

namespace shoal {

class Engine final : public StepEngine {
 public:
  // Takes ownership of the weights. The KV cache is sized from cfg.kv_cache_mib. `group` (not owned,
  // must outlive the engine) is the expert-parallel group; null makes a group of one. The placement
  // defaults to Placement::Balanced(num_experts, group size) (load with Placement::Holds as the filter); the
  // weights must hold every expert it gives this rank. `tp_group` (not owned; null or one rank: no
  // tensor parallelism) is this rank's replica; the weights must then be its share
  // (SliceForTensorParallel with the tp_group's rank and size).
  static StatusOr<std::unique_ptr<Engine>> Create(ModelConfig config, ModelWeights weights, const EngineConfig& cfg,
                                                  comm::Group* group = nullptr,
                                                  const Placement* placement = nullptr,
                                                  comm::Group* tp_group = nullptr);

  const ModelConfig& config() const override { return config_; }
  const ModelWeights& weights() const { return weights_; }
  KvCache& kv_cache() { return kv_; }
  const KvBlockPool& kv_blocks() const override { return kv_; }
  int64_t kv_bytes_per_token() const override {
    return KvCache::BlockBytes(attn_config_, kv_.block_size()) / kv_.block_size() * kv_.groups();
  }
  std::string Describe() const override;
  ThreadPool& pool() { return pool_; }
  comm::Group& group() override { return *group_; }
  int64_t collective_timeout_ms() const override { return collective_timeout_ms_; }
  int max_num_seqs() const override { return seqs_.max_num_seqs(); }
  // engine.max_step_tokens: the scheduler's budget of tokens per Forward (Forward itself takes any).
  int max_step_tokens() const override { return max_step_tokens_; }
  // This rank's place in its tensor-parallel replica ({0, 1} without tensor parallelism).
  TpShard tp_shard() const { return shard_; }
  // Null for a model without MoE layers.
  const comm::ExpertExchange* exchange() const { return exchange_ ? &*exchange_ : nullptr; }

  // ResourceExhausted when engine.max_num_seqs sequences are already live.
  StatusOr<SeqId> NewSequence() override { return seqs_.New(); }
  StatusOr<SeqId> ForkSequence(SeqId parent) override;
  // Frees the sequence's KV blocks. Unknown ids are ignored.
  void ReleaseSequence(SeqId seq) override { seqs_.Release(seq, kv_); }
  int64_t SequenceLength(SeqId seq) const override { return seqs_.Length(seq); }

  // Runs one step; an empty batch is allowed (the rank only takes part in the collectives). On a
  // rejected batch (unknown sequence, too long, KV cache full) nothing was changed. An error from the
  // group (a peer timed out) leaves the sequences of the batch at their old lengths.
  Status Forward(const std::vector<ForwardInput>& batch, std::vector<ForwardOutput>* out) override;

  // Bytes of weight matrices the last Forward read: dense matrices, the experts it used, and the
  // embedding and lm_head rows it touched.
  size_t last_step_weight_bytes() const override { return last_step_weight_bytes_; }
  // Rows this rank ran through each expert so far (all layers), by expert id.
  const std::vector<uint64_t>& expert_rows_total() const override { return moe_ws_.expert_rows_total; }
  const std::vector<uint64_t>& layer_expert_rows() const override { return moe_ws_.layer_expert_rows; }
  const Placement* layer_placement(int layer) const override;
  Status SwitchPlacements(std::vector<std::optional<Placement>> placements, ModelWeights gained) override;
  StepPhases phase_seconds_total() const override {
    StepPhases p = phases_;
    p.exchange = moe_ws_.exchange_seconds;
    return p;
  }

 private:
  Engine(ModelConfig config, ModelWeights weights, const EngineConfig& cfg, int64_t num_blocks, TpShard shard);
  Status Layer(int l, int64_t T);
  // Grouped-query attention of layer l into attn_ (q/k/v projections, norms, RoPE, the paged kernel).
  void Attention(int l, int64_t T, const kernels::PagedKvLayer& kv, int64_t group);
  // The collectives of layers first_layer.. with no tokens (after a rejected batch or a local error,
  // so peers are not left waiting). Nothing for a group of one.
  void JoinLayersWithoutTokens(int first_layer);
  // What a step returns after `st` failed it on this rank with layers [next_layer, L) left: see .cc.
  Status EndStepAfterLocalError(Status st, int next_layer);
  // Tensor parallelism: the replica's ranks check they run the same batch (`bad`: this rank rejected
  // it); the sum of this layer's partial outputs; the MoE block on this rank's share of the tokens;
  // the logits of every vocabulary range.
  Status TpAgreeOnBatch(bool bad, int64_t T);
  Status TpAllReduce(float* values, int64_t n);
  Status TpAllGather(const std::vector<float>& in, std::vector<float>* out);
  Status TpMoe(int l, int64_t T);
  Status TpGatherLogits(int64_t R, std::vector<float>* logits);
  bool tensor_parallel() const { return shard_.size > 1; }

  ModelConfig config_;
  ModelConfig attn_config_;  // the heads this rank runs: config_'s, or its 1/T share under TP
  TpShard shard_;
  IndexRange vocab_;         // the embedding and lm_head rows this rank holds
  comm::Group* tp_ = nullptr;
  ModelWeights weights_;
  ThreadPool pool_;
  KvCache kv_;
  std::vector<float> inv_freq_;
  std::vector<float> unit_norm_;  // [head_dim] ones: the weight of Llama 4's weightless q/k norm
  SequenceTable seqs_;
  int max_step_tokens_;
  int64_t collective_timeout_ms_;

  std::unique_ptr<comm::Group> own_group_;
  comm::Group* group_ = nullptr;
  std::optional<Placement> placement_;
  std::optional<comm::ExpertExchange> exchange_;
  // After a rebalance: each layer's layout ([num_layers], null for dense layers); empty: every MoE
  // layer runs under placement_.
  std::vector<std::shared_ptr<const comm::ExchangeLayout>> layer_layouts_;
  // Layer l's layout for the exchange (null: placement_).
  const comm::ExchangeLayout* LayoutOf(int l) const { return layer_layouts_.empty() ? nullptr : layer_layouts_[l].get(); }

  // Step workspace, [T, ...], reused across steps.
  std::vector<float> x_, h_, q_, k_, v_, attn_, tmp_;
  StepRows rows_;
  std::vector<float> rope_cos_, rope_sin_;  // [T, head_dim / 2], computed once per step
  std::vector<float> temperature_;          // [T] Llama 4 NoPE layers' q scale
  std::vector<const int32_t*> tables_;
  MoeWorkspace moe_ws_;
  MlaWorkspace mla_ws_;
  std::vector<float> ffn_scratch_;
  std::vector<float> tp_out_, tp_gather_;  // TP: this rank's MoE rows and the gathered ones
  size_t last_step_weight_bytes_ = 0;
  StepPhases phases_;  // exchange is moe_ws_'s
};

}  // namespace shoal
