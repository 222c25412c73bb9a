#include "coordinator/served_model.h"

#include <algorithm>
#include <chrono>
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

}  // namespace

StatusOr<ServedModel> ServedModel::Load(const EngineConfig& cfg) {
  if (cfg.model_path.empty()) return InvalidArgument("no model: the config needs model.path (or pass --model)");
  ServedModel m;
  m.name = ServedModelName(cfg);
  SHOAL_ASSIGN_OR_RETURN(ModelConfig mc, LoadModelConfig(cfg.model_path));
  SHOAL_RETURN_IF_ERROR(LimitContext(cfg.max_model_len, cfg.model_path, &mc));
  m.max_context = mc.max_position_embeddings;
  m.vocab = mc.vocab_size;
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
