// Whether a request fits where it is going: one function for the arithmetic, used by the coordinator
// when it admits a request (with the limits of the rank it routed to) and by the worker's scheduler
// when it queues one, so the two can never disagree about what fits.
#pragma once

#include <cstdint>
#include <string>

namespace shoal::control {

struct RequestLimits {
  int64_t max_context = 0;  // the model's context (max_position_embeddings)
  int64_t kv_tokens = -1;   // what one rank's KV cache holds (blocks × block size); -1: not known
};

enum class Limit { kNone, kProtocol, kContext, kKvCache };

struct Fit {
  Limit exceeded = Limit::kNone;
  std::string message;  // which limit, with the numbers; "" when it fits
  bool ok() const { return exceeded == Limit::kNone; }
};

// Whether prompt_tokens + max_tokens fits: within what one Submit frame carries
// (kMaxTokensPerRequest), the model's context, and — when known — one rank's KV cache. The context
// message uses OpenAI's wording ("this model's maximum context length is ...").
Fit CheckFit(int64_t prompt_tokens, int64_t max_tokens, const RequestLimits& limits);

// max_tokens for a request that did not give one, as OpenAI and vLLM choose it: what the context
// leaves (for completions at most 16), capped by one rank's KV cache when known; at least 1.
int64_t DefaultMaxTokens(int64_t prompt_tokens, bool chat, const RequestLimits& limits);

}  // namespace shoal::control
