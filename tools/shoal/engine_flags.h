// The vLLM-style flags that `shoal serve`, `shoal up` and `shoal worker` share, each overriding its
// YAML key (common/config.h) for this run:
//
//   --served-model-name NAME        model.name           (vLLM: the same flag)
//   --api-key KEY                   server.api_keys      (vLLM: the same; coordinator only)
//   --max-model-len N               engine.max_model_len (vLLM: the same)
//   --dtype auto|bfloat16|float16|float32   engine.dtype (vLLM: the same)
//   --device cpu|cuda|cuda:N        engine.device        (vLLM: --device)
//   --kv-cache-memory-fraction F    kv_cache.memory_fraction (vLLM: --gpu-memory-utilization)
//   --tensor-parallel-size T        parallel.attention_tp (vLLM: the same, with --enable-expert-parallel)
//   --generation-config auto|vllm   server.generation_config (vLLM: the same; coordinator only)
//   --reasoning-parser NAME         server.reasoning_parser (vLLM: the same; coordinator only)
//   --tool-call-parser NAME         server.tool_parser (vLLM: the same; coordinator only)
//
// `shoal up` passes the worker-side ones on to the worker groups it launches, so one command line
// configures the whole local cluster.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace shoal::cli {

struct EngineFlags {
  std::string served_model_name;
  std::string api_key;
  int64_t max_model_len = -1;
  std::string dtype;
  std::string device;
  double kv_cache_memory_fraction = -1;
  int tensor_parallel_size = 0;
  std::string generation_config;
  std::string reasoning_parser;
  std::string tool_call_parser;
};

// Which of the flags a subcommand takes.
enum class FlagSet {
  kCoordinator,  // shoal serve: the coordinator's (--served-model-name, --api-key, --max-model-len)
  kWorker,       // shoal worker: engine flags, no API key
  kAll,          // shoal up: both
};

void AddEngineFlags(CLI::App* cmd, EngineFlags* flags, FlagSet set);

// The flags given, over `cfg` (loaded from YAML or defaults); checks values the way the YAML parser
// does, naming the flag.
Status ApplyEngineFlags(const EngineFlags& flags, EngineConfig* cfg);

// The worker-side flags given, as command-line arguments for `shoal worker` (what shoal up forwards).
std::vector<std::string> WorkerArguments(const EngineFlags& flags);

}  // namespace shoal::cli
