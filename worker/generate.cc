#include "worker/generate.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "worker/scheduler.h"

namespace shoal {

namespace {

// Group agreement before each step (one small all-reduce): whether any rank failed, and how many
// ranks still have work.
Status AgreeOnStep(comm::Group& group, const Status& local, int64_t busy, int64_t timeout_ms, int64_t* group_busy) {
  std::vector<int64_t> v = {local.ok() ? 0 : 1, busy};
  Status st = group.AllReduceSum(v, Deadline::AfterMs(timeout_ms));
  if (!local.ok()) return local;
  if (!st.ok()) return st;
  if (v[0] > 0) {
    return Unavailable("rank " + std::to_string(group.rank()) + ": stopping because " + std::to_string(v[0]) +
                       " other rank(s) of the group failed this step (their logs say why)");
  }
  *group_busy = v[1];
  return Status::Ok();
}

const char* FinishName(control::FinishReason r) { return r == control::FinishReason::kStop ? "stop" : "length"; }

}  // namespace

std::string FormatPhases(const StepPhases& p, double step_seconds) {
  const double other = std::max(0.0, step_seconds - p.attention - p.mlp - p.exchange - p.tp);
  std::string out;
  const std::pair<const char*, double> parts[] = {
      {"attention", p.attention}, {"mlp", p.mlp}, {"expert exchange", p.exchange}, {"tp collectives", p.tp}, {"other", other}};
  for (const auto& [name, sec] : parts) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s%s %.0f%% (%.1f ms)", out.empty() ? "" : ", ", name,
                  step_seconds > 0 ? 100 * sec / step_seconds : 0.0, 1e3 * sec);
    out += buf;
  }
  return out;
}

StatusOr<std::vector<GenerateResult>> Generate(StepEngine& engine, const std::vector<GenerateRequest>& requests,
                                               GenerateStats* stats) {
  comm::Group& group = engine.group();
  const StepPhases phases0 = engine.phase_seconds_total();
  struct AddPhases {  // on every return: what this call's steps added
    StepEngine& e;
    StepPhases p0;
    StepPhases* out;
    ~AddPhases() {
      const StepPhases p = e.phase_seconds_total();
      out->attention += p.attention - p0.attention;
      out->mlp += p.mlp - p0.mlp;
      out->exchange += p.exchange - p0.exchange;
      out->tp += p.tp - p0.tp;
    }
  } add_phases{engine, phases0, &stats->phases};
  const int64_t timeout_ms = engine.collective_timeout_ms();
  Scheduler sched(engine);
  // Queue the whole batch before the first step; every rank learns whether any rank's batch is bad.
  Status local = Status::Ok();
  for (size_t i = 0; i < requests.size() && local.ok(); ++i) {
    const GenerateRequest& g = requests[i];
    ScheduledRequest r;
    r.id = i;
    r.prompt = g.prompt;
    r.max_tokens = g.max_tokens;
    r.sampling = g.sampling;
    r.stop_ids = g.stop_ids;
    local = sched.Submit(std::move(r));
    stats->prompt_tokens += static_cast<int64_t>(g.prompt.size());
  }

  std::vector<GenerateResult> results(requests.size());
  std::vector<control::TokenEvent> events;
  int64_t group_busy = 0;
  SHOAL_RETURN_IF_ERROR(AgreeOnStep(group, local, sched.HasWork() ? 1 : 0, timeout_ms, &group_busy));
  // Every rank steps (an idle one with an empty batch) until no rank has work left.
  while (group_busy > 0) {
    events.clear();
    local = sched.Step(&events);
    if (local.ok()) {
      const SchedulerStats& s = sched.stats();
      for (const control::TokenEvent& e : events) {
        GenerateResult& r = results[e.request];
        if (e.finish == control::FinishReason::kError) {
          local = Internal("request " + std::to_string(e.request) + ": " + e.error);
          break;
        }
        if (e.token >= 0) {
          r.tokens.push_back(e.token);
          ++stats->generated_tokens;
        }
        if (e.finish != control::FinishReason::kNone) r.finish_reason = FinishName(e.finish);
      }
      if (s.last_step_prompt_tokens == 0 && s.last_step_decode_tokens > 0) {  // a pure decode step
        stats->decode_tokens += s.last_step_decode_tokens;
        stats->decode_steps += 1;
        stats->decode_weight_bytes += static_cast<double>(engine.last_step_weight_bytes());
        stats->decode_seconds += s.last_step_seconds;
      } else {
        stats->prefill_seconds += s.last_step_seconds;
      }
    }
    SHOAL_RETURN_IF_ERROR(AgreeOnStep(group, local, sched.HasWork() ? 1 : 0, timeout_ms, &group_busy));
  }
  return results;
}

}  // namespace shoal
