#include "tools/shoal/engine_flags.h"

#include <cstdio>

namespace shoal::cli {

void AddEngineFlags(CLI::App* cmd, EngineFlags* f, FlagSet set) {
  cmd->add_option("--served-model-name", f->served_model_name,
                  "The model id clients send and /v1/models lists (overrides model.name)")
      ->default_str("model.name, else the model directory's name");
  if (set != FlagSet::kWorker) {
    cmd->add_option("--api-key", f->api_key,
                    "Require this bearer key on /v1 requests (adds to server.api_keys; SHOAL_API_KEY keeps it off "
                    "the process list)");
  }
  cmd->add_option("--max-model-len", f->max_model_len,
                  "Longest sequence (prompt + output) served; a KV cache that cannot hold one is a start-up error "
                  "(overrides engine.max_model_len; default: the model's max_position_embeddings)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 26))
      ->default_str("engine.max_model_len");
  if (set != FlagSet::kWorker) {
    cmd->add_option("--generation-config", f->generation_config,
                    "auto: the model's generation_config.json sampling defaults (temperature, top_p, top_k, min_p, "
                    "repetition_penalty) apply to requests that do not set them; vllm: ignore them (overrides "
                    "server.generation_config)")
        ->check(CLI::IsMember({"auto", "vllm"}))
        ->default_str("server.generation_config: auto");
    cmd->add_option("--reasoning-parser", f->reasoning_parser,
                    "Separate a reasoning model's <think>...</think> into reasoning_content: qwen3 or deepseek_r1 "
                    "(overrides server.reasoning_parser)")
        ->check(CLI::IsMember({"none", "qwen3", "deepseek_r1"}))
        ->default_str("server.reasoning_parser: none");
    cmd->add_option("--tool-call-parser", f->tool_call_parser,
                    "How a chat with tools finds the model's calls in its output: auto (the chat template's format), "
                    "none, hermes, mistral, llama3_json or deepseek_v3 (overrides server.tool_parser)")
        ->check(CLI::IsMember({"auto", "none", "hermes", "mistral", "llama3_json", "deepseek_v3"}))
        ->default_str("server.tool_parser: auto");
  }
  if (set == FlagSet::kCoordinator) return;
  cmd->add_option("--dtype", f->dtype,
                  "Weights in memory: auto (the checkpoint's), bfloat16, float16 or float32 (overrides engine.dtype)")
      ->default_str("engine.dtype: auto");
  cmd->add_option("--device", f->device,
                  "cpu, cuda or cuda:N (overrides engine.device): the GPU engine needs a build with CUDA")
      ->default_str("engine.device: cpu");
  cmd->add_option("--kv-cache-memory-fraction", f->kv_cache_memory_fraction,
                  "Size the KV cache so that each rank's weights + KV take this share of its memory: its GPU's, or "
                  "the node's RAM divided by its ranks (overrides kv_cache.memory_fraction and memory_mib; like "
                  "vLLM's --gpu-memory-utilization)")
      ->check(CLI::Range(0.0, 1.0))
      ->default_str("kv_cache.memory_fraction: 0 (off)");
  cmd->add_option("--tensor-parallel-size,--attention-tp", f->tensor_parallel_size,
                  "Ranks per tensor-parallel replica: attention heads, dense MLPs and the vocabulary split over T "
                  "ranks of a node, experts still spread over the whole group (overrides parallel.attention_tp; "
                  "must divide the group's ranks)")
      ->check(CLI::Range(1, 1024))
      ->default_str("parallel.attention_tp: 1");
}

Status ApplyEngineFlags(const EngineFlags& f, EngineConfig* cfg) {
  if (!f.served_model_name.empty()) {
    if (f.served_model_name.size() > 256) return InvalidArgument("--served-model-name: longer than 256 characters");
    cfg->model_name = f.served_model_name;
  }
  if (!f.api_key.empty()) cfg->server.api_keys.push_back(f.api_key);
  if (f.max_model_len > 0) cfg->max_model_len = f.max_model_len;
  if (!f.dtype.empty()) {
    SHOAL_RETURN_IF_ERROR(ParseWeightDtype(f.dtype).status().WithContext("--dtype"));
    cfg->dtype = f.dtype;
  }
  if (!f.device.empty()) {
    SHOAL_RETURN_IF_ERROR(ParseDevice(f.device).status().WithContext("--device"));
    cfg->device = f.device;
  }
  if (f.kv_cache_memory_fraction >= 0) {
    if (f.kv_cache_memory_fraction == 0) return InvalidArgument("--kv-cache-memory-fraction: must be above 0");
    cfg->kv_memory_fraction = f.kv_cache_memory_fraction;
  }
  if (f.tensor_parallel_size > 0) cfg->attention_tp = f.tensor_parallel_size;
  if (!f.generation_config.empty()) cfg->server.generation_config = f.generation_config;
  if (!f.tool_call_parser.empty()) cfg->server.tool_parser = f.tool_call_parser;
  if (!f.reasoning_parser.empty()) cfg->server.reasoning_parser = f.reasoning_parser == "none" ? "" : f.reasoning_parser;
  return Status::Ok();
}

std::vector<std::string> WorkerArguments(const EngineFlags& f) {
  std::vector<std::string> args;
  auto add = [&](const char* flag, const std::string& value) {
    args.emplace_back(flag);
    args.push_back(value);
  };
  if (!f.served_model_name.empty()) add("--served-model-name", f.served_model_name);
  if (f.max_model_len > 0) add("--max-model-len", std::to_string(f.max_model_len));
  if (!f.dtype.empty()) add("--dtype", f.dtype);
  if (!f.device.empty()) add("--device", f.device);
  if (f.kv_cache_memory_fraction >= 0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", f.kv_cache_memory_fraction);
    add("--kv-cache-memory-fraction", buf);
  }
  if (f.tensor_parallel_size > 0) add("--tensor-parallel-size", std::to_string(f.tensor_parallel_size));
  return args;
}

}  // namespace shoal::cli
