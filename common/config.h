// shoal's own YAML configuration: parsed into structs and validated once, at load.
//
// Every error names the file, the line and the key (e.g. "configs/x.yaml:7: kv_cache.block_size: must
// be a power of two in [1, 1024], got 12"): unknown keys, wrong types, out-of-range values and paths
// that do not exist are all rejected here, so nothing later has to re-check them.
//
// Schema (all sections and keys optional; defaults below):
//   model:
//     path: DIR            # HF checkpoint directory; relative paths are relative to the YAML file
//     name: NAME           # the model id clients use (default: the directory's name)
//   engine:
//     threads: 0           # CPU kernel threads; 0 = every online core (shoal worker: the node's cores
//                          # divided among the ranks on that node)
//     max_num_seqs: 64     # live sequences at once (Engine::NewSequence refuses more)
//     max_step_tokens: 8192  # tokens per forward step: longer prompts are prefilled in chunks, which
//                            # also bounds how long group peers wait for each other in one step
//     device: cpu          # cpu, cuda or cuda:N (the GPU engine, in a build with CUDA; cuda alone
//                          # picks the rank's local index on its node; groups exchange over NCCL)
//     max_model_len: 0     # longest sequence (prompt + output) served; 0 = the model's
//                          # max_position_embeddings. A KV cache that cannot hold one sequence this
//                          # long is a start-up error; with 0 the usable context is whatever the cache
//                          # holds (logged at start, and in /v1/models)
//     dtype: auto          # weights in memory: auto (the checkpoint's), bfloat16, float16 or float32;
//                          # FP8 checkpoints keep their FP8 matrices (the GPU engine computes in bf16)
//     experimental_gpu_kernels: false  # GPU small steps (≤ 16 tokens): tensor-core skinny GEMMs, a
//                          # fused attention prologue, one-launch routing, split attention — written
//                          # but not yet run on a GPU (docs/architecture.md); off by default
//   kv_cache:
//     block_size: 16       # tokens per KV block (power of two, 1..1024)
//     memory_mib: 256      # KV cache size per process
//     memory_fraction: 0   # > 0 (up to 1): size the cache instead so that this rank's weights + KV
//                          # take this share of its memory — its GPU's for cuda (like vLLM's
//                          # --gpu-memory-utilization), for cpu the host's (or cgroup's) RAM divided by
//                          # the ranks on the node; overrides memory_mib
//     num_blocks: 0        # > 0: exactly this many blocks instead (overrides memory_mib)
//   server:                # the coordinator (shoal serve / shoal up)
//     host: 127.0.0.1      # HTTP bind address; 0.0.0.0 only when configured
//     port: 8000           # HTTP port (0 = any free port)
//     control_host: 127.0.0.1  # where workers connect (the control plane)
//     control_port: 0      # 0 = any free port (shoal up tells its workers)
//     control_token: ""    # join secret for workers (or SHOAL_CONTROL_TOKEN); required off loopback
//     api_keys: []         # when non-empty (or SHOAL_API_KEY is set) every /v1 request needs one
//     max_body_bytes: 1048576   # larger request bodies get 413
//     max_queued_requests: 256  # requests waiting beyond what the workers hold; more get 429
//     heartbeat_ms: 500          # worker heartbeat period
//     heartbeat_timeout_ms: 3000 # a worker silent this long is dead: its group goes unready
//     step_timeout_ms: 300000    # a worker that heartbeats but finishes no step this long while it
//                                # has requests is hung: its group goes unready
//     max_connections: 4096      # open HTTP connections at once; more get 503 and are closed
//     max_control_connections: 4096  # open control-plane connections (worker ranks, rendezvous)
//     keepalive_timeout_s: 30    # an HTTP connection idle (or still sending its header) this long is closed
//     request_timeout_s: 0       # a non-streamed request not finished after this gets 504 (0: no limit)
//     expert_load_window_s: 60   # tokens per (layer, expert) over this window: GET /v1/expert_load
//     rebalance_threshold: 0     # > 0: when a group's rank imbalance in the window passes this (e.g.
//                                # 1.2), its experts are re-placed from the measured load (0: only
//                                # POST /v1/expert_load/rebalance does it)
//     rebalance_interval_s: 600  # at least this long between two automatic rebalances of a group
//     rebalance_min_tokens: 20000  # the window must hold this many routed tokens to plan from
//     rebalance_min_gain: 0.05   # and the plan must lower the imbalance by this fraction
//     group_forget_s: 60         # a group whose ranks are all gone is forgotten after this (so /ready
//                                # stops waiting for a group that is not coming back)
//     migration_timeout_s: 120   # a failed group's requests wait this long for another group (or the
//                                # same one restarted) to continue them token-exact; 0: fail at once
//     http_threads: 0            # threads serving HTTP sessions (0 = a quarter of the cores, 1..8)
//     text_threads: 0            # threads rendering chat templates and tokenizing prompts (0 = 2)
//     metrics_vllm_names: false  # GET /metrics also under vLLM's names (vllm:num_requests_running, …)
//                                # so vLLM's Grafana dashboard reads shoal unchanged
//   cluster:               # what `shoal up` starts on this machine
//     groups: 1
//     ranks_per_group: 2
//     max_restarts: 5      # a failed group is relaunched (backoff 1, 2, 4 … 30 s) at most this many
//     restart_window_s: 600  # times within this window, then left down (0 restarts: never relaunched)
//   parallel:              # expert-parallel groups (shoal worker under mpirun/srun)
//     collective_timeout_ms: 60000  # a collective whose peers have not all joined by then fails
//                                   # (DeadlineExceeded naming them) instead of hanging
//     startup_timeout_s: 600        # the same for the first barrier, which waits for every rank's load
//     shared_memory_exchange: false # ranks on one host exchange expert rows through a shared window
//                                   # (one copy per row; 2 · max_step_tokens · top_k rows per rank)
//     redundant_experts: 0          # extra expert slots per MoE layer when a group is rebalanced:
//                                   # the hottest experts get copies (DeepSeek's EPLB: 32 over EP144)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace shoal {

// engine.device / --device: "cpu", "cuda" or "cuda:N".
struct DeviceSpec {
  bool cuda = false;
  int index = -1;  // cuda without an index: the rank's local index on its node
};
StatusOr<DeviceSpec> ParseDevice(const std::string& text);

// engine.dtype / --dtype: "auto" (nullopt: keep the checkpoint's), "bfloat16"/"bf16", "float16"/"fp16"/
// "half", "float32"/"fp32"/"float".
StatusOr<std::optional<DType>> ParseWeightDtype(const std::string& text);

struct EngineConfig {
  std::string source;      // the YAML file this came from ("" when built in code)
  std::string model_path;  // absolute or relative to the working directory after loading
  int threads = 0;
  int max_num_seqs = 64;
  int max_step_tokens = 8192;
  std::string device = "cpu";  // engine.device, checked by ParseDevice
  bool experimental_gpu_kernels = false;  // engine.experimental_gpu_kernels
  int64_t max_model_len = 0;    // engine.max_model_len; 0 = the model's max_position_embeddings
  std::string dtype = "auto";   // engine.dtype, checked by ParseWeightDtype
  double kv_memory_fraction = 0;  // kv_cache.memory_fraction; 0 = kv_cache.memory_mib
  int kv_block_size = 16;
  int64_t kv_cache_mib = 256;
  int64_t kv_cache_blocks = 0;  // kv_cache.num_blocks: overrides memory_mib when > 0 (tests, tuning)
  int64_t collective_timeout_ms = 60000;
  int64_t startup_timeout_s = 600;
  // parallel.attention_tp: ranks per tensor-parallel replica (attention heads, dense MLPs and the
  // vocabulary split over them; experts stay expert-parallel over the whole group). 1: every rank
  // is its own data-parallel replica.
  int attention_tp = 1;
  // parallel.shared_memory_exchange: the CPU engine's expert exchange between ranks on one host
  // through an MPI-3 shared window (comm/expert_exchange.h); groups across hosts keep messages.
  bool shared_memory_exchange = false;
  // parallel.redundant_experts: extra expert slots per MoE layer over a group when it is rebalanced
  // (hot experts get copies); rounded up so that every rank has as many slots.
  int redundant_experts = 0;

  std::string model_name;  // model.name; ServedModelName() applies the default

  // server: and cluster: — read by the coordinator and `shoal up`; the worker ignores them.
  struct Server {
    std::string host = "127.0.0.1";
    int port = 8000;
    std::string control_host = "127.0.0.1";
    int control_port = 0;
    std::vector<std::string> api_keys;
    // Secret a worker must present to join (also SHOAL_CONTROL_TOKEN). Required when control_host is
    // not a loopback address; `shoal up` makes a random one for its own workers.
    std::string control_token;
    int64_t max_body_bytes = 1 << 20;
    int max_queued_requests = 256;
    int heartbeat_ms = 500;
    int heartbeat_timeout_ms = 3000;
    int step_timeout_ms = 300000;
    int max_connections = 4096;          // open HTTP connections; more are answered 503 and closed
    int max_control_connections = 4096;  // open control-plane connections (workers, rendezvous)
    int keepalive_timeout_s = 30;        // an idle HTTP connection (or one sending a header) is closed after this
    int request_timeout_s = 0;           // a non-streamed request unfinished after this gets 504 (0 = no limit)
    int group_forget_s = 60;             // a broken group with no live rank is forgotten after this
    int expert_load_window_s = 60;       // GET /v1/expert_load and the imbalance gauge cover this many seconds
    // Rebalancing (coordinator/expert_rebalance.h): automatic above this rank imbalance (0: off), at
    // most once per interval, from a window of at least min_tokens, when it gains at least min_gain.
    double rebalance_threshold = 0;
    int rebalance_interval_s = 600;
    int64_t rebalance_min_tokens = 20000;
    double rebalance_min_gain = 0.05;
    // A failed group's requests wait this long for a group to take them over (token-exact), then get
    // the 503 they would have had at once; 0 turns migration off.
    int migration_timeout_s = 120;
    int http_threads = 0;                // HTTP session threads; 0 = a quarter of the cores, 1 to 8
    int text_threads = 0;                // threads for templates and tokenizing; 0 = 2
    bool metrics_vllm_names = false;     // /metrics also under vLLM's names (vllm:…), for its dashboards
    // "auto": generation_config.json's sampling defaults apply to requests that do not set them (vLLM's
    // --generation-config auto); "vllm": they are ignored (OpenAI's defaults only).
    std::string generation_config = "auto";
    // vLLM's --reasoning-parser: "" (none), qwen3 or deepseek_r1 — <think>…</think> in a chat's output
    // becomes reasoning_content (coordinator/reasoning.h).
    std::string reasoning_parser;
    // vLLM's --tool-call-parser: auto (the chat template's format), none, hermes, mistral, llama3_json
    // or deepseek_v3 — a chat with tools gets the model's calls as tool_calls (coordinator/tool_parser.h).
    std::string tool_parser = "auto";
  } server;
  struct Cluster {
    int groups = 1;
    int ranks_per_group = 2;
    // shoal up relaunches a failed group after 1, 2, 4 … 30 s; after max_restarts relaunches within
    // restart_window_s it leaves the group down (GET /v1/cluster says so).
    int max_restarts = 5;
    int restart_window_s = 600;
  } cluster;

  // Thread count after resolving 0 to the number of online cores.
  int ResolvedThreads() const;
};

// The effective configuration as YAML in this file's schema (every key, defaults included): what
// `shoal serve|up --print-config` shows, and what ParseEngineConfig reads back to the same values.
std::string EngineConfigYaml(const EngineConfig& cfg);

// model.name, or the model directory's name.
std::string ServedModelName(const EngineConfig& cfg);

// Loads and validates `path`. A `model.path` that does not exist is an error.
StatusOr<EngineConfig> LoadEngineConfig(const std::string& path);

// Same, from YAML text; `source_name` is used in messages and `base_dir` resolves relative paths.
StatusOr<EngineConfig> ParseEngineConfig(const std::string& yaml_text, const std::string& source_name,
                                         const std::string& base_dir);

}  // namespace shoal
