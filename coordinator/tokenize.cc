// vLLM's tokenizer endpoints, with its request and response shapes:
//   POST /tokenize    {"prompt": str, "add_special_tokens": true} or {"messages": [...], chat fields}
//                     → {"count", "max_model_len", "tokens", "token_strs"}
//   POST /detokenize  {"tokens": [ids]} → {"prompt": text}
//   GET  /version     {"version": "<shoal's>"}
// The work runs on the text pool, like a generation request's tokenizing; the API key guards the
// first two as it guards /v1 (they run the server's tokenizer on client input).
#include "coordinator/tokenize.h"

#include <nlohmann/json.hpp>

#include "coordinator/generation.h"
#include "coordinator/http_util.h"

namespace shoal::coord {

namespace {

using json = nlohmann::json;

const std::vector<std::pair<std::string, std::string>> kNoHeaders;

api::ApiError BadRequest(std::string message, std::string param = "") {
  return {400, std::move(message), "invalid_request_error", std::move(param), ""};
}

// The body as a JSON object (the parser's depth limit applies first), or the 400.
std::variant<json, api::ApiError> ParseObject(std::string_view body) {
  if (api::ExceedsJsonDepth(body)) {
    return BadRequest("the request body nests deeper than " + std::to_string(api::kMaxJsonDepth) + " levels");
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return BadRequest("the request body must be a JSON object");
  return j;
}

std::variant<std::string, api::ApiError> CheckModel(const ServedModel& m, const json& j) {
  if (!j.contains("model") || j["model"].is_null()) return std::string();
  if (!j["model"].is_string()) return BadRequest("model must be a string", "model");
  const std::string name = j["model"].get<std::string>();
  if (name != m.name) {
    return api::ApiError{404, "the model '" + name + "' does not exist (this server serves '" + m.name + "')",
                         "not_found_error", "model", "model_not_found"};
  }
  return name;
}

std::variant<std::string, api::ApiError> Tokenize(const ServedModel& m, std::string_view body) {
  auto parsed = ParseObject(body);
  if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
  const json& j = std::get<json>(parsed);
  if (auto checked = CheckModel(m, j); std::holds_alternative<api::ApiError>(checked)) {
    return std::get<api::ApiError>(checked);
  }
  bool return_strs = false;
  if (j.contains("return_token_strs") && !j["return_token_strs"].is_null()) {
    if (!j["return_token_strs"].is_boolean()) return BadRequest("return_token_strs must be a boolean", "return_token_strs");
    return_strs = j["return_token_strs"].get<bool>();
  }
  std::vector<int32_t> ids;
  if (j.contains("messages")) {
    // The chat form: parsed and rendered exactly as /v1/chat/completions does.
    auto chat = api::ParseChatRequest(body);
    if (auto* e = std::get_if<api::ApiError>(&chat)) return *e;
    auto rendered = ChatPromptIds(m, std::get<api::ChatRequest>(chat));
    if (auto* e = std::get_if<api::ApiError>(&rendered)) return *e;
    ids = std::move(std::get<std::vector<int32_t>>(rendered));
  } else {
    if (!j.contains("prompt") || !j["prompt"].is_string()) {
      return BadRequest("give prompt (a string) or messages (a chat)", "prompt");
    }
    bool add_special = true;
    if (j.contains("add_special_tokens") && !j["add_special_tokens"].is_null()) {
      if (!j["add_special_tokens"].is_boolean()) {
        return BadRequest("add_special_tokens must be a boolean", "add_special_tokens");
      }
      add_special = j["add_special_tokens"].get<bool>();
    }
    StatusOr<std::vector<int32_t>> enc = m.tokenizer->Encode(j["prompt"].get_ref<const std::string&>(), add_special);
    if (!enc.ok()) return BadRequest(enc.status().message(), "prompt");
    ids = std::move(*enc);
  }
  json out = {{"count", ids.size()}, {"max_model_len", m.max_context}, {"tokens", ids}, {"token_strs", nullptr}};
  if (return_strs) {
    json strs = json::array();
    for (int32_t id : ids) strs.push_back(m.tokenizer->TokenText(id).value_or(""));
    out["token_strs"] = std::move(strs);
  }
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::variant<std::string, api::ApiError> Detokenize(const ServedModel& m, std::string_view body) {
  auto parsed = ParseObject(body);
  if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
  const json& j = std::get<json>(parsed);
  if (auto checked = CheckModel(m, j); std::holds_alternative<api::ApiError>(checked)) {
    return std::get<api::ApiError>(checked);
  }
  if (!j.contains("tokens") || !j["tokens"].is_array()) return BadRequest("tokens must be an array of token ids", "tokens");
  std::vector<int32_t> ids;
  ids.reserve(j["tokens"].size());
  for (size_t i = 0; i < j["tokens"].size(); ++i) {
    const json& v = j["tokens"][i];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= m.vocab ||
        !m.tokenizer->HasToken(static_cast<int32_t>(v.get<int64_t>()))) {
      return BadRequest("tokens[" + std::to_string(i) + "] is not a token id of this model's vocabulary", "tokens");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  StatusOr<std::string> text = m.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
  if (!text.ok()) return BadRequest(text.status().message(), "tokens");
  // Decode gives bytes; a sequence that ends inside a UTF-8 character renders U+FFFD, as vLLM's does.
  return json{{"prompt", *text}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

template <typename Work>
awaitable<bool> OnTextPool(HandlerEnv& env, Exchange& x, Work work) {
  const Request& req = x.req;
  auto run = [&env, &req, work]() -> awaitable<std::variant<std::string, api::ApiError>> {
    co_return work(env.model, std::string_view(req.body()));
  };
  awaitable<std::variant<std::string, api::ApiError>> on_pool =
      asio::co_spawn(env.text_pool, std::move(run), asio::use_awaitable);
  std::variant<std::string, api::ApiError> result = co_await std::move(on_pool);
  if (auto* e = std::get_if<api::ApiError>(&result)) co_return co_await WriteError(x.stream, req, *e);
  co_return co_await WriteResponse(x.stream, req, http::status::ok, "application/json",
                                   std::move(std::get<std::string>(result)), kNoHeaders);
}

}  // namespace

awaitable<bool> HandleTokenize(HandlerEnv& env, Exchange& x) { return OnTextPool(env, x, Tokenize); }
awaitable<bool> HandleDetokenize(HandlerEnv& env, Exchange& x) { return OnTextPool(env, x, Detokenize); }

awaitable<bool> HandleVersion(HandlerEnv& env, Exchange& x) {
  (void)env;
  std::string body = json{{"version", SHOAL_VERSION}}.dump();
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

}  // namespace shoal::coord
