// `shoal worker`: one rank of an expert-parallel engine group, launched by mpirun or srun.
//
// Every rank loads the dense weights and its placement's experts, runs attention for its own
// requests and exchanges rows with the group at every MoE layer. With --batch the group runs a file
// of prompts without a coordinator: rank 0 reads the file and broadcasts it, request i goes to rank
// i mod N, the ranks generate in lockstep, and rank 0 writes every result in input order.
//
// Without MPI (--rank R --world-size N, e.g. from srun's SLURM_PROCID / SLURM_NTASKS): a GPU group
// whose ranks meet at the coordinator. Rank 0 makes the NCCL id, the coordinator hands it to the other
// ranks (control/rendezvous_client.h), and every collective — the load and start agreements, the serve
// loop's — then runs over that NCCL communicator.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "comm/mpi/mpi_group.h"
#include "comm/placement.h"
#include "common/config.h"
#include "common/log.h"
#include "control/rendezvous_client.h"
#include "kernels/kernels.h"
#include "comm/tensor_parallel.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "model/tensor_parallel_weights.h"
#include "model/weights.h"
#include "tools/shoal/commands.h"
#include "tools/shoal/engine_factory.h"
#include "tools/shoal/engine_flags.h"
#include "worker/batch_file.h"
#include "worker/engine.h"
#include "worker/generate.h"
#include "worker/kv_cache.h"
#include "worker/memory_budget.h"
#include "worker/serve_loop.h"

namespace shoal::cli {

namespace {

struct WorkerOptions {
  std::string config_path;
  std::string model;
  std::string batch;
  std::string output;
  int max_tokens = 16;
  int threads = -1;
  std::string coordinator;  // HOST:PORT of `shoal serve`'s control port
  std::string group = "g0";
  int connect_timeout_s = 120;
  EngineFlags flags;  // --served-model-name, --max-model-len, --dtype, --device, --kv-cache-memory-fraction
  // A launch without MPI: this rank and the group's size (both given, or neither).
  int rank = -1;
  int world_size = -1;
};

// "0-3,7" for the sorted experts of a rank.
std::string ExpertRanges(const std::vector<int>& experts) {
  std::string s;
  for (size_t i = 0; i < experts.size();) {
    size_t j = i;
    while (j + 1 < experts.size() && experts[j + 1] == experts[j] + 1) ++j;
    s += (s.empty() ? "" : ",") + std::to_string(experts[i]) + (j > i ? "-" + std::to_string(experts[j]) : "");
    i = j + 1;
  }
  return s;
}

// Every rank learns whether any rank failed; a rank that did returns its own error, the others say
// which step failed elsewhere.
Status Agree(comm::Group& g, const Status& local, const std::string& what, Deadline deadline) {
  std::vector<int64_t> failed = {local.ok() ? 0 : 1};
  Status st = g.AllReduceSum(failed, deadline);
  if (!local.ok()) return local;
  if (!st.ok()) return st;
  if (failed[0] > 0) return Unavailable(what + " failed on " + std::to_string(failed[0]) + " other rank(s)");
  return Status::Ok();
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open batch file");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size > kMaxBatchFileBytes) {
    return OutOfRange(path + ": larger than the limit of " + std::to_string(kMaxBatchFileBytes) + " bytes");
  }
  in.seekg(0);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), size);
  if (!in) return IoError(path + ": read failed");
  return text;
}

struct Loaded {
  comm::TensorParallelLayout tp;  // this rank's replica (attention_tp > 1); outlives the engine
  ModelConfig model;
  ModelWeights weights;  // until the engine takes them
  std::optional<Placement> placement;
  std::unique_ptr<StepEngine> engine;
  size_t resident_bytes = 0;
  // Expert slots a rebalance may add (parallel.redundant_experts): kept out of the KV cache's share.
  size_t rebalance_reserve_bytes = 0;
  std::vector<int> experts;
};

// Ranks of this job on this node (MPI's shared-memory split), so that `engine.threads: 0` gives each
// rank its share of the cores instead of every rank spawning one thread per core.
int RanksOnThisNode() {
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return 1;
  int n = 1;
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return std::max(n, 1);
}

// The node this rank runs on, as MPI names it (tensor-parallel replicas stay inside one).
std::string ProcessorName() {
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int len = 0;
  if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS || len <= 0) return "unknown";
  std::string s(name, static_cast<size_t>(len));
  for (char& ch : s) ch = ch == '\n' ? ' ' : ch;
  return s;
}

// The config (file, then flags); engine.threads 0 shares the node's cores among its ranks.
Status LoadConfig(const WorkerOptions& o, int ranks_on_node, EngineConfig* cfg) {
  if (!o.config_path.empty()) {
    SHOAL_ASSIGN_OR_RETURN(*cfg, LoadEngineConfig(o.config_path));
  }
  if (!o.model.empty()) cfg->model_path = o.model;
  SHOAL_RETURN_IF_ERROR(ApplyEngineFlags(o.flags, cfg));
  if (o.threads >= 0) cfg->threads = o.threads;
  if (cfg->threads == 0) cfg->threads = std::max(1, cfg->ResolvedThreads() / ranks_on_node);
  if (cfg->model_path.empty()) return InvalidArgument("no model: pass --model DIR or a --config with model.path");
  return Status::Ok();
}

// RanksOnThisNode without MPI, from the launcher's environment: torchrun's LOCAL_WORLD_SIZE, or Slurm's tasks
// per node ("8", or "8(x2)" for two nodes of 8); 1 when neither says.
int RanksOnThisNodeFromEnv() {
  for (const char* var : {"LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v >= '1' && *v <= '9') return std::max(1, std::atoi(v));
  }
  return 1;
}

// The model's config (within engine.max_model_len), the dense weights (this rank's share of them
// under attention TP: `shard`) and rank `rank`'s experts of a group of `size`, in engine.dtype on the
// CPU (the GPU engine converts to bf16 as it uploads).
StatusOr<Loaded> LoadRank(const EngineConfig& cfg, int rank, int size, TpShard shard = {}) {
  Loaded l;
  SHOAL_ASSIGN_OR_RETURN(l.model, LoadModelConfig(cfg.model_path));
  SHOAL_RETURN_IF_ERROR(CheckTensorParallel(l.model, shard.size).WithContext(cfg.model_path));
  SHOAL_RETURN_IF_ERROR(LimitContext(cfg.max_model_len, cfg.model_path, &l.model));
  SHOAL_ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(cfg.device));
  SHOAL_ASSIGN_OR_RETURN(std::optional<DType> dtype, ParseWeightDtype(cfg.dtype));
  SHOAL_ASSIGN_OR_RETURN(Placement placement, Placement::Balanced(l.model.num_experts, size));
  l.experts = placement.local_experts(rank);
  SHOAL_ASSIGN_OR_RETURN(ModelWeights weights,
                         LoadModelWeights(l.model, cfg.model_path, [&](int, int e) { return placement.Holds(rank, e); }));
  SHOAL_RETURN_IF_ERROR(SliceForTensorParallel(l.model, shard, &weights));  // before any cast reads the tensors
  if (dtype && !device.cuda) CastMatrices(&weights, *dtype);
  l.resident_bytes = weights.MatrixBytes();
  // After a rebalance a rank holds ceil((E + R) / N) experts per MoE layer (the planner fills every
  // rank's slots equally), one more than now when N does not divide E: room for them is set aside.
  if (l.model.num_experts > 0 && !l.experts.empty()) {
    size_t expert_bytes = 0;
    int moe_layers = 0;
    for (const LayerWeights& L : weights.layers) {
      if (!L.is_moe) continue;
      ++moe_layers;
      for (const FfnWeights& f : L.experts) expert_bytes = f.present() ? f.nbytes() : expert_bytes;
    }
    const int E = l.model.num_experts, R = std::max(0, cfg.redundant_experts);
    int spare = R;
    while ((E + spare) % size != 0) ++spare;
    const int slots = (E + spare) / size;
    const int extra = std::max(0, slots - static_cast<int>(l.experts.size()));
    l.rebalance_reserve_bytes = static_cast<size_t>(extra) * static_cast<size_t>(moe_layers) * expert_bytes;
  }
  l.weights = std::move(weights);
  l.placement = std::move(placement);
  return l;
}

// kv_cache.memory_fraction on the CPU: the node's RAM (or its cgroup's limit) shared by its ranks;
// the KV cache gets the fraction of this rank's share that its weights leave. (On a GPU the engine
// sizes it from device memory once its weights are uploaded.)
Status SizeCpuKvCache(const Loaded& l, int ranks_on_node, EngineConfig* cfg) {
  if (cfg->kv_memory_fraction <= 0) return Status::Ok();
  SHOAL_ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(cfg->device));
  if (device.cuda) return Status::Ok();
  const int64_t block_bytes = KvCache::BlockBytes(TensorParallelAttentionConfig(l.model, cfg->attention_tp), cfg->kv_block_size);
  SHOAL_ASSIGN_OR_RETURN(int64_t kv_bytes,
                         KvBytesForFraction(cfg->kv_memory_fraction, HostMemoryBytes() / std::max(1, ranks_on_node),
                                            static_cast<int64_t>(l.resident_bytes + l.rebalance_reserve_bytes), block_bytes,
                                            "RAM / " + std::to_string(ranks_on_node) + " rank(s) on this node"));
  cfg->kv_cache_blocks = kv_bytes / block_bytes;
  log::Info("kv_cache.memory_fraction %.3g: %lld KV blocks (%.2f GiB)", cfg->kv_memory_fraction,
            static_cast<long long>(cfg->kv_cache_blocks), static_cast<double>(kv_bytes) / (1 << 30));
  return Status::Ok();
}

// One full context must fit: with engine.max_model_len set, a cache that cannot hold a sequence that
// long is an error (as in vLLM); without it, the usable context is what the cache holds, said aloud.
Status CheckContextFits(const StepEngine& e, const EngineConfig& cfg, const ModelConfig& m) {
  const int64_t fits = e.kv_blocks().MaxSequenceTokens(e.max_step_tokens());
  if (fits >= m.max_position_embeddings) return Status::Ok();
  const std::string what = "the KV cache holds " + std::to_string(fits) + " tokens of one sequence (" +
                           std::to_string(e.kv_blocks().num_blocks()) + " blocks of " +
                           std::to_string(e.kv_blocks().block_size()) + ")";
  if (cfg.max_model_len > 0) {
    return ResourceExhausted("engine.max_model_len (--max-model-len) is " + std::to_string(cfg.max_model_len) + " but " +
                             what + ": raise kv_cache.memory_mib or --kv-cache-memory-fraction, use more ranks, or "
                             "lower --max-model-len");
  }
  log::Warn("%s, less than the model's max_position_embeddings (%d): requests longer than that are refused; "
            "set --max-model-len to make the limit explicit",
            what.c_str(), m.max_position_embeddings);
  return Status::Ok();
}

int64_t StartupMs(const EngineConfig& cfg) { return (cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s : 600) * 1000; }
Deadline StartupDeadline(const EngineConfig& cfg) { return Deadline::AfterMs(StartupMs(cfg)); }

void ReportStarted(const Loaded& l) {
  log::Info("started: %s, experts %s of %d, resident weights %.2f MB, %s",
            ArchitectureName(l.model.arch), ExpertRanges(l.experts).c_str(), l.model.num_experts,
               l.resident_bytes / 1e6, l.engine->Describe().c_str());
}

// "host:port" → its parts.
StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& s) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return InvalidArgument("--coordinator: expected HOST:PORT, got '" + s + "'");
  const std::string port_s = s.substr(colon + 1);
  if (port_s.empty() || port_s.size() > 5 || port_s.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("--coordinator: bad port in '" + s + "'");
  }
  const int port = std::stoi(port_s);
  if (port < 1 || port > 65535) return InvalidArgument("--coordinator: port out of range in '" + s + "'");
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_pair(host, port);
}

// The model's tokens as bytes, so that forced tool calls (a JSON schema on the output) can be served.
// Without a tokenizer.json (a synthetic benchmark model) those requests are refused, not the worker.
std::shared_ptr<const grammar::TokenVocabulary> LoadVocabulary(const std::string& model_path) {
  if (!std::filesystem::exists(std::filesystem::path(model_path) / "tokenizer.json")) {
    log::Info("no tokenizer.json in %s: requests with a forced tool call will be refused", model_path.c_str());
    return nullptr;
  }
  const auto t0 = std::chrono::steady_clock::now();
  StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::Load(model_path);
  StatusOr<std::shared_ptr<const grammar::TokenVocabulary>> vocab =
      tok.ok() ? grammar::TokenVocabulary::FromTokenizer(**tok) : StatusOr<std::shared_ptr<const grammar::TokenVocabulary>>(tok.status());
  if (!vocab.ok()) {
    log::Warn("%s: requests with a forced tool call will be refused", vocab.status().ToString().c_str());
    return nullptr;
  }
  log::Info("vocabulary for constrained output: %d tokens in %.2f s", (*vocab)->size(),
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return *vocab;
}

Status ServeCoordinator(const WorkerOptions& o, const EngineConfig& cfg, Loaded& l) {
  SHOAL_ASSIGN_OR_RETURN(auto hp, ParseHostPort(o.coordinator));
  ServeLoopOptions so;
  so.coordinator_host = hp.first;
  so.coordinator_port = hp.second;
  so.group = o.group;
  so.connect_timeout_ms = int64_t{1000} * o.connect_timeout_s;
  so.model_name = ServedModelName(cfg);
  so.local_experts = l.experts;
  so.tp_group = l.tp.tp_group.get();
  so.replica = l.tp.replica;
  so.vocabulary = LoadVocabulary(cfg.model_path);
  // Experts a rebalance gains are loaded as the start-up load loaded this rank's (LoadRank).
  so.model_dir = cfg.model_path;
  SHOAL_ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(cfg.device));
  SHOAL_ASSIGN_OR_RETURN(std::optional<DType> dtype, ParseWeightDtype(cfg.dtype));
  if (!device.cuda) so.weight_dtype = dtype;
  return RunServeLoop(*l.engine, so);
}

Status RunGroup(const WorkerOptions& o) {
  SHOAL_ASSIGN_OR_RETURN(auto world, comm::MpiGroup::Create(MPI_COMM_WORLD));
  comm::Group& g = *world;
  const int rank = g.rank(), size = g.size();
  const std::string me = "rank " + std::to_string(rank) + "/" + std::to_string(size);
  log::SetTag("worker " + o.group + " " + me);

  // Load; the first agreement waits for the slowest rank's load (parallel.startup_timeout_s).
  EngineConfig cfg;
  Status configured = LoadConfig(o, RanksOnThisNode(), &cfg);
  if (configured.ok() && size % cfg.attention_tp != 0) {
    configured = InvalidArgument("parallel.attention_tp " + std::to_string(cfg.attention_tp) + " does not divide the " +
                                 std::to_string(size) + " ranks of the group");
  }
  SHOAL_RETURN_IF_ERROR(Agree(g, configured, "reading the configuration", StartupDeadline(cfg)).WithContext(me));
  // Attention TP: replicas of attention_tp ranks, grouped by the node each rank runs on.
  comm::TensorParallelLayout tp;
  if (cfg.attention_tp > 1) {
    SHOAL_ASSIGN_OR_RETURN(tp, comm::SplitTensorParallel(g, cfg.attention_tp, ProcessorName(), StartupDeadline(cfg)));
    if (tp.cross_node) log::Warn("a tensor-parallel replica spans nodes: its collectives run every layer over the network");
  }
  const TpShard shard = tp.tp_group ? TpShard{tp.tp_group->rank(), tp.tp_group->size()} : TpShard{};
  StatusOr<Loaded> loaded = LoadRank(cfg, rank, size, shard);
  SHOAL_RETURN_IF_ERROR(Agree(g, loaded.status(), "loading the model", StartupDeadline(cfg)).WithContext(me));
  Loaded& l = *loaded;
  l.tp = std::move(tp);
  const int ranks_on_node = RanksOnThisNode();
  // The engine only after every rank has loaded: a GPU group's engines bootstrap NCCL over `g`, and a
  // rank that failed its load must not meet those collectives with the agreement's.
  StatusOr<DeviceSpec> device = ParseDevice(cfg.device);
  Status made = device.status();
  if (made.ok()) made = SizeCpuKvCache(l, ranks_on_node, &cfg);
  if (l.tp.tp_group) {
    // A replica's ranks run the same scheduler on the same requests: they must have the same KV
    // capacity (the smallest any of them can hold), or their schedules would part.
    std::vector<int64_t> neg = {made.ok() ? -cfg.kv_cache_blocks : 0};
    Status st = l.tp.tp_group->AllReduceMax(neg, StartupDeadline(cfg));
    if (made.ok()) made = st;
    if (made.ok() && cfg.kv_cache_blocks > 0) cfg.kv_cache_blocks = -neg[0];
  }
  if (made.ok()) {
    auto engine = MakeStepEngine(*device, l.model, std::move(l.weights), cfg, &g, &*l.placement, nullptr, l.tp.tp_group.get());
    made = engine.status();
    if (engine.ok()) l.engine = std::move(engine).value();
  }
  if (made.ok()) made = CheckContextFits(*l.engine, cfg, l.model);
  // A fresh deadline: a rank that loaded early must not give up while a slower one is still in its
  // NCCL bootstrap or weight upload.
  SHOAL_RETURN_IF_ERROR(Agree(g, made, "starting the engine", StartupDeadline(cfg)).WithContext(me));
  const auto step_deadline = [&] { return Deadline::AfterMs(cfg.collective_timeout_ms); };
  ReportStarted(l);

  if (!o.coordinator.empty()) return ServeCoordinator(o, cfg, l);

  // The batch: read on rank 0 only (other nodes need not see the file), then broadcast.
  StatusOr<std::string> text = rank == 0 ? ReadFile(o.batch) : StatusOr<std::string>(std::string());
  SHOAL_RETURN_IF_ERROR(Agree(g, text.status(), "reading " + o.batch, step_deadline()).WithContext(me));
  SHOAL_ASSIGN_OR_RETURN(std::string all_text, comm::BroadcastBytes(g, *text, 0, step_deadline()));
  // Every rank parses the same bytes, so every rank reaches the same verdict.
  SHOAL_ASSIGN_OR_RETURN(std::vector<BatchRequest> requests,
                         ParseBatchFile(all_text, o.batch, l.model.vocab_size, o.max_tokens,
                                        l.model.max_position_embeddings));

  // Request i to replica i mod D; every rank of a replica runs its replica's requests together, and its
  // TP rank 0 reports them.
  const int replica = l.tp.tp_group ? l.tp.replica : rank, replicas = l.tp.tp_group ? l.tp.replicas : size;
  const bool reports = !l.tp.tp_group || l.tp.tp_group->rank() == 0;
  std::vector<size_t> mine;
  for (size_t i = replica; i < requests.size(); i += replicas) mine.push_back(i);
  // Waves of at most engine.max_num_seqs sequences; every rank runs as many waves as the busiest.
  std::vector<int64_t> waves = {(static_cast<int64_t>(mine.size()) + cfg.max_num_seqs - 1) / cfg.max_num_seqs};
  SHOAL_RETURN_IF_ERROR(g.AllReduceMax(waves, step_deadline()));
  std::string lines;
  GenerateStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t w = 0; w < waves[0]; ++w) {
    std::vector<GenerateRequest> wave;
    std::vector<size_t> index;
    for (size_t k = w * cfg.max_num_seqs; k < mine.size() && k < static_cast<size_t>((w + 1) * cfg.max_num_seqs); ++k) {
      wave.push_back(requests[mine[k]].request);
      index.push_back(mine[k]);
    }
    SHOAL_ASSIGN_OR_RETURN(std::vector<GenerateResult> results, Generate(*l.engine, wave, &stats));
    for (size_t k = 0; k < results.size() && reports; ++k) {
      lines += std::to_string(index[k]) + "\t" + FormatBatchResult(requests[index[k]], results[k]);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int64_t> totals = {reports ? stats.prompt_tokens : 0, reports ? stats.generated_tokens : 0};
  SHOAL_RETURN_IF_ERROR(g.AllReduceSum(totals, step_deadline()));
  log::Info("%zu requests, %lld prompt + %lld generated tokens; step time: %s", mine.size(),
            static_cast<long long>(stats.prompt_tokens), static_cast<long long>(stats.generated_tokens),
            FormatPhases(stats.phases, stats.prefill_seconds + stats.decode_seconds).c_str());

  // Results to rank 0, written in input order.
  SHOAL_ASSIGN_OR_RETURN(std::vector<std::string> gathered, comm::GatherBytes(g, lines, 0, step_deadline()));
  if (rank != 0) return Status::Ok();
  std::vector<std::string> ordered(requests.size());
  for (const std::string& part : gathered) {
    std::istringstream in(part);
    std::string line;
    while (std::getline(in, line)) {
      const size_t tab = line.find('\t');
      const size_t i = std::stoul(line.substr(0, tab));
      ordered.at(i) = line.substr(tab + 1) + "\n";
    }
  }
  FILE* out = stdout;
  if (!o.output.empty()) {
    out = std::fopen(o.output.c_str(), "w");
    if (!out) return IoError(o.output + ": cannot open for writing");
  }
  for (const std::string& line : ordered) std::fputs(line.c_str(), out);
  if (out != stdout && std::fclose(out) != 0) return IoError(o.output + ": write failed");
  log::Info("group of %d, %zu requests: %lld prompt tokens, %lld generated in %.2f s (%.1f tok/s)",
            size, requests.size(), static_cast<long long>(totals[0]), static_cast<long long>(totals[1]), seconds,
               seconds > 0 ? totals[1] / seconds : 0.0);
  return Status::Ok();
}

// A launch without MPI (--rank/--world-size): the ranks meet at the coordinator, which hands rank 0's
// NCCL id to the others; every agreement then runs over NCCL. Groups of more than one rank need the
// GPU engine (the CPU engine's exchange is MPI's).
Status RunWithoutMpi(const WorkerOptions& o) {
  const int rank = o.rank, size = o.world_size;
  const std::string me = "rank " + std::to_string(rank) + "/" + std::to_string(size);
  log::SetTag("worker " + o.group + " " + me);
  EngineConfig cfg;
  SHOAL_RETURN_IF_ERROR(LoadConfig(o, RanksOnThisNodeFromEnv(), &cfg).WithContext(me));
  SHOAL_ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(cfg.device));
  if (cfg.attention_tp > 1) {
    return Unimplemented(me + ": parallel.attention_tp > 1 needs the CPU engine under mpirun or srun with MPI");
  }
  if (size > 1 && !device.cuda) {
    return InvalidArgument(me + ": a group launched without MPI exchanges expert rows over NCCL, so it needs "
                                "--device cuda (engine.device); CPU groups of more than one rank run under mpirun or srun with MPI");
  }
  SHOAL_ASSIGN_OR_RETURN(auto hp, ParseHostPort(o.coordinator));

  // The data plane first: a rank that cannot reach the coordinator or its GPU fails before a long load.
  std::unique_ptr<comm::Group> plane;
  if (size > 1) {
    control::Rendezvous rv;
    rv.group = o.group;
    rv.rank = static_cast<uint32_t>(rank);
    rv.size = static_cast<uint32_t>(size);
    rv.model = ServedModelName(cfg);
    if (const char* t = std::getenv("SHOAL_CONTROL_TOKEN"); t != nullptr) rv.token = t;
    if (rank == 0) {
      SHOAL_ASSIGN_OR_RETURN(rv.id, NewDataPlaneId());
    }
    SHOAL_ASSIGN_OR_RETURN(std::string id, control::ShareGroupId(hp.first, hp.second, rv, int64_t{1000} * o.connect_timeout_s,
                                                                 StartupMs(cfg)));
    log::Info("data-plane id %s from the coordinator; joining the NCCL group",
              control::IdFingerprint(id).c_str());
    SHOAL_ASSIGN_OR_RETURN(plane, JoinDataPlane(device, id, rank, size, StartupDeadline(cfg)));
  }
  comm::Group* g = plane.get();  // null for a group of one

  StatusOr<Loaded> loaded = LoadRank(cfg, rank, size);
  if (g != nullptr) {
    SHOAL_RETURN_IF_ERROR(Agree(*g, loaded.status(), "loading the model", StartupDeadline(cfg)).WithContext(me));
  } else {
    SHOAL_RETURN_IF_ERROR(loaded.status().WithContext(me));
  }
  Loaded& l = *loaded;
  SHOAL_RETURN_IF_ERROR(SizeCpuKvCache(l, RanksOnThisNodeFromEnv(), &cfg).WithContext(me));
  StatusOr<std::unique_ptr<StepEngine>> engine =
      MakeStepEngine(device, l.model, std::move(l.weights), cfg, nullptr, &*l.placement, std::move(plane));
  // The engine owns the data plane, so a rank whose engine failed to start (device memory, uploads)
  // has nothing left to tell its peers with: it ends, and they end at the agreement's deadline
  // (parallel.startup_timeout_s) or on NCCL's report of the lost peer, whichever comes first.
  SHOAL_RETURN_IF_ERROR(engine.status().WithContext(me));
  // Each rank's cache may differ (a GPU's free memory): every rank learns if one cannot hold a context.
  const Status fits = CheckContextFits(**engine, cfg, l.model);
  if (size > 1) {
    SHOAL_RETURN_IF_ERROR(Agree((*engine)->group(), fits, "starting the engine", StartupDeadline(cfg)).WithContext(me));
  }
  SHOAL_RETURN_IF_ERROR(fits.WithContext(me));
  l.engine = std::move(*engine);
  ReportStarted(l);
  return ServeCoordinator(o, cfg, l);
}

Status RunWorker(const WorkerOptions& o) {
  if ((o.rank >= 0) != (o.world_size >= 0)) {
    return InvalidArgument("--rank and --world-size go together (a launch without MPI)");
  }
  if (o.world_size >= 0) {
    if (o.world_size < 1 || o.rank >= o.world_size) {
      return InvalidArgument("--rank " + std::to_string(o.rank) + " is not below --world-size " + std::to_string(o.world_size));
    }
    if (o.coordinator.empty()) {
      return InvalidArgument("--rank/--world-size (a launch without MPI) need --coordinator HOST:PORT: the coordinator "
                             "is where the ranks meet; --batch runs under mpirun");
    }
    return RunWithoutMpi(o);
  }
  if (o.batch.empty() == o.coordinator.empty()) {
    return InvalidArgument("give exactly one of --coordinator HOST:PORT (serve requests from `shoal serve`) and "
                           "--batch FILE (run a file of prompts without a coordinator)");
  }
  SHOAL_ASSIGN_OR_RETURN(auto runtime, comm::MpiRuntime::Init(nullptr, nullptr));
  Status st = RunGroup(o);
  FinishGroupCommand(st, "shoal worker");
  return st;
}

}  // namespace

void AddWorkerCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<WorkerOptions>();
  CLI::App* cmd = app.add_subcommand("worker", "One rank of an expert-parallel engine group (run under mpirun or srun)");
  cmd->add_option("--config", opts->config_path, "shoal YAML config (model, engine, KV cache, parallel settings)");
  cmd->add_option("--model", opts->model, "Hugging Face checkpoint directory (overrides model.path)")->default_str("model.path");
  cmd->add_option("--batch", opts->batch, "JSONL file of requests to run without a coordinator (read on rank 0)");
  cmd->add_option("--output", opts->output, "Where rank 0 writes the JSONL results (default: stdout)");
  cmd->add_option("--max-tokens", opts->max_tokens, "Default max_tokens for requests that give none")
      ->check(CLI::Range(1, kMaxNewTokens));
  cmd->add_option("--coordinator", opts->coordinator, "Control address HOST:PORT of the coordinator to serve");
  cmd->add_option("--group", opts->group, "Engine group name this job forms (default g0)");
  AddEngineFlags(cmd, &opts->flags, FlagSet::kWorker);
  cmd->add_option("--rank", opts->rank, "This rank, for a launch without MPI (with --world-size and --coordinator; "
                                        "e.g. srun's $SLURM_PROCID): the ranks meet at the coordinator")
      ->check(CLI::Range(0, 65535))
      ->default_str("none (MPI's)");
  cmd->add_option("--world-size", opts->world_size, "Ranks in this group, for a launch without MPI (e.g. $SLURM_NTASKS); "
                                                    "more than one needs --device cuda")
      ->check(CLI::Range(1, 65536))
      ->default_str("none (MPI's)");
  cmd->add_option("--connect-timeout", opts->connect_timeout_s, "Seconds to keep trying to reach the coordinator")
      ->check(CLI::Range(1, 24 * 3600));
  cmd->add_option("--threads", opts->threads,
                  "CPU threads per rank (overrides engine.threads; 0 = the node's cores shared among its ranks)")
      ->check(CLI::Range(0, 1024))
      ->default_str("engine.threads: 0");
  cmd->callback([opts, exit_code] {
    // Errors from inside the group were printed by FinishGroupCommand already.
    Status st = RunWorker(*opts);
    if (!st.ok() && !comm::MpiRuntime::WasInitialized()) {
      log::Error("%s", st.ToString().c_str());
    }
    if (!st.ok()) *exit_code = 1;
  });
}

}  // namespace shoal::cli
