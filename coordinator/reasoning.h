// Reasoning output separated from the answer, as vLLM's --reasoning-parser does: a reasoning model's
// `<think>…</think>` becomes the message's `reasoning_content`, the rest its `content`, streamed or not.
//
//   qwen3        (Qwen3, QwQ) the output may open with <think>; text inside it up to </think> is
//                reasoning. Output that does not open with <think> (enable_thinking: false) is all
//                content.
//   deepseek_r1  (DeepSeek-R1 and its distills) the chat template opens <think> in the prompt, so the
//                output starts inside it (a leading <think> is dropped if the model writes one): text up
//                to </think> is reasoning.
// Reasoning never closed (the request ran out of tokens while thinking) stays reasoning_content.
// The same state machine serves streamed and whole responses, so both split identically; a chunk
// boundary inside a tag is held back until the tag is decided.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace shoal::coord {

enum class ReasoningFormat { kNone, kQwen3, kDeepSeekR1 };

// "" or "none" → kNone, "qwen3", "deepseek_r1"; anything else InvalidArgument naming the choices.
StatusOr<ReasoningFormat> ParseReasoningFormat(std::string_view name);

class ReasoningSplitter {
 public:
  explicit ReasoningSplitter(ReasoningFormat format);
  // Appends what `text` settles to *reasoning and *content (either may stay empty).
  void Feed(std::string_view text, std::string* reasoning, std::string* content);
  // The end of the output: whatever was held back goes where it stands.
  void Finish(std::string* reasoning, std::string* content);

 private:
  enum class State { kStart, kReasoning, kContent };
  State state_;
  bool deepseek_ = false;
  std::string held_;  // a possible partial tag
};

}  // namespace shoal::coord
