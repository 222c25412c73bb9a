#include "coordinator/served_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/model_config.h"

namespace shoal::coord {

namespace {

// EOS ids from config.json and generation_config.json (an int or a list in either; a multimodal
// config.json keeps them in text_config), so generation stops where transformers' generate() would.
void AddEosIds(const std::string& path, std::vector<int32_t>* ids) {
  std::ifstream in(path);
  if (!in) return;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && !j.contains("eos_token_id") && j.contains("text_config") && j["text_config"].is_object()) {
    j = nlohmann::json(j["text_config"]);
  }
  if (!j.is_object() || !j.contains("eos_token_id")) return;
  auto add = [&](const nlohmann::json& v) {
    if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (1 << 30)) {
      const int32_t id = v.get<int32_t>();
      if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
    }
  };
  const auto& e = j["eos_token_id"];
  if (e.is_array()) {
    for (const auto& v : e) add(v);
  } else {
    add(e);
  }
}

// generation_config.json's sampling defaults, as vLLM reads them (keys absent, null or out of range
// are left to OpenAI's defaults; a file that does not parse is an error naming it).
Status ReadSamplingDefaults(const std::string& path, SamplingParams* p, uint32_t* given) {
  std::ifstream in(path);
  if (!in) return Status::Ok();
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(path + ": not a JSON object");
  using G = api::SamplingOptions;
  auto number = [&](const char* key, double lo, double hi, bool lo_open, float* out, uint32_t bit) {
    if (!j.contains(key) || !j[key].is_number()) return;
    const double v = j[key].get<double>();
    if (!std::isfinite(v) || (lo_open ? v <= lo : v < lo) || v > hi) return;
    *out = static_cast<float>(v);
    *given |= bit;
  };
  number("temperature", 0.0, 2.0, false, &p->temperature, G::kTemperature);
  number("top_p", 0.0, 1.0, true, &p->top_p, G::kTopP);
  number("min_p", 0.0, 1.0, false, &p->min_p, G::kMinP);
  number("repetition_penalty", 0.0, 100.0, true, &p->repetition_penalty, G::kRepetitionPenalty);
  if (j.contains("top_k") && j["top_k"].is_number_integer()) {
    const int64_t k = j["top_k"].get<int64_t>();
    if (k >= -1 && k <= (int64_t{1} << 30)) {
      p->top_k = k <= 0 ? 0 : static_cast<int32_t>(k);
      *given |= G::kTopK;
    }
  }
  return Status::Ok();
}

}  // namespace

void ServedModel::ApplySamplingDefaults(api::SamplingOptions* s) const {
  using G = api::SamplingOptions;
  const uint32_t use = sampling_defaults_given & ~s->given;
  if (use & G::kTemperature) s->params.temperature = sampling_defaults.temperature;
  if (use & G::kTopP) s->params.top_p = sampling_defaults.top_p;
  if (use & G::kTopK) s->params.top_k = sampling_defaults.top_k;
  if (use & G::kMinP) s->params.min_p = sampling_defaults.min_p;
  if (use & G::kRepetitionPenalty) s->params.repetition_penalty = sampling_defaults.repetition_penalty;
}

StatusOr<ServedModel> ServedModel::Load(const EngineConfig& cfg) {
  if (cfg.model_path.empty()) return InvalidArgument("no model: the config needs model.path (or pass --model)");
  ServedModel m;
  m.name = ServedModelName(cfg);
  SHOAL_ASSIGN_OR_RETURN(ModelConfig mc, LoadModelConfig(cfg.model_path));
  SHOAL_RETURN_IF_ERROR(LimitContext(cfg.max_model_len, cfg.model_path, &mc));
  m.max_context = mc.max_position_embeddings;
  m.vocab = mc.vocab_size;
  m.num_layers = mc.num_layers;
  m.num_experts = mc.num_experts;
  m.layer_is_moe = mc.layer_is_moe;
  m.expert_groups = mc.router_grouped_sigmoid && mc.n_group > 0 ? mc.n_group : 1;
  SHOAL_ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::Load(cfg.model_path));
  if (m.tokenizer->vocab_size() > m.vocab) {
    return InvalidArgument(cfg.model_path + ": the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
                           " tokens, more than the model's vocab_size " + std::to_string(m.vocab));
  }
  if (!m.tokenizer->chat_template().empty()) {
    // Named without the directory: template errors (raise_exception) go back to clients.
    auto parsed = jinja::Template::Parse(m.tokenizer->chat_template(), "chat_template");
    if (!parsed.ok()) return parsed.status().WithContext(cfg.model_path + "/tokenizer_config.json");
    m.chat_template = std::move(*parsed);
  }
  m.bos_token = m.tokenizer->bos_token().value_or("");
  m.eos_token = m.tokenizer->eos_token().value_or("");
  AddEosIds(cfg.model_path + "/generation_config.json", &m.eos_ids);
  SHOAL_ASSIGN_OR_RETURN(m.reasoning, ParseReasoningFormat(cfg.server.reasoning_parser));
  SHOAL_ASSIGN_OR_RETURN(m.tools, ParseToolFormat(cfg.server.tool_parser, m.tokenizer->chat_template()));
  if (cfg.server.generation_config == "auto") {
    SHOAL_RETURN_IF_ERROR(ReadSamplingDefaults(cfg.model_path + "/generation_config.json", &m.sampling_defaults,
                                               &m.sampling_defaults_given));
  }
  AddEosIds(cfg.model_path + "/config.json", &m.eos_ids);
  if (!m.eos_token.empty()) {
    if (auto id = m.tokenizer->TokenId(m.eos_token);
        id && std::find(m.eos_ids.begin(), m.eos_ids.end(), *id) == m.eos_ids.end()) {
      m.eos_ids.push_back(*id);
    }
  }
  m.created_unix =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  return m;
}

}  // namespace shoal::coord
