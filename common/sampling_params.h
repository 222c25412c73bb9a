// How one request's tokens are drawn: the one type the OpenAI parser fills, the control protocol
// carries (control/wire.h's Submit) and the worker's scheduler and samplers read. Plain data, no
// dependencies, so the CUDA sampler's header can include it too.
#pragma once

#include <cstdint>

namespace shoal {

// Temperatures below this are greedy. Above it l/T stays far from float overflow (|l/T| ≤ 1e9 for
// |l| ≤ 1e4), where tinier ones turn the softmax into inf − inf = NaN (1e-38 overflows for l ≥ 3.41).
// Below it sampling is greedy in effect anyway: a logit gap of 1e-3 already gives p2/p1 = e^-100.
// vLLM uses the same cutoff.
inline constexpr float kGreedyBelowTemperature = 1e-5f;

struct SamplingParams {
  // Below kGreedyBelowTemperature (0, NaN): greedy, ArgMax. The default draws nothing at random; the
  // OpenAI parser applies OpenAI's default of 1 itself.
  float temperature = 0.0f;
  int32_t top_k = 0;               // 0 = off
  float top_p = 1.0f;              // (0, 1]; 1 = off
  float presence_penalty = 0.0f;   // [-2, 2], OpenAI semantics over the tokens generated so far
  float frequency_penalty = 0.0f;  // [-2, 2]
  // min-p (vLLM, HF): after temperature, tokens whose probability is below min_p times the most
  // likely one's are dropped. 0 = off; [0, 1].
  float min_p = 0.0f;
  // HF / vLLM repetition penalty over every token seen (prompt and output): a positive logit is
  // divided by it, a negative one multiplied. 1 = off; (0, 100].
  float repetition_penalty = 1.0f;
  // The stop ids (EOS included) cannot be drawn before this many tokens were generated. 0 = off.
  int32_t min_tokens = 0;
  uint64_t seed = 0;               // per request, so its tokens do not depend on its batch
};

// OpenAI's bound on top_logprobs (and vLLM's default max_logprobs).
inline constexpr int kMaxTopLogprobs = 20;

// logit_bias entries a request may carry (OpenAI's values: [-100, 100] added to the logit).
inline constexpr int kMaxLogitBias = 1024;

// The JSON schema a request's output may be constrained to (grammar/json_schema.h), as text.
inline constexpr size_t kMaxJsonSchemaBytes = 64 * 1024;

// The seed of the random draw for a request's `index`-th generated token (0-based): a function of
// the request's seed and the position alone (splitmix64 of both), so a request recomputed after
// preemption, or resumed on another engine group after a failure, draws exactly the same tokens.
inline uint64_t TokenSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace shoal
