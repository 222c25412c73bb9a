// `shoal generate`: load a checkpoint and generate in one process, for checking a model and measuring
// single-process decode speed.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "kernels/kernels.h"
#include "model/model_config.h"
#include "model/weights.h"
#include "tools/shoal/commands.h"
#include "tools/shoal/engine_factory.h"
#include "worker/generate.h"

namespace shoal::cli {

namespace {

struct GenerateOptions {
  std::string config_path;
  std::string model;
  std::vector<std::string> prompts;
  std::string stop_ids;
  std::string device;  // --device; empty: engine.device from the config
  std::string dtype;   // --dtype; empty: engine.dtype from the config
  int max_tokens = 16;
  int threads = -1;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return InvalidArgument(what + ": '" + item + "' is not a token id (comma-separated non-negative integers)");
    }
  }
  return ids;
}

Status RunGenerate(const GenerateOptions& o) {
  EngineConfig cfg;
  if (!o.config_path.empty()) {
    SHOAL_ASSIGN_OR_RETURN(cfg, LoadEngineConfig(o.config_path));
  }
  if (!o.model.empty()) cfg.model_path = o.model;
  if (o.threads >= 0) cfg.threads = o.threads;
  if (cfg.model_path.empty()) return InvalidArgument("no model: pass --model DIR or a --config with model.path");
  if (o.prompts.empty()) return InvalidArgument("no prompt: pass --prompt-ids 1,2,3 (repeat it for a batch)");

  SHOAL_ASSIGN_OR_RETURN(ModelConfig model, LoadModelConfig(cfg.model_path));
  SHOAL_ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(model, cfg.model_path));
  if (!o.dtype.empty()) cfg.dtype = o.dtype;
  StatusOr<std::optional<DType>> dtype = ParseWeightDtype(cfg.dtype);
  if (!dtype.ok()) return dtype.status().WithContext("engine.dtype / --dtype");
  SHOAL_ASSIGN_OR_RETURN(std::vector<int32_t> stop, ParseIds(o.stop_ids, "--stop-ids"));
  std::vector<GenerateRequest> requests;
  for (size_t i = 0; i < o.prompts.size(); ++i) {
    GenerateRequest r;
    SHOAL_ASSIGN_OR_RETURN(r.prompt, ParseIds(o.prompts[i], "--prompt-ids #" + std::to_string(i)));
    r.max_tokens = o.max_tokens;
    r.sampling.temperature = o.temperature;
    r.sampling.top_k = o.top_k;
    r.sampling.top_p = o.top_p;
    r.sampling.seed = o.seed + i;
    r.stop_ids = stop;
    requests.push_back(std::move(r));
  }
  SHOAL_ASSIGN_OR_RETURN(DeviceSpec device, ParseDevice(o.device.empty() ? cfg.device : o.device));
  if (*dtype && !device.cuda) CastMatrices(&weights, **dtype);  // the GPU engine uploads in bf16
  const size_t weight_bytes = weights.MatrixBytes();
  SHOAL_ASSIGN_OR_RETURN(auto engine, MakeStepEngine(device, model, std::move(weights), cfg, nullptr, nullptr));
  std::fprintf(stderr, "shoal generate: %s, %d layers, %d experts (top-%d), %.1f MB of weights, %s\n",
               ArchitectureName(model.arch), model.num_layers, model.num_experts, model.num_experts_per_tok,
               weight_bytes / 1e6, engine->Describe().c_str());

  GenerateStats stats;
  SHOAL_ASSIGN_OR_RETURN(auto results, Generate(*engine, requests, &stats));
  for (size_t i = 0; i < results.size(); ++i) {
    std::printf("prompt %zu:", i);
    for (int32_t t : results[i].tokens) std::printf(" %d", t);
    std::printf("  [%s]\n", results[i].finish_reason.c_str());
  }
  const double ms_per_step = stats.decode_steps ? 1e3 * stats.decode_seconds / stats.decode_steps : 0.0;
  const double tok_s = stats.decode_seconds > 0 ? stats.decode_tokens / stats.decode_seconds : 0.0;
  const double gbs = stats.decode_seconds > 0 ? stats.decode_weight_bytes / stats.decode_seconds / 1e9 : 0.0;
  std::printf("summary: %zu prompts, %lld prompt tokens in %.1f ms; %lld decode tokens in %lld steps: %.1f tok/s, "
              "%.2f ms/token, %.2f GB/s of weights read\n",
              results.size(), static_cast<long long>(stats.prompt_tokens), 1e3 * stats.prefill_seconds,
              static_cast<long long>(stats.decode_tokens), static_cast<long long>(stats.decode_steps), tok_s,
              ms_per_step, gbs);
  std::printf("step time: %s\n", FormatPhases(stats.phases, stats.prefill_seconds + stats.decode_seconds).c_str());
  return Status::Ok();
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate from a checkpoint in a single process");
  cmd->add_option("--config", opts->config_path, "shoal YAML config (engine and KV cache settings)");
  cmd->add_option("--model", opts->model, "Hugging Face checkpoint directory (overrides model.path)")->default_str("model.path");
  cmd->add_option("--prompt-ids", opts->prompts, "Prompt token ids, comma-separated; repeat for a batch")->take_all();
  cmd->add_option("--max-tokens", opts->max_tokens, "Tokens to generate per prompt")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", opts->temperature, "Sampling temperature; 0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", opts->top_k, "Keep the k most likely tokens; 0 = off")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--top-p", opts->top_p, "Nucleus sampling mass; 1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", opts->seed, "Sampling seed (prompt i uses seed + i)");
  cmd->add_option("--stop-ids", opts->stop_ids, "Token ids that end generation, comma-separated");
  cmd->add_option("--threads", opts->threads, "CPU threads (overrides engine.threads; 0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->default_str("engine.threads: 0");
  cmd->add_option("--device", opts->device, "cpu, cuda or cuda:N (overrides engine.device; cuda needs a build with CUDA)")
      ->default_str("engine.device: cpu");
  cmd->add_option("--dtype", opts->dtype, "Weights in memory: auto, bfloat16, float16 or float32 (overrides engine.dtype)")
      ->default_str("engine.dtype: auto");
  cmd->callback([opts, exit_code] {
    Status st = RunGenerate(*opts);
    if (!st.ok()) {
      std::fprintf(stderr, "shoal generate: error: %s\n", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace shoal::cli
