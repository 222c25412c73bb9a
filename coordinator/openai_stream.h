// OpenAI's streamed responses (server-sent events), built straight into a caller's buffer.
//
// A completions stream is Content* (the last with the finish_reason) [Usage] Done; a chat stream is
// Role Content* Finish [Usage] Done — what OpenAI sends and vLLM copies. With include_usage every chunk
// carries "usage": null and the Usage chunk (choices []) comes last.
//
// Every chunk of a stream shares its id, object, created and model, so StreamWriter renders that
// part once and each chunk is a few appends: no JSON tree and, with a reused buffer, no allocation per
// token. Text is escaped as JSON with invalid UTF-8 replaced by U+FFFD, so a chunk is always valid
// JSON on one line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/openai_api.h"

namespace shoal::api {

struct StreamContext {
  enum class Endpoint { kCompletion, kChat };
  Endpoint endpoint = Endpoint::kCompletion;
  std::string id;
  int64_t created = 0;
  std::string model;
  bool include_usage = false;
};

class StreamWriter {
 public:
  explicit StreamWriter(const StreamContext& ctx);

  // Chat's first chunk: delta {role: "assistant", content: ""}; prompt_ids at the top level.
  void Role(std::string* out, const std::vector<int32_t>* prompt_ids = nullptr) const;
  // Text: completions' choice {text}, chat's delta {content}; token_ids (this chunk's tokens) in the
  // choice; prompt_ids (completions' first chunk) in the choice too. finish_reason "" renders as null.
  // logprobs_json (LogprobsJson of this chunk's tokens) fills the choice's logprobs; "" renders null.
  void Content(std::string* out, std::string_view text, std::string_view finish_reason = "",
               const std::vector<int32_t>* token_ids = nullptr, const std::vector<int32_t>* prompt_ids = nullptr,
               std::string_view logprobs_json = "") const;
  // Chat only, with a reasoning parser: delta {reasoning_content} (vLLM's field for the model's
  // <think> text); token_ids as in Content.
  void Reasoning(std::string* out, std::string_view text, const std::vector<int32_t>* token_ids = nullptr,
                 std::string_view logprobs_json = "") const;
  // Chat only: delta {tool_calls: calls_json} (a JSON array of {index, id, type, function: {name,
  // arguments}}), each call whole.
  void ToolCalls(std::string* out, std::string_view calls_json) const;
  // The end: completions' {text: "", finish_reason}, chat's {delta: {}, finish_reason}.
  void Finish(std::string* out, std::string_view finish_reason) const;
  // choices [] and the usage.
  void UsageChunk(std::string* out, const Usage& usage) const;

  // The choice (its "index") the following chunks are for: 0 … n-1.
  void set_choice(int index) { choice_ = index; }

 private:
  void AppendChoiceHead(std::string* out) const;  // head_, then `,"choices":[{"index":N,`
  int choice_ = 0;
  bool chat_;
  std::string head_;        // `data: {"id":...,"model":"..."` — shared by every chunk
  std::string usage_null_;  // `,"usage":null` or ""
};

// What vLLM sends when a stream fails mid-way: "data: {\"error\":{...}}\n\n".
std::string ErrorEvent(const ApiError& e);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// Appends s as a JSON string literal (quotes included): ", \ and control characters escaped, other
// characters as they are, invalid UTF-8 bytes as U+FFFD.
void AppendJsonString(std::string* out, std::string_view s);

// Single-chunk forms of StreamWriter (tests, fuzzing).
std::string CompletionChunk(const StreamContext& ctx, std::string_view text, std::string_view finish_reason,
                            const std::vector<int32_t>* prompt_ids = nullptr,
                            const std::vector<int32_t>* token_ids = nullptr);
std::string ChatRoleChunk(const StreamContext& ctx, const std::vector<int32_t>* prompt_ids = nullptr);
std::string ChatChunk(const StreamContext& ctx, std::string_view content, const std::vector<int32_t>* token_ids = nullptr);
std::string ChatFinishChunk(const StreamContext& ctx, std::string_view finish_reason);
std::string UsageChunk(const StreamContext& ctx, const Usage& usage);

}  // namespace shoal::api
