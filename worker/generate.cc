#include "worker/generate.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace shoal {

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Releases the engine's sequences however generation ends.
struct SequenceSet {
  Engine& engine;
  std::vector<SeqId> ids;
  ~SequenceSet() {
    for (SeqId s : ids) engine.ReleaseSequence(s);
  }
};

}  // namespace

StatusOr<std::vector<GenerateResult>> Generate(Engine& engine, const std::vector<GenerateRequest>& requests,
                                               GenerateStats* stats) {
  const int vocab = engine.config().vocab_size;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].prompt.empty()) return InvalidArgument("request " + std::to_string(i) + ": empty prompt");
    if (requests[i].max_tokens < 1) return InvalidArgument("request " + std::to_string(i) + ": max_tokens must be ≥ 1");
  }
  SequenceSet seqs{engine, {}};
  std::vector<std::mt19937_64> rngs;
  for (const auto& r : requests) {
    SHOAL_ASSIGN_OR_RETURN(SeqId s, engine.NewSequence());
    seqs.ids.push_back(s);
    rngs.emplace_back(r.seed);
  }
  std::vector<GenerateResult> results(requests.size());
  std::vector<int32_t> next(requests.size());
  std::vector<bool> live(requests.size(), true);
  std::vector<ForwardOutput> outs;

  auto accept = [&](size_t i, std::vector<float>& logits) {
    const int32_t tok = kernels::SampleToken(logits.data(), vocab, requests[i].sampling, rngs[i]);
    results[i].tokens.push_back(tok);
    next[i] = tok;
    const auto& stop = requests[i].stop_ids;
    if (std::find(stop.begin(), stop.end(), tok) != stop.end()) {
      results[i].finish_reason = "stop";
      live[i] = false;
    } else if (static_cast<int>(results[i].tokens.size()) >= requests[i].max_tokens) {
      results[i].finish_reason = "length";
      live[i] = false;
    }
  };

  // Prefill: every prompt in one step.
  std::vector<ForwardInput> batch;
  for (size_t i = 0; i < requests.size(); ++i) {
    batch.push_back({seqs.ids[i], requests[i].prompt, false});
    stats->prompt_tokens += static_cast<int64_t>(requests[i].prompt.size());
  }
  auto t0 = Clock::now();
  SHOAL_RETURN_IF_ERROR(engine.Forward(batch, &outs));
  for (size_t i = 0; i < requests.size(); ++i) accept(i, outs[i].logits);
  auto t1 = Clock::now();
  stats->prefill_seconds += Seconds(t0, t1);

  // Decode: one token per live sequence per step.
  std::vector<size_t> index;
  for (;;) {
    batch.clear();
    index.clear();
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!live[i]) continue;
      batch.push_back({seqs.ids[i], std::span<const int32_t>(&next[i], 1), false});
      index.push_back(i);
    }
    if (batch.empty()) break;
    SHOAL_RETURN_IF_ERROR(engine.Forward(batch, &outs));
    for (size_t b = 0; b < index.size(); ++b) accept(index[b], outs[b].logits);
    stats->decode_steps += 1;
    stats->decode_tokens += static_cast<int64_t>(index.size());
    stats->decode_weight_bytes += static_cast<double>(engine.last_step_weight_bytes());
  }
  stats->decode_seconds += Seconds(t1, Clock::now());
  return results;
}

}  // namespace shoal
