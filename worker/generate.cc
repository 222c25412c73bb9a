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

// Group agreement after each step (one small all-reduce): whether any rank failed, and how many
// sequences are still live on all ranks together.
Status AgreeOnStep(comm::Group& group, const Status& local, int64_t live, int64_t timeout_ms, int64_t* group_live) {
  std::vector<int64_t> v = {local.ok() ? 0 : 1, live};
  Status st = group.AllReduceSum(v, Deadline::AfterMs(timeout_ms));
  if (!local.ok()) return local;
  if (!st.ok()) return st;
  if (v[0] > 0) {
    return Unavailable("rank " + std::to_string(group.rank()) + ": stopping because " + std::to_string(v[0]) +
                       " other rank(s) of the group failed this step (their logs say why)");
  }
  *group_live = v[1];
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<GenerateResult>> Generate(Engine& engine, const std::vector<GenerateRequest>& requests,
                                               GenerateStats* stats) {
  const int vocab = engine.config().vocab_size;
  comm::Group& group = engine.group();
  const int64_t timeout_ms = engine.collective_timeout_ms();
  SequenceSet seqs{engine, {}};
  std::vector<std::mt19937_64> rngs;
  // Check the whole batch before the first step; every rank learns whether any rank's batch is bad.
  Status local = Status::Ok();
  for (size_t i = 0; i < requests.size() && local.ok(); ++i) {
    if (requests[i].prompt.empty()) local = InvalidArgument("request " + std::to_string(i) + ": empty prompt");
    if (requests[i].max_tokens < 1) local = InvalidArgument("request " + std::to_string(i) + ": max_tokens must be ≥ 1");
  }
  for (size_t i = 0; i < requests.size() && local.ok(); ++i) {
    StatusOr<SeqId> s = engine.NewSequence();
    if (!s.ok()) {
      local = s.status();
      break;
    }
    seqs.ids.push_back(*s);
    rngs.emplace_back(requests[i].seed);
  }
  int64_t group_live = 0;
  SHOAL_RETURN_IF_ERROR(AgreeOnStep(group, local, static_cast<int64_t>(requests.size()), timeout_ms, &group_live));

  std::vector<GenerateResult> results(requests.size());
  std::vector<int32_t> next(requests.size());
  std::vector<size_t> fed(requests.size(), 0);  // prompt tokens already in the KV cache
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
  auto live_count = [&] { return static_cast<int64_t>(std::count(live.begin(), live.end(), true)); };
  for (const GenerateRequest& r : requests) stats->prompt_tokens += static_cast<int64_t>(r.prompt.size());

  // Steps of at most engine.max_step_tokens tokens: one decode token per sequence whose prompt is in,
  // then prompt chunks in request order with what is left of the budget. A sequence's first token
  // comes from the step that feeds the last chunk of its prompt. A rank with nothing to do this step
  // still steps, with an empty batch, until no rank has a live sequence.
  std::vector<ForwardInput> batch;
  struct Entry {
    size_t request;
    bool samples;  // the step's logits for this entry give the sequence's next token
    bool decode;
  };
  std::vector<Entry> entries;
  while (group_live > 0) {
    batch.clear();
    entries.clear();
    int64_t budget = engine.max_step_tokens();
    for (size_t i = 0; i < requests.size(); ++i) {
      if (!live[i] || fed[i] < requests[i].prompt.size()) continue;
      batch.push_back({seqs.ids[i], std::span<const int32_t>(&next[i], 1), false});
      entries.push_back({i, true, true});
      --budget;
    }
    for (size_t i = 0; i < requests.size() && budget > 0; ++i) {
      const size_t left = requests[i].prompt.size() - fed[i];
      if (!live[i] || left == 0) continue;
      const size_t n = std::min<size_t>(left, static_cast<size_t>(budget));
      batch.push_back({seqs.ids[i], std::span<const int32_t>(requests[i].prompt).subspan(fed[i], n), false});
      entries.push_back({i, n == left, false});
      budget -= static_cast<int64_t>(n);
    }
    const bool any_prefill = std::any_of(entries.begin(), entries.end(), [](const Entry& e) { return !e.decode; });
    const auto t0 = Clock::now();
    local = engine.Forward(batch, &outs);
    if (local.ok()) {
      int64_t decoded = 0;
      for (size_t b = 0; b < entries.size(); ++b) {
        const Entry& e = entries[b];
        if (!e.decode) fed[e.request] += batch[b].tokens.size();
        if (e.samples) accept(e.request, outs[b].logits);
        decoded += e.decode;
      }
      stats->generated_tokens += static_cast<int64_t>(
          std::count_if(entries.begin(), entries.end(), [](const Entry& e) { return e.samples; }));
      if (!any_prefill && decoded > 0) {  // a pure decode step: what the decode rate is measured on
        stats->decode_tokens += decoded;
        stats->decode_steps += 1;
        stats->decode_weight_bytes += static_cast<double>(engine.last_step_weight_bytes());
      }
    }
    SHOAL_RETURN_IF_ERROR(AgreeOnStep(group, local, live_count(), timeout_ms, &group_live));
    (any_prefill ? stats->prefill_seconds : stats->decode_seconds) += Seconds(t0, Clock::now());
  }
  return results;
}

}  // namespace shoal
