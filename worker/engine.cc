#include "worker/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "model/rope.h"
#include "worker/mla.h"

namespace shoal {

namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::Create(ModelConfig config, ModelWeights weights, const EngineConfig& cfg,
                                                 comm::Group* group, const Placement* placement,
                                                 comm::Group* tp_group) {
  if (cfg.kv_block_size < 1 || cfg.kv_cache_mib < 1 || cfg.threads < 0 || cfg.max_num_seqs < 1 || cfg.max_step_tokens < 1 ||
      cfg.collective_timeout_ms < 1) {
    return InvalidArgument("engine config: kv_cache.block_size, kv_cache.memory_mib, engine.max_num_seqs, "
                           "engine.max_step_tokens and "
                           "parallel.collective_timeout_ms must be positive and engine.threads non-negative");
  }
  TpShard shard;
  if (tp_group != nullptr && tp_group->size() > 1) {
    shard = {tp_group->rank(), tp_group->size()};
    SHOAL_RETURN_IF_ERROR(CheckTensorParallel(config, shard.size));
    // The weights must be this rank's share: catch a whole model handed to a TP rank.
    const ModelConfig local = TensorParallelAttentionConfig(config, shard.size);
    const IndexRange vocab = SplitRange(config.vocab_size, shard);
    if (weights.embed.rows != vocab.size ||
        (!weights.layers.empty() && weights.layers[0].o.cols != (config.mla ? local.num_heads * config.v_head_dim : local.q_dim()))) {
      return InvalidArgument("tensor-parallel rank " + std::to_string(shard.rank) + " of " + std::to_string(shard.size) +
                             ": the weights are not this rank's share (SliceForTensorParallel)");
    }
  }
  const int64_t block_bytes = KvCache::BlockBytes(TensorParallelAttentionConfig(config, shard.size), cfg.kv_block_size);
  const int64_t num_blocks =
      cfg.kv_cache_blocks > 0 ? cfg.kv_cache_blocks : cfg.kv_cache_mib * (int64_t{1} << 20) / block_bytes;
  if (num_blocks < 1) {
    return InvalidArgument((cfg.source.empty() ? std::string("config") : cfg.source) +
                           ": kv_cache.memory_mib (" + std::to_string(cfg.kv_cache_mib) +
                           ") is smaller than one KV block (" + std::to_string(block_bytes) + " bytes)");
  }
  auto engine = std::unique_ptr<Engine>(new Engine(std::move(config), std::move(weights), cfg, num_blocks, shard));
  if (shard.size > 1) engine->tp_ = tp_group;
  if (group == nullptr) {
    engine->own_group_ = comm::MakeSelfGroup();
    group = engine->own_group_.get();
  }
  engine->group_ = group;
  const ModelConfig& c = engine->config_;
  bool has_moe = false;
  for (const LayerWeights& L : engine->weights_.layers) has_moe |= L.is_moe;
  if (has_moe) {
    if (placement != nullptr) {
      engine->placement_ = *placement;
    } else {
      SHOAL_ASSIGN_OR_RETURN(Placement p, Placement::Balanced(c.num_experts, group->size()));
      engine->placement_ = std::move(p);
    }
    if (engine->placement_->num_experts() != c.num_experts) {
      return InvalidArgument("placement is for " + std::to_string(engine->placement_->num_experts()) +
                             " experts but the model has " + std::to_string(c.num_experts));
    }
    for (size_t l = 0; l < engine->weights_.layers.size(); ++l) {
      const LayerWeights& L = engine->weights_.layers[l];
      if (!L.is_moe) continue;
      for (int e : engine->placement_->local_experts(group->rank())) {
        if (!L.experts[e].present()) {
          return InvalidArgument("rank " + std::to_string(group->rank()) + ": layer " + std::to_string(l) +
                                 " expert " + std::to_string(e) + " is placed on this rank but was not loaded");
        }
      }
    }
    // Llama 4 sends each (token, choice) as its own input-scaled row: an exchange of top-1 rows.
    const int rows_per_token = c.router_sigmoid_scales_input ? 1 : c.num_experts_per_tok;
    // A shared window for twice a step's rows per rank: a step routed more unevenly goes by messages.
    comm::ExchangeOptions xo{.shared_memory = cfg.shared_memory_exchange,
                             .shared_rows = 2 * static_cast<int64_t>(cfg.max_step_tokens) * rows_per_token,
                             .startup_timeout_ms = (cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s : 600) * 1000};
    SHOAL_ASSIGN_OR_RETURN(comm::ExpertExchange ex,
                           comm::ExpertExchange::Create(group, &*engine->placement_, c.hidden_size, rows_per_token, xo));
    engine->exchange_.emplace(std::move(ex));
  }
  return engine;
}

Engine::Engine(ModelConfig config, ModelWeights weights, const EngineConfig& cfg, int64_t num_blocks, TpShard shard)
    : config_(std::move(config)),
      attn_config_(TensorParallelAttentionConfig(config_, shard.size)),
      shard_(shard),
      vocab_(SplitRange(config_.vocab_size, shard)),
      weights_(std::move(weights)),
      pool_(cfg.ResolvedThreads()),
      kv_(attn_config_, cfg.kv_block_size, num_blocks),
      inv_freq_(RopeInverseFrequencies(config_)),
      unit_norm_(static_cast<size_t>(config_.head_dim), 1.0f),
      seqs_(cfg.max_num_seqs),
      max_step_tokens_(cfg.max_step_tokens),
      collective_timeout_ms_(cfg.collective_timeout_ms) {}

std::string Engine::Describe() const {
  std::string s = std::to_string(pool_.size()) + " threads, " + kernels::CpuKernelIsa() + " kernels";
  if (tensor_parallel()) {
    s += ", attention TP rank " + std::to_string(shard_.rank) + " of " + std::to_string(shard_.size) + " (" +
         std::to_string(attn_config_.num_heads) + " q / " + std::to_string(attn_config_.num_kv_heads) + " kv heads)";
  }
  if (exchange_ && exchange_->has_shared_window()) s += ", shared-memory expert exchange";
  return s;
}

const Placement* Engine::layer_placement(int layer) const {
  if (!exchange_ || layer < 0 || layer >= config_.num_layers || !weights_.layers[layer].is_moe) return nullptr;
  const comm::ExchangeLayout* layout = LayoutOf(layer);
  return layout != nullptr ? &layout->placement : &*placement_;
}

Status Engine::SwitchPlacements(std::vector<std::optional<Placement>> placements, ModelWeights gained) {
  const ModelConfig& c = config_;
  const int me = group_->rank();
  if (!exchange_) return InvalidArgument("rebalance: the model has no MoE layers");
  if (placements.size() != static_cast<size_t>(c.num_layers)) {
    return InvalidArgument("rebalance: placements for " + std::to_string(placements.size()) + " layers, the model has " +
                           std::to_string(c.num_layers));
  }
  // Check everything before changing anything.
  for (int l = 0; l < c.num_layers; ++l) {
    const std::optional<Placement>& p = placements[l];
    const std::string where = "rebalance: layer " + std::to_string(l);
    if (p.has_value() != weights_.layers[l].is_moe) {
      return InvalidArgument(where + (p ? " is dense but was given a placement" : " is a MoE layer without a placement"));
    }
    if (!p) continue;
    if (p->num_experts() != c.num_experts || p->num_ranks() != group_->size()) {
      return InvalidArgument(where + ": a placement of " + std::to_string(p->num_experts()) + " experts over " +
                             std::to_string(p->num_ranks()) + " ranks; the group has " + std::to_string(group_->size()));
    }
    for (int e : p->local_experts(me)) {
      const bool held = weights_.layers[l].experts[e].present();
      const bool loaded = static_cast<size_t>(l) < gained.layers.size() &&
                          static_cast<size_t>(e) < gained.layers[l].experts.size() && gained.layers[l].experts[e].present();
      if (!held && !loaded) {
        return InvalidArgument(where + " expert " + std::to_string(e) + " is placed on rank " + std::to_string(me) +
                               " but neither held nor loaded");
      }
    }
  }
  std::vector<std::shared_ptr<const comm::ExchangeLayout>> layouts(static_cast<size_t>(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    if (placements[l]) layouts[l] = std::make_shared<const comm::ExchangeLayout>(std::move(*placements[l]));
  }
  SHOAL_RETURN_IF_ERROR(exchange_->Use(nullptr));  // the old layouts go away below
  AdoptExperts(&weights_, std::move(gained));
  for (int l = 0; l < c.num_layers; ++l) {
    if (!layouts[l]) continue;
    for (int e = 0; e < c.num_experts; ++e) {
      if (!layouts[l]->placement.Holds(me, e)) ReleaseExpert(&weights_, l, e);
    }
  }
  layer_layouts_ = std::move(layouts);
  return Status::Ok();
}

void Engine::JoinLayersWithoutTokens(int first_layer) {
  if (group_->size() == 1) return;
  for (int l = first_layer; l < config_.num_layers; ++l) {
    // Errors here (a peer timed out as well) add nothing to the error being returned.
    if (!Layer(l, 0).ok()) return;
  }
}

StatusOr<SeqId> Engine::ForkSequence(SeqId parent) {
  std::vector<std::pair<int32_t, int32_t>> copies;
  SHOAL_ASSIGN_OR_RETURN(SeqId child, seqs_.Fork(parent, kv_, &copies));
  for (const auto& [from, to] : copies) kv_.CopyBlock(from, to);
  return child;
}

Status Engine::EndStepAfterLocalError(Status st, int next_layer) {
  // After a group failure there is nothing left to join.
  if (comm::IsGroupFailure(st)) return st;
  if (tensor_parallel()) {
    // The replica's ranks run the agreed tokens through collectives sized by them: one rank cannot
    // join the rest of the step with none (its peers would wait on, or mismatch, every collective).
    // The step cannot finish together, so this is the group's failure: the peers time out, and the
    // coordinator hears this rank's reason first.
    return Unavailable("tensor-parallel rank " + std::to_string(shard_.rank) +
                       " cannot finish the step with its replica: " + st.ToString());
  }
  // A local failure: still join the remaining layers' exchanges with no tokens, so the peers finish.
  JoinLayersWithoutTokens(next_layer);
  return st;
}

Status Engine::Forward(const std::vector<ForwardInput>& batch, std::vector<ForwardOutput>* out) {
  const ModelConfig& c = config_;
  // Validate everything before changing any state.
  int64_t T = 0;
  Status st = seqs_.Validate(batch, c, &T);
  // Reserve comes before the agreement (undone if a peer failed), so that a rank of a TP replica that
  // cannot hold the batch in its KV cache makes all of them reject it.
  std::vector<size_t> reserved_from;
  if (st.ok()) st = seqs_.Reserve(batch, kv_, &reserved_from);
  if (tensor_parallel()) {
    // Before the first collective, so a batch one rank of the replica rejects is rejected by all, and
    // all of them join the layers with no tokens together.
    if (Status agreed = TpAgreeOnBatch(!st.ok(), st.ok() ? T : 0); !agreed.ok()) {
      if (st.ok()) seqs_.Unreserve(batch, reserved_from, kv_);
      if (comm::IsGroupFailure(agreed)) return agreed;
      if (st.ok()) st = agreed;
    }
  }
  if (!st.ok()) {
    JoinLayersWithoutTokens(0);
    return st;
  }

  const int64_t H = c.hidden_size;
  seqs_.BuildRows(batch, kv_.block_size(), &rows_);
  x_.resize(static_cast<size_t>(T * H));
  const int groups = kv_.groups();
  tables_.resize(static_cast<size_t>(groups * T));
  for (int64_t row = 0; row < T; ++row) {
    const KvTables& tables = seqs_.Tables(batch[rows_.input[row]].seq);
    for (int g = 0; g < groups; ++g) tables_[g * T + row] = tables[g].data();
    const int64_t token = rows_.tokens[row] - vocab_.begin;  // this rank's vocabulary range under TP
    if (token >= 0 && token < vocab_.size) {
      kernels::GatherRow(weights_.embed, token, x_.data() + row * H);
    } else {
      std::fill(x_.begin() + row * H, x_.begin() + (row + 1) * H, 0.0f);
    }
  }
  if (tensor_parallel()) {
    // One rank of the replica holds each token's row; the others add zeros (exact).
    if (Status st = TpAllReduce(x_.data(), T * H); !st.ok()) return EndStepAfterLocalError(st, 0);
  }

  const int half = c.head_dim / 2;
  rope_cos_.resize(static_cast<size_t>(T * half));
  rope_sin_.resize(static_cast<size_t>(T * half));
  kernels::RopeTable(rows_.positions.data(), T, inv_freq_.data(), half, static_cast<float>(c.rope.attention_factor),
                     rope_cos_.data(), rope_sin_.data());
  if (c.attn_temperature_tuning) {
    // Llama 4's NoPE layers: q scaled by log1p(floor((pos + 1) / floor_scale)) · attn_scale + 1, in f32
    // as transformers computes it.
    temperature_.resize(static_cast<size_t>(T));
    const float floor_scale = static_cast<float>(c.floor_scale), attn_scale = static_cast<float>(c.attn_scale);
    for (int64_t t = 0; t < T; ++t) {
      const float p = static_cast<float>(rows_.positions[t]) + 1.0f;
      temperature_[t] = std::log1p(std::floor(p / floor_scale)) * attn_scale + 1.0f;
    }
  }

  size_t bytes = T * static_cast<size_t>(H) * DTypeSize(weights_.embed.dtype);
  for (int l = 0; l < c.num_layers; ++l) {
    if (Status st = Layer(l, T); !st.ok()) return EndStepAfterLocalError(st, l + 1);
    const LayerWeights& L = weights_.layers[l];
    bytes += L.q.nbytes() + L.k.nbytes() + L.v.nbytes() + L.o.nbytes() + L.q_a.nbytes() + L.q_b.nbytes() +
             L.kv_a.nbytes() + L.kv_b.nbytes();
    if (L.is_moe) {
      bytes += L.router.nbytes() + L.shared_expert.nbytes() + L.shared_expert_gate.nbytes();
      for (int e = 0; e < c.num_experts; ++e) bytes += moe_ws_.expert_used[e] ? L.experts[e].nbytes() : 0;
    } else {
      bytes += L.dense_mlp.nbytes();
    }
  }

  // Final norm + lm_head on the rows that want logits.
  const std::vector<int64_t>& logit_rows = rows_.logit_rows;
  const int64_t R = static_cast<int64_t>(logit_rows.size());
  h_.resize(static_cast<size_t>(R * H));
  for (int64_t r = 0; r < R; ++r) {
    kernels::RmsNorm(x_.data() + logit_rows[r] * H, 1, H, weights_.final_norm.data(), static_cast<float>(c.rms_norm_eps),
                     h_.data() + r * H);
  }
  std::vector<float> logits(static_cast<size_t>(R * c.vocab_size));
  if (tensor_parallel()) {
    if (Status st = TpGatherLogits(R, &logits); !st.ok()) return EndStepAfterLocalError(st, c.num_layers);
  } else {
    kernels::MatMul(h_.data(), R, weights_.lm_head, logits.data(), pool_);
  }
  bytes += weights_.lm_head.nbytes();
  last_step_weight_bytes_ = bytes;

  out->clear();
  out->resize(batch.size());
  int64_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t rows = batch[b].all_logits ? static_cast<int64_t>(batch[b].tokens.size()) : 1;
    (*out)[b].logits.assign(logits.begin() + r * c.vocab_size, logits.begin() + (r + rows) * c.vocab_size);
    r += rows;
  }
  seqs_.Advance(batch, kv_);
  return Status::Ok();
}

Status Engine::Layer(int l, int64_t T) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[l];
  const int64_t H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  h_.resize(static_cast<size_t>(T * H));
  tmp_.resize(static_cast<size_t>(T * H));

  // Attention, over the layer's group's block tables and slots (worker/kv_cache.h).
  const auto t_attn = std::chrono::steady_clock::now();
  kernels::RmsNorm(x_.data(), T, H, L.input_norm.data(), eps, h_.data());
  const kernels::PagedKvLayer kv = kv_.Layer(l);
  const int64_t group = kv_.layout().layer_group[l];
  if (c.mla) {
    attn_.resize(static_cast<size_t>(T * attn_config_.num_heads * c.v_head_dim));
    MlaAttention(attn_config_, L, h_.data(), T, rows_.positions.data(), rope_cos_.data(), rope_sin_.data(), kv,
                 rows_.slots.data() + group * T, tables_.data() + group * T, mla_ws_, attn_.data(), pool_);
  } else {
    Attention(l, T, kv, group);
  }
  kernels::MatMul(attn_.data(), T, L.o, tmp_.data(), pool_);
  phases_.attention += Since(t_attn);
  if (tensor_parallel()) SHOAL_RETURN_IF_ERROR(TpAllReduce(tmp_.data(), T * H).WithContext("layer " + std::to_string(l)));
  if (!L.o_bias.empty()) kernels::AddBias(tmp_.data(), T, H, L.o_bias.data());
  for (int64_t i = 0; i < T * H; ++i) x_[i] += tmp_[i];

  // MoE or dense MLP; its time less the exchange's and the TP collectives' inside it.
  kernels::RmsNorm(x_.data(), T, H, L.post_attn_norm.data(), eps, h_.data());
  const auto t_mlp = std::chrono::steady_clock::now();
  const double waits_before = moe_ws_.exchange_seconds + phases_.tp;
  if (L.is_moe && tensor_parallel()) {
    SHOAL_RETURN_IF_ERROR(TpMoe(l, T).WithContext("layer " + std::to_string(l)));
  } else if (L.is_moe) {
    SHOAL_RETURN_IF_ERROR(exchange_->Use(LayoutOf(l)));
    SHOAL_RETURN_IF_ERROR(RunMoeLayer(c, l, L, h_.data(), T, tmp_.data(), moe_ws_, *exchange_, collective_timeout_ms_, pool_)
                              .WithContext("layer " + std::to_string(l)));
  } else {
    ffn_scratch_.resize(static_cast<size_t>(2 * T * c.intermediate_size));
    kernels::SiluGatedFfn(h_.data(), T, L.dense_mlp.gate, L.dense_mlp.up, L.dense_mlp.down, ffn_scratch_.data(),
                          tmp_.data(), pool_);
    if (tensor_parallel()) SHOAL_RETURN_IF_ERROR(TpAllReduce(tmp_.data(), T * H).WithContext("layer " + std::to_string(l)));
  }
  phases_.mlp += Since(t_mlp) - (moe_ws_.exchange_seconds + phases_.tp - waits_before);
  for (int64_t i = 0; i < T * H; ++i) x_[i] += tmp_[i];
  return Status::Ok();
}

void Engine::Attention(int l, int64_t T, const kernels::PagedKvLayer& kv, int64_t group) {
  const ModelConfig& c = attn_config_;  // this rank's heads
  const LayerWeights& L = weights_.layers[l];
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);
  q_.resize(static_cast<size_t>(T * Q));
  k_.resize(static_cast<size_t>(T * KV));
  v_.resize(static_cast<size_t>(T * KV));
  attn_.resize(static_cast<size_t>(T * Q));
  const kernels::MatMulJob qkv[] = {{h_.data(), T, &L.q, q_.data()}, {h_.data(), T, &L.k, k_.data()},
                                     {h_.data(), T, &L.v, v_.data()}};
  kernels::MatMulBatch(qkv, pool_);
  if (!L.q_bias.empty()) {
    kernels::AddBias(q_.data(), T, Q, L.q_bias.data());
    kernels::AddBias(k_.data(), T, KV, L.k_bias.data());
    kernels::AddBias(v_.data(), T, KV, L.v_bias.data());
  }
  if (c.qk_norm) {
    kernels::RmsNorm(q_.data(), T * c.num_heads, c.head_dim, L.q_norm.data(), eps, q_.data());
    kernels::RmsNorm(k_.data(), T * c.num_kv_heads, c.head_dim, L.k_norm.data(), eps, k_.data());
  }
  if (c.LayerUsesRope(l)) {
    const auto rope = c.rope_interleaved ? kernels::ApplyRopeInterleaved : kernels::ApplyRope;
    rope(q_.data(), T, c.num_heads, c.head_dim, rope_cos_.data(), rope_sin_.data());
    rope(k_.data(), T, c.num_kv_heads, c.head_dim, rope_cos_.data(), rope_sin_.data());
    if (c.qk_l2_norm) {  // Llama 4: weightless, after RoPE
      kernels::RmsNorm(q_.data(), T * c.num_heads, c.head_dim, unit_norm_.data(), eps, q_.data());
      kernels::RmsNorm(k_.data(), T * c.num_kv_heads, c.head_dim, unit_norm_.data(), eps, k_.data());
    }
  } else if (c.attn_temperature_tuning) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < Q; ++i) q_[t * Q + i] *= temperature_[t];
    }
  }
  kernels::WriteKv(kv, k_.data(), v_.data(), T, rows_.slots.data() + group * T);
  kernels::PagedAttention(q_.data(), T, c.num_heads, rows_.positions.data(), tables_.data() + group * T, kv,
                          1.0f / std::sqrt(static_cast<float>(c.head_dim)), c.sliding_window, attn_.data(), pool_,
                          c.LayerChunk(l));
}

Status Engine::TpAgreeOnBatch(bool bad, int64_t T) {
  // max of {bad, T, -T}: any rank rejected, and the largest and smallest token counts.
  std::vector<int64_t> v = {bad ? 1 : 0, T, -T};
  SHOAL_RETURN_IF_ERROR(tp_->AllReduceMax(v, Deadline::AfterMs(collective_timeout_ms_)));
  if (v[0] > 0 && !bad) {
    return InvalidArgument("tensor-parallel rank " + std::to_string(shard_.rank) +
                           ": another rank of the replica rejected this batch (its error says why)");
  }
  if (v[1] != -v[2]) {
    return InvalidArgument("tensor-parallel rank " + std::to_string(shard_.rank) + ": the replica's ranks were given " +
                           "different batches (" + std::to_string(-v[2]) + " to " + std::to_string(v[1]) +
                           " tokens); every rank of a replica must run the same batch");
  }
  return Status::Ok();
}

Status Engine::TpAllReduce(float* values, int64_t n) {
  const auto t0 = std::chrono::steady_clock::now();
  Status st = tp_->AllReduceSumF32(std::span<float>(values, static_cast<size_t>(n)), Deadline::AfterMs(collective_timeout_ms_));
  phases_.tp += Since(t0);
  return st;
}

Status Engine::TpAllGather(const std::vector<float>& in, std::vector<float>* out) {
  const auto t0 = std::chrono::steady_clock::now();
  Status st = tp_->AllGather(std::as_bytes(std::span<const float>(in)), std::as_writable_bytes(std::span<float>(*out)),
                             Deadline::AfterMs(collective_timeout_ms_));
  phases_.tp += Since(t0);
  return st;
}

// The replica's ranks hold the same T tokens after attention: each sends its own chunk of them
// (SplitRange) through the exchange over the whole group, so no token travels T times. The chunks
// come back to every rank by an all-gather — or, when the layer has a shared expert (split like a
// dense MLP, run over all T tokens), by the one all-reduce that also adds its partial sums: a rank
// adds its MoE rows into its shared partial sums and zeros elsewhere are exact.
Status Engine::TpMoe(int l, int64_t T) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[l];
  const int64_t H = c.hidden_size;
  const int tp = shard_.size;
  const int64_t chunk = (T + tp - 1) / tp;
  const IndexRange mine = SplitRange(T, shard_);
  tp_out_.assign(static_cast<size_t>(chunk * H), 0.0f);
  SHOAL_RETURN_IF_ERROR(exchange_->Use(LayoutOf(l)));
  SHOAL_RETURN_IF_ERROR(RunMoeLayer(c, l, L, h_.data() + mine.begin * H, mine.size, tp_out_.data(), moe_ws_, *exchange_,
                                    collective_timeout_ms_, pool_, /*add_shared_expert=*/false));
  if (L.shared_expert.present()) {
    RunSharedExpert(c, L, h_.data(), T, tmp_.data(), moe_ws_, pool_);
    for (int64_t i = 0; i < mine.size * H; ++i) tmp_[mine.begin * H + i] += tp_out_[i];
    return TpAllReduce(tmp_.data(), T * H);
  }
  tp_gather_.resize(static_cast<size_t>(tp * chunk * H));
  SHOAL_RETURN_IF_ERROR(TpAllGather(tp_out_, &tp_gather_));
  // Rank r's chunk starts at row r·chunk: the gathered rows are the tokens in order.
  std::copy(tp_gather_.begin(), tp_gather_.begin() + T * H, tmp_.begin());
  return Status::Ok();
}

// Each rank computes the logits of its vocabulary range (ceil(V/T) columns, the last range maybe
// shorter and padded); one all-gather gives every rank all of them.
Status Engine::TpGatherLogits(int64_t R, std::vector<float>* logits) {
  const int64_t V = config_.vocab_size;
  const int tp = shard_.size;
  const int64_t chunk = (V + tp - 1) / tp;
  std::vector<float> local(static_cast<size_t>(R * vocab_.size));
  if (R > 0 && vocab_.size > 0) kernels::MatMul(h_.data(), R, weights_.lm_head, local.data(), pool_);
  tp_out_.assign(static_cast<size_t>(R * chunk), 0.0f);
  for (int64_t r = 0; r < R; ++r) {
    std::copy(local.begin() + r * vocab_.size, local.begin() + (r + 1) * vocab_.size, tp_out_.begin() + r * chunk);
  }
  tp_gather_.resize(static_cast<size_t>(tp * R * chunk));
  SHOAL_RETURN_IF_ERROR(TpAllGather(tp_out_, &tp_gather_).WithContext("logits"));
  for (int p = 0; p < tp; ++p) {
    const IndexRange range = SplitRange(V, {p, tp});
    for (int64_t r = 0; r < R; ++r) {
      const float* src = tp_gather_.data() + (p * R + r) * chunk;
      std::copy(src, src + range.size, logits->data() + r * V + range.begin);
    }
  }
  return Status::Ok();
}

}  // namespace shoal
