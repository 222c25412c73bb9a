// Batch files for `shoal worker --batch`: prompts in, tokens out, one JSON object per line (JSONL).
//
// Input line (fields other than prompt_ids optional; unknown fields are errors):
//   {"id": "q1", "prompt_ids": [17, 42, 256], "max_tokens": 16, "temperature": 0.0, "top_k": 0,
//    "top_p": 1.0, "seed": 0, "stop_ids": [2]}
// id: a string or an integer (default: the line number). Blank lines are skipped.
// Output line, in input order:
//   {"id": "q1", "prompt_tokens": 3, "tokens": [5, 9, ...], "finish_reason": "length"}
// The parser is bounds-checked for untrusted input: every error names the source, the line and the
// field; sizes are capped (kMaxBatchFileBytes, kMaxBatchRequests, kMaxPromptTokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/generate.h"

namespace shoal {

inline constexpr int64_t kMaxBatchFileBytes = int64_t{1} << 30;
inline constexpr int64_t kMaxBatchRequests = int64_t{1} << 20;
inline constexpr int64_t kMaxPromptTokens = int64_t{1} << 22;
inline constexpr int kMaxNewTokens = 1 << 20;

struct BatchRequest {
  std::string id_json;  // the id as JSON text ("\"q1\"" or "7"), echoed in the output
  GenerateRequest request;
};

// `vocab_size` bounds token ids; `default_max_tokens` applies where a line has no max_tokens; a
// request whose prompt plus max_tokens exceeds `max_context` tokens is rejected up front (it could
// not finish) rather than failing mid-generation.
StatusOr<std::vector<BatchRequest>> ParseBatchFile(const std::string& text, const std::string& source, int vocab_size,
                                                   int default_max_tokens, int64_t max_context);

// One output line (with the trailing newline).
std::string FormatBatchResult(const BatchRequest& request, const GenerateResult& result);

}  // namespace shoal
