#include "control/admission.h"

#include <algorithm>

#include "control/wire.h"

namespace shoal::control {

Fit CheckFit(int64_t prompt_tokens, int64_t max_tokens, const RequestLimits& limits) {
  const int64_t asked = std::max<int64_t>(max_tokens, 1);
  const int64_t total = prompt_tokens + asked;
  const auto n = [](int64_t v) { return std::to_string(v); };
  if (total > static_cast<int64_t>(kMaxTokensPerRequest)) {
    return {Limit::kProtocol, "the request has " + n(prompt_tokens) + " prompt tokens and asks for " + n(asked) +
                                  " more; at most " + n(kMaxTokensPerRequest) + " tokens per request are supported"};
  }
  if (total > limits.max_context) {
    return {Limit::kContext, "this model's maximum context length is " + n(limits.max_context) +
                                 " tokens; the request has " + n(prompt_tokens) + " prompt tokens and asks for " +
                                 n(asked) + " more"};
  }
  if (limits.kv_tokens >= 0 && total > limits.kv_tokens) {
    return {Limit::kKvCache, "the request needs " + n(total) + " tokens of KV cache; a worker holds " +
                                 n(limits.kv_tokens)};
  }
  return {};
}

int64_t DefaultMaxTokens(int64_t prompt_tokens, bool chat, const RequestLimits& limits) {
  int64_t room = limits.max_context - prompt_tokens;
  if (limits.kv_tokens >= 0) room = std::min(room, limits.kv_tokens - prompt_tokens);
  return std::max<int64_t>(chat ? room : std::min<int64_t>(16, room), 1);
}

}  // namespace shoal::control
