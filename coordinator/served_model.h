// The model the coordinator serves, as the HTTP side needs it: its name, tokenizer, chat template,
// special tokens and limits. Loaded once by Coordinator::Create and read-only afterwards, so every
// thread may read it (Tokenizer and jinja::Template are safe to use concurrently).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "coordinator/openai_api.h"
#include "coordinator/reasoning.h"
#include "coordinator/tool_parser.h"
#include "model/jinja/template.h"
#include "model/tokenizer.h"

namespace shoal::coord {

struct ServedModel {
  std::string name;  // model.name, or the directory's name
  std::unique_ptr<Tokenizer> tokenizer;
  std::shared_ptr<const jinja::Template> chat_template;  // null without tokenizer_config.json's chat_template
  std::string bos_token, eos_token;                      // texts, for the template
  std::vector<int32_t> eos_ids;  // from generation_config.json, config.json and the EOS token, as generate() stops
  int64_t max_context = 0;       // max_position_embeddings, or engine.max_model_len when set (shorter)
  int32_t vocab = 0;             // the model's vocab_size (≥ the tokenizer's)
  int num_layers = 0, num_experts = 0;  // config.json's (the expert load statistics' shape)
  std::vector<bool> layer_is_moe;       // [num_layers] which layers route to experts (rebalancing)
  int expert_groups = 1;                // DeepSeek-V3's n_group (the planner keeps groups inside a node)
  int64_t created_unix = 0;      // for /v1/models
  // generation_config.json's sampling defaults (temperature, top_p, top_k, min_p,
  // repetition_penalty), applied to requests that do not set them (server.generation_config: auto,
  // vLLM's default); `given` says which it has (api::SamplingOptions::Given bits). Empty with
  // server.generation_config: vllm.
  ReasoningFormat reasoning = ReasoningFormat::kNone;  // server.reasoning_parser
  ToolFormat tools = ToolFormat::kNone;                // server.tool_parser (auto: from the chat template)
  SamplingParams sampling_defaults;
  uint32_t sampling_defaults_given = 0;

  // Reads cfg.model_path: config.json, the tokenizer, the chat template (parsed now, so a broken one
  // fails the start), the EOS ids. Errors name the file.
  static StatusOr<ServedModel> Load(const EngineConfig& cfg);

  // The request's unset sampling fields from sampling_defaults.
  void ApplySamplingDefaults(api::SamplingOptions* s) const;
};

}  // namespace shoal::coord
