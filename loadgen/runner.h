// The load generator behind `shoal bench serve`: sends a workload to any OpenAI-compatible server
// (shoal, vLLM, SGLang, TensorRT-LLM, ...) as streamed completions, with Poisson or gamma arrivals
// and an optional concurrency cap, and times every streamed chunk (loadgen/metrics.h has the
// definitions). One I/O thread; each request its own connection.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"
#include "loadgen/metrics.h"

namespace shoal::loadgen {

struct WorkloadRequest {
  std::vector<int32_t> prompt_ids;  // sent as a token-id prompt when non-empty (completions only)
  std::string prompt_text;          // otherwise this text (or, for chat, the user message)
  int64_t prompt_len = 0;           // tokens, as far as the client knows (the server's usage wins)
  int output_len = 16;              // max_tokens, with ignore_eos so the length is what was asked
};

// Random token ids: input and output lengths uniform in [len·(1−range), len·(1+range)], ids uniform
// in [first_id, vocab) — vLLM's "random" dataset.
std::vector<WorkloadRequest> RandomWorkload(int num, int input_len, int output_len, double range_ratio, int vocab,
                                            int first_id, uint64_t seed);
// ShareGPT-format JSON (a list of {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}):
// the first human turn is the prompt, the first reply's length (tokens, estimated at 4 bytes per
// token unless count_tokens is given) is the output length. Conversations without both are skipped;
// `num` are drawn in a seeded shuffle. As vLLM, conversations whose prompt exceeds max_len / 2 or whose
// prompt + reply exceed max_len are left out (2048 is vLLM's choice).
StatusOr<std::vector<WorkloadRequest>> ShareGptWorkload(const std::string& path, int num, uint64_t seed, int64_t max_len,
                                                         int64_t (*count_tokens)(const std::string&, void*) = nullptr,
                                                         void* tokenizer = nullptr);

struct LoadSpec {
  std::string host = "127.0.0.1";
  int port = 8000;
  bool chat = false;  // /v1/chat/completions instead of /v1/completions
  std::string model;  // "" = leave out (servers with one model accept that)
  std::string api_key;
  double request_rate = std::numeric_limits<double>::infinity();  // requests/s; inf = all at once
  double burstiness = 1.0;  // gamma shape: 1 = Poisson, < 1 burstier, > 1 more regular
  int max_concurrency = 0;  // 0 = no cap
  uint64_t seed = 0;
  double request_timeout_s = 600;
  bool progress = true;
};

// Sends every request; a request that fails (connection, HTTP status, error event, timeout) is
// recorded with its error, never retried. `duration_s` is from the first send to the last end.
std::vector<RequestOutcome> RunLoad(const LoadSpec& spec, const std::vector<WorkloadRequest>& work, double* duration_s);

}  // namespace shoal::loadgen
