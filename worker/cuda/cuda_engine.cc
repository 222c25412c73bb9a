#include "worker/cuda/cuda_engine.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "model/rope.h"
#include "worker/memory_budget.h"

namespace shoal::cuda {

// Device buffers of one step, sized for up to `tokens` rows (logit rows and sequences never exceed
// the tokens of a step) and grown by doubling when a larger step comes. One allocation.
struct CudaEngine::Workspace {
  int64_t tokens = 0;
  void* base = nullptr;
  float *x = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *router_logits = nullptr, *topk_weights = nullptr;
  float *gate_up = nullptr, *expert_out = nullptr, *gate_logit = nullptr, *cos = nullptr, *sin = nullptr;
  // [logit_capacity, V]: sized by the rows that want logits (one per sequence in a decode step), not
  // by the step's tokens — at a 150k vocabulary, T × V would be gigabytes for a long prefill chunk.
  float* logits = nullptr;
  int64_t logit_capacity = 0;
  bf16 *normed = nullptr, *attn = nullptr, *expert_in = nullptr, *hidden = nullptr, *logit_in = nullptr;
  int32_t *topk_ids = nullptr, *row_of = nullptr, *row_token = nullptr, *tokens_dev = nullptr, *positions = nullptr;
  int32_t *token_seq = nullptr, *tables = nullptr, *logit_rows = nullptr, *argmax = nullptr;
  int64_t *offsets = nullptr, *slots = nullptr;
  int64_t* layer_offsets = nullptr;  // [layers][E + 1]: the device-MoE path's plan offsets, kept per layer
  float* attn_partial = nullptr;     // split attention's partials on small steps
  void* plan_scratch = nullptr;
  std::vector<int32_t> host_tables, host_seq, host_logit_rows, host_argmax;

  ~Workspace() {
    if (base) cudaFree(base);
    if (logits) cudaFree(logits);
  }
};

namespace {

template <class T>
T* Carve(char* base, int64_t* offset, int64_t count) {
  *offset = (*offset + 255) / 256 * 256;
  T* p = base ? reinterpret_cast<T*>(base + *offset) : nullptr;
  *offset += std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(T));
  return p;
}

}  // namespace

CudaEngine::CudaEngine(ModelConfig config, const EngineConfig& cfg, int64_t num_blocks, int device)
    : config_(std::move(config)),
      device_(device),
      max_step_tokens_(cfg.max_step_tokens),
      experimental_(cfg.experimental_gpu_kernels),
      collective_timeout_ms_(cfg.collective_timeout_ms),
      group_(comm::MakeSelfGroup()),
      kv_memory_fraction_(cfg.kv_memory_fraction),
      blocks_(cfg.kv_block_size, num_blocks),
      seqs_(cfg.max_num_seqs) {}

std::string CudaEngine::Describe() const {
  cudaDeviceProp prop{};
  const bool known = cudaGetDeviceProperties(&prop, device_) == cudaSuccess;
  return "CUDA device " + std::to_string(device_) + (known ? std::string(" (") + prop.name + ")" : std::string()) +
         ", " + std::to_string(weights_.matrix_bytes() / 1000000) + " MB of bf16 weights";
}

CudaEngine::~CudaEngine() {
  ClearGraphs();
  if (expert_ptrs_) cudaFree(expert_ptrs_);
  if (layer_offsets_host_) cudaFreeHost(layer_offsets_host_);
  ws_.reset();
  gemm_.reset();
  if (kv_base_) cudaFree(kv_base_);
  if (inv_freq_) cudaFree(inv_freq_);
  exchange_.reset();
  if (ep_base_) cudaFree(ep_base_);
  if (stream_) cudaStreamDestroy(stream_);
}

namespace {

StatusOr<int64_t> KvBlocks(const ModelConfig& c, const EngineConfig& cfg) {
  if (cfg.kv_block_size < 1 || cfg.kv_cache_mib < 1 || cfg.max_num_seqs < 1 || cfg.max_step_tokens < 1 ||
      cfg.collective_timeout_ms < 1) {
    return InvalidArgument("engine config: kv_cache.block_size, kv_cache.memory_mib, engine.max_num_seqs, "
                           "engine.max_step_tokens and parallel.collective_timeout_ms must be positive");
  }
  const int64_t block_bytes = int64_t{2} * c.num_layers * cfg.kv_block_size * c.kv_dim() * 2;  // K+V, bf16
  // With kv_cache.memory_fraction the pool is sized again in Init, once the weights are on the device.
  const int64_t blocks = cfg.kv_memory_fraction > 0 ? 1
                         : cfg.kv_cache_blocks > 0  ? cfg.kv_cache_blocks
                                                    : cfg.kv_cache_mib * (int64_t{1} << 20) / block_bytes;
  if (blocks < 1) {
    return InvalidArgument("kv_cache.memory_mib (" + std::to_string(cfg.kv_cache_mib) +
                           ") is smaller than one KV block (" + std::to_string(block_bytes) + " bytes)");
  }
  return blocks;
}

Status CheckDevice(int device) {
  std::string why;
  const int n = CudaDeviceCount(&why);
  if (n == 0) return Unavailable("no CUDA device: " + why);
  if (device < 0 || device >= n) {
    return InvalidArgument("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " visible)");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<CudaEngine>> CudaEngine::Create(ModelConfig config, const ModelWeights& weights,
                                                         const EngineConfig& cfg, int device,
                                                         std::unique_ptr<comm::Group> group,
                                                         const Placement* placement) {
  if (cfg.dtype != "auto" && cfg.dtype != "bfloat16" && cfg.dtype != "bf16") {
    return InvalidArgument("engine.dtype " + cfg.dtype + ": the CUDA engine holds weights and computes in bfloat16 "
                           "(set auto or bfloat16)");
  }
  if (config.fp8_weights) {
    return Unimplemented("FP8 checkpoints are not supported by the CUDA engine yet; serve them with engine.device: cpu");
  }
  if (config.arch == Architecture::kLlama4 || config.arch == Architecture::kDeepseekV3) {
    // Llama 4's iRoPE and input-scaled router, DeepSeek-V3's MLA and grouped router: CPU kernels only
    // so far.
    return Unimplemented(std::string(ArchitectureName(config.arch)) +
                         " is not supported by the CUDA engine yet; serve it with engine.device: cpu");
  }
  SHOAL_RETURN_IF_ERROR(CheckDevice(device));
  SHOAL_ASSIGN_OR_RETURN(int64_t blocks, KvBlocks(config, cfg));
  const int ranks = group ? group->size() : 1, rank = group ? group->rank() : 0;
  std::optional<Placement> place;
  if (placement != nullptr) {
    place = *placement;
  } else {
    SHOAL_ASSIGN_OR_RETURN(Placement p, Placement::Balanced(config.num_experts, ranks));
    place = std::move(p);
  }
  if (place->num_ranks() != ranks || place->num_experts() != config.num_experts) {
    return InvalidArgument("placement is for " + std::to_string(place->num_experts()) + " experts on " +
                           std::to_string(place->num_ranks()) + " ranks; the model has " +
                           std::to_string(config.num_experts) + " experts and the group " + std::to_string(ranks) +
                           " ranks");
  }
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    if (!weights.layers[l].is_moe) continue;
    for (int e : place->local_experts(rank)) {
      if (!weights.layers[l].experts[e].present()) {
        return InvalidArgument("rank " + std::to_string(rank) + ": layer " + std::to_string(l) + " expert " +
                               std::to_string(e) + " is placed on this rank but was not loaded");
      }
    }
  }
  auto engine = std::unique_ptr<CudaEngine>(new CudaEngine(std::move(config), cfg, blocks, device));
  // A group given by the caller means the NCCL data plane, even at one rank (the tests run the
  // exchange path on one GPU that way); without one the experts run in place.
  if (group) {
    engine->group_ = std::move(group);
    engine->placement_ = std::move(place);
  }
  SHOAL_RETURN_IF_ERROR(engine->Init(&weights, 0));
  return engine;
}

StatusOr<std::unique_ptr<CudaEngine>> CudaEngine::CreateSynthetic(ModelConfig config, const EngineConfig& cfg,
                                                                  int device, uint64_t seed) {
  SHOAL_RETURN_IF_ERROR(CheckDevice(device));
  SHOAL_ASSIGN_OR_RETURN(int64_t blocks, KvBlocks(config, cfg));
  auto engine = std::unique_ptr<CudaEngine>(new CudaEngine(std::move(config), cfg, blocks, device));
  SHOAL_RETURN_IF_ERROR(engine->Init(nullptr, seed));
  return engine;
}

Status CudaEngine::Init(const ModelWeights* host, uint64_t seed) {
  const ModelConfig& c = config_;
  SHOAL_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device_));
  SHOAL_ASSIGN_OR_RETURN(gemm_, Gemm::Create(stream_));
  if (host) {
    SHOAL_ASSIGN_OR_RETURN(weights_, DeviceWeights::Upload(c, *host, stream_));
  } else {
    SHOAL_ASSIGN_OR_RETURN(weights_, DeviceWeights::Synthetic(c, seed, stream_));
  }
  if (kv_memory_fraction_ > 0) {
    // kv_cache.memory_fraction, like vLLM's --gpu-memory-utilization: weights (now uploaded), the CUDA
    // context and cuBLAS's workspace are what the device already holds; an activation reserve for the
    // largest step is kept back; the KV cache takes the rest of the fraction.
    size_t free_bytes = 0, total_bytes = 0;
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int64_t block_bytes = int64_t{2} * c.num_layers * blocks_.block_size() * c.kv_dim() * 2;
    const int64_t reserve = (int64_t{512} << 20) + int64_t{max_step_tokens_} * (16 * c.hidden_size + 2 * c.vocab_size) * 4;
    const int64_t used = static_cast<int64_t>(total_bytes - free_bytes) + reserve;
    SHOAL_ASSIGN_OR_RETURN(int64_t kv_bytes, KvBytesForFraction(kv_memory_fraction_, static_cast<int64_t>(total_bytes),
                                                                used, block_bytes, "GPU " + std::to_string(device_)));
    blocks_ = KvBlockPool(blocks_.block_size(), kv_bytes / block_bytes);
  }
  // KV cache: per layer K then V, each [blocks · block_size, kv_heads, head_dim] bf16.
  const int64_t per = blocks_.num_blocks() * blocks_.block_size() * c.kv_dim();
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&kv_base_, static_cast<size_t>(2 * c.num_layers * per) * sizeof(bf16)));
  for (int l = 0; l < c.num_layers; ++l) {
    bf16* k = static_cast<bf16*>(kv_base_) + 2 * l * per;
    kv_layers_.push_back(PagedKvLayer{k, k + per, blocks_.block_size(), c.num_kv_heads, c.head_dim});
  }
  const std::vector<float> inv_freq = RopeInverseFrequencies(c);
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&inv_freq_), inv_freq.size() * sizeof(float)));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpy(inv_freq_, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice));
  // cudaMemcpy from pageable memory runs on the legacy stream and may return before the DMA lands;
  // stream_ is non-blocking, so nothing else orders RopeTable's read of inv_freq_ after it.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  max_blocks_per_seq_ = (c.max_position_embeddings + blocks_.block_size() - 1) / blocks_.block_size();
  host_offsets_.assign(c.num_experts + 1, 0);
  expert_rows_total_.assign(c.num_experts, 0);
  if (placement_) {
    SHOAL_ASSIGN_OR_RETURN(exchange_, comm::DeviceExpertExchange::Create(group_.get(), &*placement_, c.hidden_size,
                                                                          c.num_experts_per_tok, stream_));
  }
  layer_expert_rows_.assign(static_cast<size_t>(c.num_layers) * c.num_experts, 0);  // by expert id
  SHOAL_RETURN_IF_ERROR(InitDeviceMoe());
  ws_ = std::make_unique<Workspace>();
  return EnsureWorkspace(64);
}

// The device-offset MoE kernels need every expert of every MoE layer here (a group of one), widths
// that are multiples of 8 and 16-byte aligned weights (DeviceWeights aligns every tensor to 256).
Status CudaEngine::InitDeviceMoe() {
  const ModelConfig& c = config_;
  const int E = c.num_experts;
  // The small-step path also runs every dense projection with SkinnyLinear: every input width (hidden,
  // q_dim, the dense and shared FFNs' intermediate sizes) must be a multiple of 8.
  bool ok = !exchange_ && E > 0 && c.hidden_size % 8 == 0 && c.moe_intermediate_size % 8 == 0 &&
            c.q_dim() % 8 == 0 && c.intermediate_size % 8 == 0 && c.shared_expert_intermediate_size % 8 == 0;
  std::vector<const bf16*> ptrs(static_cast<size_t>(c.num_layers) * 2 * std::max(E, 1), nullptr);
  bool any_moe = false;
  for (int l = 0; ok && l < c.num_layers; ++l) {
    const DeviceLayer& L = weights_.layers[l];
    if (!L.is_moe) continue;
    any_moe = true;
    for (int e = 0; e < E && ok; ++e) {
      const bf16* gu = L.expert_gate_up[e];
      const bf16* dn = L.expert_down[e];
      ok = gu != nullptr && dn != nullptr && reinterpret_cast<uintptr_t>(gu) % 16 == 0 &&
           reinterpret_cast<uintptr_t>(dn) % 16 == 0;
      ptrs[(static_cast<size_t>(l) * 2) * E + e] = gu;
      ptrs[(static_cast<size_t>(l) * 2 + 1) * E + e] = dn;
    }
  }
  device_moe_ = ok && any_moe;
  if (!device_moe_) return Status::Ok();
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&expert_ptrs_), ptrs.size() * sizeof(bf16*)));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(expert_ptrs_, ptrs.data(), ptrs.size() * sizeof(bf16*),
                                             cudaMemcpyHostToDevice, stream_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&layer_offsets_host_),
                                            static_cast<size_t>(c.num_layers) * (E + 1) * sizeof(int64_t)));
  // The upload reads a host vector that goes away on return.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return Status::Ok();
}

Status CudaEngine::EnsureWorkspace(int64_t tokens) {
  if (tokens <= ws_->tokens) return Status::Ok();
  int64_t T = std::max<int64_t>(ws_->tokens, 64);
  while (T < tokens) T *= 2;
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), E = std::max(c.num_experts, 1);
  const int64_t K = std::max(c.num_experts_per_tok, 1), half = c.head_dim / 2;
  // The FFN buffers serve the routed experts (T·K rows of I), the shared expert and dense layers (T rows).
  const int64_t I = std::max<int64_t>({int64_t{c.moe_intermediate_size} * K, c.intermediate_size,
                                       c.shared_expert_intermediate_size});
  const int64_t S = T, B = max_blocks_per_seq_;
  Workspace& w = *ws_;
  if (w.base) {
    ClearGraphs();  // they hold the old buffers' addresses
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    SHOAL_CUDA_RETURN_IF_ERROR(cudaFree(w.base));
    w.base = nullptr;
    w.tokens = 0;
  }
  for (int pass = 0; pass < 2; ++pass) {
    char* base = static_cast<char*>(w.base);
    int64_t off = 0;
    w.x = Carve<float>(base, &off, T * H);
    w.normed = Carve<bf16>(base, &off, T * H);
    w.q = Carve<float>(base, &off, T * Q);
    w.k = Carve<float>(base, &off, T * KV);
    w.v = Carve<float>(base, &off, T * KV);
    w.attn = Carve<bf16>(base, &off, T * Q);
    w.router_logits = Carve<float>(base, &off, T * E);
    w.topk_ids = Carve<int32_t>(base, &off, T * K);
    w.topk_weights = Carve<float>(base, &off, T * K);
    w.offsets = Carve<int64_t>(base, &off, E + 1);
    w.row_of = Carve<int32_t>(base, &off, T * K);
    w.row_token = Carve<int32_t>(base, &off, T * K);
    w.plan_scratch = Carve<char>(base, &off, MoePlanScratchBytes(static_cast<int>(E)));
    w.layer_offsets = Carve<int64_t>(base, &off, int64_t{c.num_layers} * (E + 1));
    w.attn_partial = Carve<float>(base, &off, PagedAttentionScratchFloats(kDeviceMoeMaxTokens * c.num_heads,
                                                                          kMaxAttentionSplits, c.head_dim));
    w.expert_in = Carve<bf16>(base, &off, T * K * H);
    w.gate_up = Carve<float>(base, &off, 2 * T * I);
    w.hidden = Carve<bf16>(base, &off, T * I);
    w.expert_out = Carve<float>(base, &off, T * K * H);
    w.gate_logit = Carve<float>(base, &off, T);
    w.cos = Carve<float>(base, &off, T * half);
    w.sin = Carve<float>(base, &off, T * half);
    w.tokens_dev = Carve<int32_t>(base, &off, T);
    w.positions = Carve<int32_t>(base, &off, T);
    w.token_seq = Carve<int32_t>(base, &off, T);
    w.slots = Carve<int64_t>(base, &off, T);
    w.tables = Carve<int32_t>(base, &off, S * B);
    w.logit_rows = Carve<int32_t>(base, &off, T);
    w.logit_in = Carve<bf16>(base, &off, T * H);
    w.argmax = Carve<int32_t>(base, &off, T);
    if (pass == 0) SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&w.base, static_cast<size_t>(off)));
  }
  w.tokens = T;
  return Status::Ok();
}

Status CudaEngine::Step(const std::vector<ForwardInput>& batch, int64_t* logit_rows) {
  const ModelConfig& c = config_;
  int64_t T = 0;
  Status valid = seqs_.Validate(batch, c, &T);
  if (valid.ok()) valid = seqs_.Reserve(batch, blocks_);
  if (!valid.ok()) {
    JoinLayersWithoutTokens();
    return valid;
  }
  seqs_.BuildRows(batch, blocks_.block_size(), &rows_);
  const int64_t R = static_cast<int64_t>(rows_.logit_rows.size());
  *logit_rows = R;
  Status sized = EnsureWorkspace(std::max<int64_t>(T, 1));
  if (sized.ok()) sized = EnsureLogits(R);
  if (!sized.ok()) {
    // The peers still expect every exchange; T = 0 layers never touch the (now null) workspace.
    JoinLayersWithoutTokens();
    return sized;
  }
  Workspace& w = *ws_;
  const int64_t S = static_cast<int64_t>(batch.size()), B = max_blocks_per_seq_;
  // Padding past a sequence's blocks is -1, not 0 (a real block): attention turns a read of it into
  // NaN outputs instead of another sequence's keys (kernels/cuda/cuda_kernels.h PagedAttention).
  w.host_tables.assign(static_cast<size_t>(S * B), -1);
  for (int64_t s = 0; s < S; ++s) {
    const std::vector<int32_t>& blocks = seqs_.Blocks(batch[s].seq);
    std::copy(blocks.begin(), blocks.end(), w.host_tables.begin() + s * B);
  }
  w.host_logit_rows.assign(rows_.logit_rows.begin(), rows_.logit_rows.end());
  step_weight_bytes_ = 0;  // an empty batch reads nothing (not the previous step's count)
  step_device_moe_ = false;
  // A rank with no tokens still runs its layers when it has peers: they expect it in every exchange.
  if (T == 0 && !exchange_) return Status::Ok();

  auto upload = [&](void* dst, const void* src, size_t bytes) {
    // An empty batch (T = 0, a rank of a group) has empty vectors, whose data() may be null.
    if (bytes == 0) return cudaSuccess;
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_);
  };
  const Status uploaded = [&]() -> Status {
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.tokens_dev, rows_.tokens.data(), T * sizeof(int32_t)));
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.positions, rows_.positions.data(), T * sizeof(int32_t)));
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.token_seq, rows_.input.data(), T * sizeof(int32_t)));
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.slots, rows_.slots.data(), T * sizeof(int64_t)));
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.tables, w.host_tables.data(), w.host_tables.size() * sizeof(int32_t)));
    SHOAL_CUDA_RETURN_IF_ERROR(upload(w.logit_rows, w.host_logit_rows.data(), R * sizeof(int32_t)));
    return Status::Ok();
  }();
  if (!uploaded.ok()) {
    JoinLayersWithoutTokens();  // no layer has run yet: the peers expect all of this step's exchanges
    return uploaded;
  }

  // Decode-sized steps take the device-offset MoE path; decode steps of that size replay a graph.
  // A graph bakes in its launch parameters, so attention gets the table's capacity as its position
  // bound (a constant) rather than this step's largest position.
  step_device_moe_ = device_moe_ && use_device_moe_ && !exchange_ && T <= kDeviceMoeMaxTokens;
  const bool decode = R == T && S == T;  // one token per input, each asking for its next token's logits
  step_max_positions_ = 0;
  for (int32_t p : rows_.positions) step_max_positions_ = std::max(step_max_positions_, p + 1);
  Status ran;
  if (step_device_moe_ && use_graphs_ && decode) {
    step_max_positions_ = max_blocks_per_seq_ * blocks_.block_size();
    ran = LaunchDecodeGraph(T, R);
  } else {
    ran = Body(T, R);
  }
  SHOAL_RETURN_IF_ERROR(ran);
  if (step_device_moe_) {
    // The offsets of every layer, for AccountDeviceMoe once the caller has synchronised.
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(layer_offsets_host_, w.layer_offsets,
                                               static_cast<size_t>(c.num_layers) * (c.num_experts + 1) * sizeof(int64_t),
                                               cudaMemcpyDeviceToHost, stream_));
  }
  return Status::Ok();
}

Status CudaEngine::Body(int64_t T, int64_t R) {
  const ModelConfig& c = config_;
  Workspace& w = *ws_;
  const int64_t H = c.hidden_size;
  Status prepared = Embed(weights_.embed, H, w.tokens_dev, T, w.x, stream_);
  if (prepared.ok()) {
    prepared = RopeTable(w.positions, T, inv_freq_, c.head_dim / 2, static_cast<float>(c.rope.attention_factor),
                         w.cos, w.sin, stream_);
  }
  if (!prepared.ok()) {
    JoinLayersWithoutTokens();  // no layer has run yet: the peers expect all of this step's exchanges
    return prepared;
  }
  step_weight_bytes_ = T * H * 2;
  for (int l = 0; l < c.num_layers; ++l) {
    if (Status st = Layer(l, T); !st.ok()) {
      // A local failure (not the group's): still join the remaining layers' exchanges, as the CPU
      // engine does, so the peers finish the step.
      if (exchange_ && !comm::IsGroupFailure(st)) {
        for (int rest = l + 1; rest < c.num_layers; ++rest) {
          if (!Layer(rest, 0).ok()) break;
        }
      }
      return st.WithContext("layer " + std::to_string(l));
    }
  }

  // Final norm on every row (cheap), then only the rows asked for through lm_head.
  SHOAL_RETURN_IF_ERROR(RmsNormToBf16(w.x, T, H, weights_.final_norm, static_cast<float>(c.rms_norm_eps), w.normed, stream_));
  SHOAL_RETURN_IF_ERROR(PermuteRows(w.normed, H, w.logit_rows, R, w.logit_in, stream_));
  SHOAL_RETURN_IF_ERROR(gemm_->Linear(w.logit_in, R, H, weights_.lm_head, c.vocab_size, w.logits));
  step_weight_bytes_ += int64_t{c.vocab_size} * H * 2;
  return Status::Ok();
}

Status CudaEngine::EnsureLogits(int64_t rows) {
  Workspace& w = *ws_;
  if (rows <= w.logit_capacity) return Status::Ok();
  // At least kDeviceMoeMaxTokens rows, so that decode graphs never see this buffer move.
  int64_t cap = std::max<int64_t>({w.logit_capacity, 16, kDeviceMoeMaxTokens});
  while (cap < rows) cap *= 2;
  ClearGraphs();
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (w.logits) SHOAL_CUDA_RETURN_IF_ERROR(cudaFree(w.logits));
  w.logits = nullptr;
  w.logit_capacity = 0;
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&w.logits),
                                        static_cast<size_t>(cap * config_.vocab_size) * sizeof(float)));
  w.logit_capacity = cap;
  return Status::Ok();
}

Status CudaEngine::LaunchDecodeGraph(int64_t T, int64_t R) {
  if (graphs_.size() < static_cast<size_t>(T)) graphs_.resize(static_cast<size_t>(T));
  DecodeGraph& g = graphs_[static_cast<size_t>(T - 1)];
  if (g.exec == nullptr) {
    // Capture: the body's launches are recorded, not run (the host-side code, weight-byte counting
    // included, runs once here). Thread-local mode: other threads' CUDA calls are not affected.
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const Status body = Body(T, R);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!body.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      if (!body.ok()) return body.WithContext("capturing the decode graph of " + std::to_string(T) + " tokens");
      return CudaStatus(ended, "cudaStreamEndCapture(stream_, &graph)", __FILE__, __LINE__);
    }
    const cudaError_t made = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    if (made != cudaSuccess) {
      g.exec = nullptr;
      return CudaStatus(made, "cudaGraphInstantiate(&exec, graph, 0)", __FILE__, __LINE__);
    }
    g.weight_bytes = step_weight_bytes_;
    ++graphs_captured_;
  }
  step_weight_bytes_ = g.weight_bytes;
  SHOAL_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g.exec, stream_));
  ++graph_replays_;
  return Status::Ok();
}

void CudaEngine::ClearGraphs() {
  for (DecodeGraph& g : graphs_) {
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
  }
  graphs_.clear();
}

void CudaEngine::AccountDeviceMoe() {
  if (!step_device_moe_) return;
  const ModelConfig& c = config_;
  const int E = c.num_experts;
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!weights_.layers[l].is_moe) continue;
    const int64_t* off = layer_offsets_host_ + static_cast<size_t>(l) * (E + 1);
    for (int e = 0; e < E; ++e) {
      const int64_t n = off[e + 1] - off[e];
      expert_rows_total_[e] += static_cast<uint64_t>(n);
      layer_expert_rows_[static_cast<size_t>(l) * E + e] += static_cast<uint64_t>(n);
      if (n > 0) step_weight_bytes_ += 3 * I * H * 2;
    }
  }
}

Status CudaEngine::Project(const bf16* x, int64_t T, int64_t k, std::initializer_list<SkinnyOutput> outputs) {
  if (step_device_moe_ && experimental_) {
    return SkinnyLinear(x, T, k, std::span<const SkinnyOutput>(outputs.begin(), outputs.size()), stream_);
  }
  for (const SkinnyOutput& o : outputs) {
    SHOAL_RETURN_IF_ERROR(gemm_->Linear(x, T, k, o.w, o.n, o.y, o.accumulate ? 1.0f : 0.0f));
    if (o.bias) SHOAL_RETURN_IF_ERROR(AddBias(o.y, T, o.n, o.bias, stream_));
  }
  return Status::Ok();
}

Status CudaEngine::Layer(int l, int64_t T) {
  const ModelConfig& c = config_;
  const DeviceLayer& L = weights_.layers[l];
  Workspace& w = *ws_;
  const int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Attention and the FFN's norm. On a local failure here an MoE layer still joins its exchange (with
  // no rows) before returning, so that Step's join of the layers after it keeps the group's calls
  // aligned; otherwise this rank would be one exchange behind its peers.
  const Status attention = [&]() -> Status {
    SHOAL_RETURN_IF_ERROR(RmsNormToBf16(w.x, T, H, L.input_norm, eps, w.normed, stream_));
    SHOAL_RETURN_IF_ERROR(Project(w.normed, T, H, {{L.q, Q, w.q, L.q_bias}, {L.k, KV, w.k, L.k_bias}, {L.v, KV, w.v, L.v_bias}}));
    if (experimental_) {
      // q/k norm (Qwen3), RoPE and the KV write in one launch.
      SHOAL_RETURN_IF_ERROR(AttentionPrologue(w.q, w.k, w.v, T, c.num_heads, L.q_norm, L.k_norm, eps, w.cos, w.sin,
                                              w.slots, kv_layers_[l], stream_));
    } else {
      if (L.q_norm) {
        SHOAL_RETURN_IF_ERROR(RmsNormF32(w.q, T * c.num_heads, c.head_dim, L.q_norm, eps, w.q, stream_));
        SHOAL_RETURN_IF_ERROR(RmsNormF32(w.k, T * c.num_kv_heads, c.head_dim, L.k_norm, eps, w.k, stream_));
      }
      SHOAL_RETURN_IF_ERROR(ApplyRope(w.q, T, c.num_heads, c.head_dim, w.cos, w.sin, stream_));
      SHOAL_RETURN_IF_ERROR(ApplyRope(w.k, T, c.num_kv_heads, c.head_dim, w.cos, w.sin, stream_));
      SHOAL_RETURN_IF_ERROR(WriteKv(kv_layers_[l], w.k, w.v, T, w.slots, stream_));
    }
    // Small steps split every token's key range across blocks: a decode step has few (token, head)
    // pairs, too few blocks to keep the GPU busy (the split depends on T alone, so graphs keep it).
    const int splits =
        step_device_moe_ && experimental_ ? PagedAttentionSplits(T * c.num_heads, multiprocessors_) : 1;
    SHOAL_RETURN_IF_ERROR(PagedAttention(w.q, T, c.num_heads, w.positions, w.token_seq, w.tables, max_blocks_per_seq_,
                                         step_max_positions_, kv_layers_[l], 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                                         c.sliding_window, w.attn, stream_, splits, w.attn_partial));
    SHOAL_RETURN_IF_ERROR(Project(w.attn, T, Q, {{L.o, H, w.x, L.o_bias, /*accumulate=*/true}}));  // the residual add
    step_weight_bytes_ += (2 * Q * H + 2 * KV * H) * 2;

    return RmsNormToBf16(w.x, T, H, L.post_attn_norm, eps, w.normed, stream_);
  }();
  if (!attention.ok()) {
    if (exchange_ && L.is_moe) (void)ExchangeExperts(l, 0);
    return attention;
  }
  if (L.is_moe) return Moe(l, T);
  const int64_t I = L.dense_mlp.intermediate;
  SHOAL_RETURN_IF_ERROR(Project(w.normed, T, H, {{L.dense_mlp.gate_up, 2 * I, w.gate_up}}));
  SHOAL_RETURN_IF_ERROR(SiluMulToBf16(w.gate_up, T, I, w.hidden, stream_));
  SHOAL_RETURN_IF_ERROR(Project(w.hidden, T, I, {{L.dense_mlp.down, H, w.x, nullptr, /*accumulate=*/true}}));
  step_weight_bytes_ += 3 * I * H * 2;
  return Status::Ok();
}

Status CudaEngine::Moe(int l, int64_t T) {
  const ModelConfig& c = config_;
  const DeviceLayer& L = weights_.layers[l];
  Workspace& w = *ws_;
  const int E = c.num_experts, K = c.num_experts_per_tok;
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, rows = T * K;

  // Small steps route and plan in one launch, into this layer's offsets (kept for AccountDeviceMoe).
  const bool route_and_plan = step_device_moe_ && experimental_ && T * K <= kMaxRoutePlanPairs;
  int64_t* layer_offsets = w.layer_offsets + static_cast<int64_t>(l) * (E + 1);
  Status routed = Project(w.normed, T, H, {{L.router, E, w.router_logits}});
  if (routed.ok()) {
    routed = route_and_plan ? RouteAndPlan(w.router_logits, T, E, K, c.norm_topk_prob, w.topk_ids, w.topk_weights,
                                           layer_offsets, w.row_of, w.row_token, stream_)
                            : RouterTopK(w.router_logits, T, E, K, c.norm_topk_prob, w.topk_ids, w.topk_weights,
                                         stream_);
  }
  if (!routed.ok()) {
    if (exchange_) (void)ExchangeExperts(l, 0);  // the peers expect this layer's exchange (see Layer)
    return routed;
  }
  if (exchange_) {
    SHOAL_RETURN_IF_ERROR(ExchangeExperts(l, T));
    return SharedExpert(L, T);
  }
  step_weight_bytes_ += int64_t{E} * H * 2;  // the router
  if (step_device_moe_) {
    // Row counts stay on the device: no synchronisation, so the step can be a graph. The experts'
    // rows and bytes are counted after the step (AccountDeviceMoe), from this layer's offsets.
    int64_t* offsets = layer_offsets;
    const bf16* const* ptrs = expert_ptrs_ + static_cast<int64_t>(l) * 2 * E;
    if (!route_and_plan) {
      SHOAL_RETURN_IF_ERROR(MoePermutePlan(w.topk_ids, T, K, E, offsets, w.row_of, w.row_token, w.plan_scratch, stream_));
    }
    if (experimental_) {
      SHOAL_RETURN_IF_ERROR(MoeGateUpSiluTc(w.normed, H, w.row_token, offsets, E, ptrs, I, w.hidden, stream_));
      SHOAL_RETURN_IF_ERROR(MoeDownTc(w.hidden, I, offsets, E, ptrs + E, H, w.expert_out, stream_));
    } else {
      SHOAL_RETURN_IF_ERROR(MoeGateUpSilu(w.normed, H, w.row_token, offsets, E, ptrs, I, w.hidden, stream_));
      SHOAL_RETURN_IF_ERROR(MoeDown(w.hidden, I, offsets, E, ptrs + E, H, w.expert_out, stream_));
    }
    SHOAL_RETURN_IF_ERROR(UnpermuteCombine(w.expert_out, H, w.row_of, w.topk_ids, w.topk_weights, T, K, w.x, stream_));
    return SharedExpert(L, T);
  }
  SHOAL_RETURN_IF_ERROR(MoePermutePlan(w.topk_ids, T, K, E, w.offsets, w.row_of, w.row_token, w.plan_scratch, stream_));
  // cuBLAS reads problem sizes from host memory: the one synchronisation of the layer.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_offsets_.data(), w.offsets, (E + 1) * sizeof(int64_t),
                                             cudaMemcpyDeviceToHost, stream_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (host_offsets_[E] != rows) {
    return Internal("expert row offsets end at " + std::to_string(host_offsets_[E]) + ", expected " + std::to_string(rows));
  }
  for (int e = 0; e < E; ++e) {
    const int64_t n = host_offsets_[e + 1] - host_offsets_[e];
    expert_rows_total_[e] += static_cast<uint64_t>(n);
    layer_expert_rows_[static_cast<size_t>(l) * E + e] += static_cast<uint64_t>(n);
    if (n > 0) step_weight_bytes_ += 3 * I * H * 2;
  }
  SHOAL_RETURN_IF_ERROR(PermuteRows(w.normed, H, w.row_token, rows, w.expert_in, stream_));
  SHOAL_RETURN_IF_ERROR(gemm_->ExpertLinear(w.expert_in, host_offsets_, L.expert_gate_up.data(), 2 * I, H, w.gate_up,
                                            expert_mode_));
  SHOAL_RETURN_IF_ERROR(SiluMulToBf16(w.gate_up, rows, I, w.hidden, stream_));
  SHOAL_RETURN_IF_ERROR(gemm_->ExpertLinear(w.hidden, host_offsets_, L.expert_down.data(), H, I, w.expert_out, expert_mode_));
  SHOAL_RETURN_IF_ERROR(UnpermuteCombine(w.expert_out, H, w.row_of, w.topk_ids, w.topk_weights, T, K, w.x, stream_));
  return SharedExpert(L, T);
}

Status CudaEngine::SharedExpert(const DeviceLayer& L, int64_t T) {
  if (!L.shared_expert.present()) return Status::Ok();
  Workspace& w = *ws_;
  const int64_t H = config_.hidden_size, S = L.shared_expert.intermediate;
  SHOAL_RETURN_IF_ERROR(Project(w.normed, T, H,
                                {{L.shared_expert.gate_up, 2 * S, w.gate_up}, {L.shared_expert_gate, 1, w.gate_logit}}));
  SHOAL_RETURN_IF_ERROR(SiluMulToBf16(w.gate_up, T, S, w.hidden, stream_));
  SHOAL_RETURN_IF_ERROR(Project(w.hidden, T, S, {{L.shared_expert.down, H, w.expert_out}}));
  SHOAL_RETURN_IF_ERROR(AddSigmoidGated(w.expert_out, w.gate_logit, T, H, w.x, stream_));
  step_weight_bytes_ += (3 * S + 1) * H * 2;
  return Status::Ok();
}

StatusOr<SeqId> CudaEngine::ForkSequence(SeqId parent) {
  std::vector<std::pair<int32_t, int32_t>> copies;
  SHOAL_ASSIGN_OR_RETURN(SeqId child, seqs_.Fork(parent, blocks_, &copies));
  // On the engine's stream: ordered after the step that wrote the block and before the next one.
  const size_t block = static_cast<size_t>(blocks_.block_size()) * config_.kv_dim();
  for (const auto& [from, to] : copies) {
    for (const PagedKvLayer& L : kv_layers_) {
      for (bf16* base : {L.k, L.v}) {
        const cudaError_t e = cudaMemcpyAsync(base + to * block, base + from * block, block * sizeof(bf16),
                                              cudaMemcpyDeviceToDevice, stream_);
        if (e != cudaSuccess) {
          seqs_.Release(child, blocks_);
          return Internal(std::string("KV block copy for a fork: ") + cudaGetErrorString(e));
        }
      }
    }
  }
  return child;
}

void CudaEngine::JoinLayersWithoutTokens() {
  if (!exchange_) return;
  for (int l = 0; l < config_.num_layers; ++l) {
    // Errors here (a peer timed out as well) add nothing to the error being returned.
    if (!Layer(l, 0).ok()) return;
  }
}

Status CudaEngine::ExchangeExperts(int l, int64_t T) {
  const ModelConfig& c = config_;
  const DeviceLayer& L = weights_.layers[l];
  Workspace& w = *ws_;
  const int K = c.num_experts_per_tok;
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size;
  const Deadline deadline = Deadline::AfterMs(collective_timeout_ms_);
  comm::DeviceExpertExchange& ex = *exchange_;
  SHOAL_RETURN_IF_ERROR(ex.Dispatch(w.normed, T, w.topk_ids, deadline));

  // This rank's experts on the rows every origin sent: one GEMM group per (origin, expert) block.
  const int64_t N = ex.num_recv_rows();
  const Status ffn = [&]() -> Status {
    if (N > ep_rows_) {
      int64_t rows = std::max<int64_t>(ep_rows_, 256);
      while (rows < N) rows *= 2;
      SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      if (ep_base_) SHOAL_CUDA_RETURN_IF_ERROR(cudaFree(ep_base_));
      ep_base_ = nullptr;
      ep_rows_ = 0;
      const size_t gate_up_bytes = static_cast<size_t>(rows * 2 * I) * sizeof(float);
      SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&ep_base_, gate_up_bytes + static_cast<size_t>(rows * I) * sizeof(bf16)));
      ep_gate_up_ = static_cast<float*>(ep_base_);
      ep_hidden_ = reinterpret_cast<bf16*>(static_cast<char*>(ep_base_) + gate_up_bytes);
      ep_rows_ = rows;
    }
    const std::vector<int>& local = ex.local_experts();
    local_gate_up_.resize(local.size());
    local_down_.resize(local.size());
    for (size_t i = 0; i < local.size(); ++i) {
      local_gate_up_[i] = L.expert_gate_up[local[i]];
      local_down_[i] = L.expert_down[local[i]];
    }
    SHOAL_RETURN_IF_ERROR(ex.BlockWeights(local_gate_up_, &block_gate_up_));
    SHOAL_RETURN_IF_ERROR(ex.BlockWeights(local_down_, &block_down_));
    const std::span<const int64_t> blocks = ex.block_offsets();
    local_used_.assign(local.size(), 0);
    for (int b = 0; b < ex.num_blocks(); ++b) {
      const int64_t n = blocks[b + 1] - blocks[b];
      const int e = local[ex.block_local_expert(b)];
      expert_rows_total_[e] += static_cast<uint64_t>(n);
      layer_expert_rows_[static_cast<size_t>(l) * c.num_experts + e] += static_cast<uint64_t>(n);
      if (n > 0) local_used_[ex.block_local_expert(b)] = 1;
    }
    for (uint8_t u : local_used_) step_weight_bytes_ += u ? 3 * I * H * 2 : 0;
    step_weight_bytes_ += int64_t{c.num_experts} * H * 2;
    if (N > 0) {
      SHOAL_RETURN_IF_ERROR(gemm_->ExpertLinear(ex.recv_rows(), blocks, block_gate_up_.data(), 2 * I, H, ep_gate_up_,
                                                expert_mode_));
      SHOAL_RETURN_IF_ERROR(SiluMulToBf16(ep_gate_up_, N, I, ep_hidden_, stream_));
      SHOAL_RETURN_IF_ERROR(
          gemm_->ExpertLinear(ep_hidden_, blocks, block_down_.data(), H, I, ex.expert_out(), expert_mode_));
    }
    return Status::Ok();
  }();
  if (!ffn.ok()) {
    // A local failure between Dispatch and Combine (out of memory, a GEMM refused): no Combine. The
    // peers then fail this layer's Combine with DeadlineExceeded after parallel.collective_timeout_ms
    // and the group is lost — slow, but no peer returns tokens computed with missing expert outputs.
    return ffn;
  }
  SHOAL_RETURN_IF_ERROR(ex.Combine(deadline));
  return UnpermuteCombine(ex.combined(), H, ex.row_of(), w.topk_ids, w.topk_weights, T, K, w.x, stream_);
}

Status CudaEngine::Forward(const std::vector<ForwardInput>& batch, std::vector<ForwardOutput>* out) {
  int64_t R = 0;
  SHOAL_RETURN_IF_ERROR(Step(batch, &R));
  const int64_t V = config_.vocab_size;
  std::vector<float> logits(static_cast<size_t>(R * V));
  if (R > 0) {
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), ws_->logits, logits.size() * sizeof(float),
                                               cudaMemcpyDeviceToHost, stream_));
  }
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  AccountDeviceMoe();
  out->assign(batch.size(), ForwardOutput{});
  int64_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t n = batch[b].all_logits ? static_cast<int64_t>(batch[b].tokens.size()) : 1;
    (*out)[b].logits.assign(logits.begin() + r * V, logits.begin() + (r + n) * V);
    r += n;
  }
  seqs_.Advance(batch, blocks_);
  last_step_weight_bytes_ = step_weight_bytes_;
  return Status::Ok();
}

Status CudaEngine::ForwardGreedy(const std::vector<ForwardInput>& batch, std::vector<int32_t>* tokens) {
  for (const ForwardInput& in : batch) {
    if (in.all_logits) {
      JoinLayersWithoutTokens();  // a rejected batch: the peers still expect this step's exchanges
      return InvalidArgument("sequence " + std::to_string(in.seq) + ": ForwardGreedy takes no all_logits inputs");
    }
  }
  int64_t R = 0;
  SHOAL_RETURN_IF_ERROR(Step(batch, &R));
  Workspace& w = *ws_;
  w.host_argmax.resize(static_cast<size_t>(R));
  if (R > 0) {
    SHOAL_RETURN_IF_ERROR(ArgMax(w.logits, R, config_.vocab_size, w.argmax, stream_));
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(w.host_argmax.data(), w.argmax, R * sizeof(int32_t),
                                               cudaMemcpyDeviceToHost, stream_));
  }
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  AccountDeviceMoe();
  tokens->assign(w.host_argmax.begin(), w.host_argmax.end());
  seqs_.Advance(batch, blocks_);
  last_step_weight_bytes_ = step_weight_bytes_;
  return Status::Ok();
}

}  // namespace shoal::cuda
