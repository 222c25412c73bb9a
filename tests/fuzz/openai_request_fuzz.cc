// libFuzzer target: both OpenAI request parsers (/v1/completions, /v1/chat/completions) must answer
// any byte string with a request or a renderable 400, never throw or crash, and every request they
// accept must satisfy the ranges the coordinator relies on. Accepted text is then pushed through the
// response builders, which must emit valid JSON whatever the bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "coordinator/openai_api.h"
#include "coordinator/openai_stream.h"

namespace {

using shoal::api::ApiError;

// A violated invariant is a parser bug: crash loudly so the fuzzer records the input.
void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckError(const ApiError& e) {
  Check(e.http_status == 400 || e.http_status == 500);
  Check(!e.message.empty());
  // The body must be valid JSON even when the message quotes invalid UTF-8 from the input.
  Check(nlohmann::json::accept(shoal::api::ErrorBody(e)));
}

void CheckSampling(const shoal::api::SamplingOptions& s) {
  Check(s.max_tokens == -1 || s.max_tokens >= 1);
  const shoal::SamplingParams& p = s.params;
  Check(std::isfinite(p.temperature) && p.temperature >= 0.0f && p.temperature <= 2.0f);
  Check(p.top_p > 0.0f && p.top_p <= 1.0f);
  Check(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f);
  Check(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f);
  Check(p.top_k >= 0);
  Check(s.stop.size() <= static_cast<size_t>(shoal::api::kMaxStopSequences));
  for (const auto& stop : s.stop) Check(!stop.empty());
  for (int32_t id : s.stop_token_ids) Check(id >= 0);
  Check(s.n >= 1 && s.n <= shoal::api::kMaxChoices);
  Check(s.logprobs >= -1 && s.logprobs <= shoal::kMaxTopLogprobs);
  Check(s.prompt_logprobs >= -1 && s.prompt_logprobs <= shoal::kMaxTopLogprobs);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  auto completion = shoal::api::ParseCompletionRequest(body);
  if (const auto* e = std::get_if<ApiError>(&completion)) {
    CheckError(*e);
  } else {
    const auto& r = std::get<shoal::api::CompletionRequest>(completion);
    CheckSampling(r.sampling);
    Check(!r.include_usage || r.stream);
    std::string text;
    if (const auto* ids = std::get_if<std::vector<int32_t>>(&r.prompt)) {
      Check(!ids->empty());
      for (int32_t id : *ids) Check(id >= 0);
    } else {
      text = std::get<std::string>(r.prompt);
    }
    // Echo the prompt bytes (valid UTF-8 here) and a cut-off tail back through the builders.
    const std::string body_text(body.substr(0, 64));
    Check(nlohmann::json::accept(shoal::api::CompletionResponse("cmpl-0", 0, r.model, text + body_text, "stop",
                                                                {1, 1}, nullptr, nullptr)));
    shoal::api::StreamContext ctx{shoal::api::StreamContext::Endpoint::kCompletion, "cmpl-0", 0, r.model,
                                  r.include_usage};
    const std::string event = shoal::api::CompletionChunk(ctx, body_text, "");
    Check(event.size() > 8 && nlohmann::json::accept(event.substr(6, event.size() - 8)));
  }

  auto chat = shoal::api::ParseChatRequest(body);
  if (const auto* e = std::get_if<ApiError>(&chat)) {
    CheckError(*e);
  } else {
    const auto& r = std::get<shoal::api::ChatRequest>(chat);
    CheckSampling(r.sampling);
    Check(r.messages.is_array() && !r.messages.empty());
    for (const auto& m : r.messages) {
      Check(m.is_object() && m.contains("role") && m["role"].is_string());
      // Content was flattened: a string, or null on an assistant message with tool calls.
      const auto it = m.find("content");
      Check(it == m.end() || it->is_string() || it->is_null());
    }
    Check(r.tools.is_null() || r.tools.is_array());
    Check(r.chat_template_kwargs.is_null() || r.chat_template_kwargs.is_object());
    // The validated messages must dump back (they go to the template renderer as JSON).
    Check(!r.messages.dump().empty());
  }
  return 0;
}
