// The OpenAI-compatible HTTP API, minus the networking: request bodies parsed and validated into
// structs, and response / SSE event bodies built from results.
//
// Users point existing OpenAI clients and load generators at shoal, so the shapes follow what vLLM's
// OpenAI server accepts and emits (which follows OpenAI): unknown request fields are ignored, `null`
// for an optional field means "default", and every rejection is an ApiError (HTTP 400 for bad input)
// whose `param` names the field at fault ("temperature", "messages[2].role", "stop"). Fields that
// OpenAI or vLLM define but shoal cannot honour (n > 1, logprobs, echo, logit_bias, structured output)
// are rejected rather than silently ignored, since ignoring them would change what the user gets.
//
// Nothing here throws. The server is expected to cap the body size (413) before parsing; the parsers
// reject bodies nested deeper than kMaxJsonDepth without building them.
//
// All builders dump strings with invalid UTF-8 replaced by U+FFFD, so a model emitting a partial
// multi-byte sequence never breaks a response. For streaming, the detokenizer should hold back an
// incomplete sequence until it completes; otherwise each half shows up as U+FFFD.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/sampling_params.h"
#include "common/status.h"

namespace shoal::api {

// Rendered as {"error":{"message","type","param","code"}}, OpenAI's shape.
struct ApiError {
  int http_status = 400;  // 400, 401, 404, 413, 429, 503, 500
  std::string message;
  std::string type = "invalid_request_error";  // "authentication_error", "not_found_error", "server_error", ...
  std::string param;                           // "" renders as null
  std::string code;  // "context_length_exceeded", "model_not_found", "invalid_api_key", "queue_full"; "" → null
};

// An HTTP 400 invalid_request_error naming `param`.
ApiError InvalidRequest(std::string message, std::string param, std::string code = "");
// Maps a shoal Status from deeper layers to an HTTP error: InvalidArgument/OutOfRange → 400,
// Unimplemented → 400 (a valid request shoal cannot serve, as vLLM answers), NotFound → 404,
// ResourceExhausted → 429, Unavailable → 503, DeadlineExceeded → 504, anything else → 500. `code`
// becomes the error's code ("" renders as null).
ApiError FromStatus(const Status& status, std::string code = "");

std::string ErrorBody(const ApiError& e);  // the JSON text, no trailing newline

// Bodies nested deeper than this ({ and [ levels) are rejected before parsing.
inline constexpr int kMaxJsonDepth = 64;
// Whether `body` nests deeper than kMaxJsonDepth (a bracket scan outside strings, before any parse).
bool ExceedsJsonDepth(std::string_view body);
// OpenAI's limit on stop sequences.
inline constexpr int kMaxStopSequences = 4;
// Total bytes of a request's stop sequences. Real ones are a few to a few hundred bytes; the cap bounds
// what matching them costs the coordinator per request in flight (the strings, a KMP table of 8 bytes
// per byte, and held-back text up to the longest) at about 0.6 MiB, whatever max_body_bytes allows.
inline constexpr size_t kMaxStopBytes = 64 << 10;
// stop_token_ids entries (the control protocol carries at most 1024 stop ids, EOS ids included).
inline constexpr size_t kMaxStopTokenIds = 512;
inline constexpr int64_t kMaxChoices = 128;

struct SamplingOptions {
  static SamplingParams OpenAiDefaults() {
    SamplingParams p;
    p.temperature = 1.0f;
    return p;
  }
  // -1 = not given: the server applies its default (vLLM: 16 for /v1/completions, the rest of the
  // context for chat). max_completion_tokens, chat's newer name, wins over max_tokens when both given.
  int max_tokens = -1;
  // What the worker draws with (common/sampling_params.h): temperature in [0, 2] (OpenAI's default 1),
  // top_p in (0, 1], penalties in [-2, 2], top_k (vLLM extension; -1 and 0 both mean off, stored as 0)
  // and the seed (any int64 or uint64; negative seeds keep their two's-complement bits).
  SamplingParams params = OpenAiDefaults();
  bool has_seed = false;  // without one the server draws a random seed per request
  std::vector<std::string> stop;   // ≤ kMaxStopSequences non-empty strings, ≤ kMaxStopBytes in all
  std::vector<int32_t> stop_token_ids;  // vLLM extension; ≥ 0 (the vocabulary bound is the server's check)
  bool ignore_eos = false;              // vLLM extension
  bool skip_special_tokens = true;      // vLLM extension
  // min_p [0, 1], repetition_penalty (0, 100], min_tokens ≥ 0 (≤ max_tokens when both are given) go in
  // params; logit_bias {"token id": bias in [-100, 100]} (≤ kMaxLogitBias entries) here, ids ascending.
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  // Which sampling fields the request set, so the model's generation_config.json defaults fill the
  // others (vLLM's --generation-config auto).
  enum Given : uint32_t { kTemperature = 1, kTopP = 2, kTopK = 4, kMinP = 8, kRepetitionPenalty = 16 };
  uint32_t given = 0;
  // -1: no logprobs; else each output token's logprob and this many alternatives (chat: logprobs
  // true + top_logprobs 0..20; completions: logprobs 0..20, vLLM's bound).
  int logprobs = -1;
  // -1: none; else vLLM's prompt_logprobs: each prompt token's logprob (after the first), vocabulary
  // rank and this many alternatives. Never with stream.
  int prompt_logprobs = -1;
  int n = 1;  // choices (1 … kMaxChoices, OpenAI's bound)
};

// One token's logprob and its top alternatives (most likely first), as the worker sent them. A prompt
// token's also has its vocabulary rank; the first prompt token has none (`none`, rendered null).
struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  int32_t rank = 0;
  bool none = false;
};

// vLLM's prompt_logprobs list: null for the first prompt token, then for each later one an object
// {"<id>": {"logprob", "rank", "decoded_token"}} holding the prompt token and its alternatives
// (the alternatives ranked 1, 2, … in order). `entries` are positions 1.. of the prompt.
std::string PromptLogprobsJson(std::span<const TokenLogprob> entries,
                               const std::function<std::string(int32_t)>& token_text);

// The `logprobs` object of a choice, as JSON text. Chat: {"content": [{token, logprob, bytes,
// top_logprobs: [{token, logprob, bytes}]}]}; completions: {tokens, token_logprobs, top_logprobs
// (one {text: logprob} object per token), text_offset}, *text_offset advancing by each token's text.
// token_bytes(id) is the token's text as the tokenizer decodes it alone (raw bytes: `bytes` carries
// them exactly, `token` as UTF-8 with U+FFFD for invalid bytes). -inf logprobs render as -9999.0, as vLLM's.
std::string LogprobsJson(bool chat, std::span<const TokenLogprob> entries,
                         const std::function<std::string(int32_t)>& token_bytes, int64_t* text_offset);

// POST /v1/completions.
struct CompletionRequest {
  std::string model;  // "" when absent (vLLM then serves its only model)
  // A string, or a non-empty list of token ids (each in [0, 2^31); the vocabulary bound is the
  // server's check). An array holding exactly one prompt is unwrapped; a batch of several is rejected.
  // An empty string is accepted (a tokenizer may add BOS); the server rejects it if nothing remains.
  std::variant<std::string, std::vector<int32_t>> prompt;
  SamplingOptions sampling;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // vLLM extension: prompt_token_ids / token_ids in the response
  bool echo = false;              // the prompt's text before the completion's (not with logprobs yet)
  std::string user;
};

// tool_choice: "auto" (calls parsed out of the model's own format, when it writes one), "none" (no calls
// parsed), "required" (at least one call, forced) or {"type": "function", "function": {"name": …}}
// (that function, forced). Forced calls: coordinator/forced_tool_call.h.
enum class ToolChoice { kAuto, kNone, kRequired, kNamed };

// POST /v1/chat/completions.
struct ChatRequest {
  std::string model;
  // A validated copy of the request's messages: a non-empty array of objects whose "role" is one of
  // system, user, assistant, tool, developer, and whose "content" is a string, or null/absent on an
  // assistant message that carries tool_calls. Content given as an array of {"type":"text","text"}
  // parts is flattened here to one string joined by "\n" (what vLLM does for string-format templates).
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;                 // null, or an array of objects; passed to the template
  ToolChoice tool_choice = ToolChoice::kAuto;   // kRequired and kNamed need non-empty tools
  std::string tool_choice_name;                 // kNamed: the function, one of tools'
  bool parallel_tool_calls = true;              // false: a forced "required" output holds one call
  nlohmann::ordered_json chat_template_kwargs;  // null or an object (vLLM extension)
  bool add_generation_prompt = true;
  SamplingOptions sampling;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  std::string user;
};

// Either the request or the error to send back (always HTTP 400 here). Never throw.
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body);
std::variant<ChatRequest, ApiError> ParseChatRequest(std::string_view body);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Non-streaming responses. `id` ("cmpl-<hex>" / "chatcmpl-<hex>") comes from the caller; `created` is
// unix seconds; `finish_reason` is "stop" or "length" ("" renders as null). With non-null id vectors
// (return_token_ids), completions put prompt_token_ids and token_ids in the choice; chat puts
// prompt_token_ids at the top level and token_ids in the choice, as vLLM does.
// One choice of a non-streamed response (null pointers render as absent or null).
struct ResponseChoice {
  std::string text;
  std::string finish_reason;
  const std::vector<int32_t>* token_ids = nullptr;
  const std::string* logprobs_json = nullptr;
  const std::string* reasoning = nullptr;                 // chat, with a reasoning parser
  const nlohmann::ordered_json* tool_calls = nullptr;     // chat, with parsed calls
  const std::string* prompt_logprobs_json = nullptr;      // completions (chat's is the response's)
};
// n choices (index 0 … n-1); `usage` counts the prompt once and every choice's tokens.
std::string CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                               std::span<const ResponseChoice> choices, const Usage& usage,
                               const std::vector<int32_t>* prompt_ids);
std::string ChatResponse(const std::string& id, int64_t created, const std::string& model,
                         std::span<const ResponseChoice> choices, const Usage& usage,
                         const std::vector<int32_t>* prompt_ids, const std::string* prompt_logprobs_json);

// One choice: the forms above with one ResponseChoice.
// prompt_logprobs_json (PromptLogprobsJson): completions put it in the choice, chat at the top level.
std::string CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish_reason, const Usage& usage,
                               const std::vector<int32_t>* prompt_ids, const std::vector<int32_t>* token_ids,
                               const std::string* logprobs_json = nullptr, const std::string* prompt_logprobs_json = nullptr);
// `reasoning` non-null (a reasoning parser is on): the message's reasoning_content, and an empty
// content renders as null, as vLLM does.
// tool_calls_json (ToolCallsJson): the message's tool_calls; content then renders null when empty.
std::string ChatResponse(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                         const std::string& finish_reason, const Usage& usage,
                         const std::vector<int32_t>* prompt_ids, const std::vector<int32_t>* token_ids,
                         const std::string* reasoning = nullptr, const std::string* logprobs_json = nullptr,
                         const nlohmann::ordered_json* tool_calls = nullptr,
                         const std::string* prompt_logprobs_json = nullptr);

// Streamed responses: coordinator/openai_stream.h.

// GET /v1/models: {"object":"list","data":[{id, object:"model", created, owned_by:"shoal", root,
// max_model_len}]} — root and max_model_len as vLLM lists them (the longest sequence served).
std::string ModelsResponse(const std::vector<std::string>& model_ids, int64_t created, int64_t max_model_len);

}  // namespace shoal::api
