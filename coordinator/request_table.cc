#include "coordinator/request_table.h"

#include <algorithm>

#include "control/admission.h"

namespace shoal::coord {

namespace {

double SecondsBetween(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Histogram buckets (seconds), close to vLLM's so dashboards built for it read ours the same way.
// 1, 2, 5, 10, 20, 50 … up to the context (vLLM's bounds for request lengths).
std::vector<double> LengthBuckets(int64_t max_context) {
  std::vector<double> b;
  for (double decade = 1; b.empty() || b.back() < static_cast<double>(max_context); decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      if (decade * m <= static_cast<double>(std::max<int64_t>(max_context, 1))) b.push_back(decade * m);
    }
    if (decade > 1e12) break;
  }
  return b;
}

std::vector<double> TtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
}
std::vector<double> ItlBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
}
std::vector<double> E2eBuckets() {
  return {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0};
}

std::shared_ptr<const api::ApiError> ServerError(std::string message, const char* code, int status = 500) {
  return std::make_shared<const api::ApiError>(api::ApiError{status, std::move(message), "server_error", "", code});
}

}  // namespace

RequestTable::RequestTable(Options options, Cluster& cluster, Delivery& delivery, Metrics& metrics)
    : options_(std::move(options)), cluster_(cluster), delivery_(delivery), metrics_(metrics) {
  prompt_tokens_ = &metrics_.counter("shoal_prompt_tokens_total", "Prompt tokens of admitted requests");
  generation_tokens_ = &metrics_.counter("shoal_generation_tokens_total", "Tokens generated");
  in_flight_ = &metrics_.gauge("shoal_requests_in_flight", "Requests admitted and not finished");
  ttft_ = &metrics_.histogram("shoal_time_to_first_token_seconds", "Time to first token (TTFT)", TtftBuckets());
  itl_ = &metrics_.histogram("shoal_inter_token_latency_seconds", "Time between consecutive tokens of a request (ITL)",
                             ItlBuckets());
  e2e_ = &metrics_.histogram("shoal_e2e_request_latency_seconds", "End-to-end request latency", E2eBuckets());
  prompt_lengths_ = &metrics_.histogram("shoal_request_prompt_tokens", "Prompt tokens of finished requests",
                                        LengthBuckets(options_.max_context));
  output_lengths_ = &metrics_.histogram("shoal_request_generation_tokens", "Tokens generated for finished requests",
                                        LengthBuckets(options_.max_context));
  migrations_ = &metrics_.counter("shoal_request_migrations_total",
                                  "Requests resubmitted to a group after theirs failed (each resubmission)");
}

std::variant<RequestTable::Admitted, api::ApiError> RequestTable::Admit(Admission a, bool stopping) {
  const int64_t prompt_tokens = static_cast<int64_t>(a.prompt->size());
  StatusOr<std::shared_ptr<Rank>> routed = cluster_.Route(stopping);
  uint64_t fork_of = 0;
  if (routed.ok() && a.fork_of != 0) {
    // Capacity was checked by Route; the choice follows its first one's rank while that one is on it.
    auto parent = entries_.find(a.fork_of);
    const Group* g = parent != entries_.end() && parent->second.rank ? cluster_.GroupOf(*parent->second.rank) : nullptr;
    if (g != nullptr && g->Complete() && !parent->second.rank->dead) {
      routed = parent->second.rank;
      fork_of = a.fork_of;
    }
  }
  control::RequestLimits limits{options_.max_context, -1};
  if (routed.ok()) limits.kv_tokens = static_cast<int64_t>(std::min<uint64_t>((*routed)->hello.kv_tokens, INT64_MAX / 2));
  const int64_t max_tokens = a.max_tokens >= 0 ? a.max_tokens : control::DefaultMaxTokens(prompt_tokens, a.chat, limits);
  // Whether it fits comes first: a request that can never run is the client's to fix, not to retry.
  if (const control::Fit fit = control::CheckFit(prompt_tokens, max_tokens, limits); !fit.ok()) {
    const std::string param = fit.exceeded == control::Limit::kKvCache || (fit.exceeded == control::Limit::kContext && a.max_tokens >= 0)
                                  ? "max_tokens"
                                  : a.prompt_param;
    return api::ApiError{400, fit.message, "invalid_request_error", param, "context_length_exceeded"};
  }
  if (!routed.ok()) {
    const bool full = routed.status().code() == StatusCode::kResourceExhausted;
    return api::FromStatus(routed.status(), full ? "queue_full" : "service_unavailable");
  }
  const uint64_t id = next_id_++;
  Entry& e = entries_[id];
  e.sink = std::move(a.sink);
  e.prompt_tokens = prompt_tokens;
  e.max_tokens = max_tokens;
  e.arrival = a.arrival;
  e.deadline = a.deadline;
  e.submit.request = id;
  e.submit.max_tokens = static_cast<uint32_t>(max_tokens);
  e.submit.ignore_eos = a.ignore_eos;
  e.submit.sampling = a.sampling;
  // min_tokens counts toward max_tokens (vLLM refuses a larger one when max_tokens is given; a
  // default max_tokens bounds it).
  e.submit.sampling.min_tokens = static_cast<int32_t>(std::min<int64_t>(a.sampling.min_tokens, max_tokens));
  e.submit.bias_ids = std::move(a.bias_ids);
  e.submit.bias_values = std::move(a.bias_values);
  e.submit.json_schema = std::move(a.json_schema);
  e.submit.logprobs = a.logprobs;
  e.submit.prompt_logprobs = a.prompt_logprobs;
  e.submit.fork_of = fork_of;
  e.submit.stop_ids = std::move(a.stop_ids);
  if (!a.ignore_eos) {
    e.submit.stop_ids.insert(e.submit.stop_ids.end(), options_.eos_ids.begin(), options_.eos_ids.end());
  }
  e.tokens = *a.prompt;
  SubmitTo(id, e, *routed);
  prompt_tokens_->Inc(static_cast<double>(prompt_tokens));
  in_flight_->Set(static_cast<double>(entries_.size()));
  return Admitted{id, max_tokens};
}

void RequestTable::SubmitTo(uint64_t id, Entry& e, const std::shared_ptr<Rank>& rank) {
  Group* group = cluster_.GroupOf(*rank);
  const bool group_idle = group != nullptr && group->InFlight() == 0;
  e.rank = rank;
  if (rank->requests == 0) rank->last_progress = Clock::now();  // the step clock starts when work arrives
  rank->requests += 1;
  rank->outstanding_tokens += e.prompt_tokens + e.max_tokens - e.generated;
  // The prompt, then (resumed) the tokens already delivered; the frame is built here, the entry keeps
  // the tokens.
  control::Submit m = e.submit;
  m.request = id;
  m.prompt = e.tokens;
  m.resumed_output = static_cast<uint32_t>(e.generated);
  // A resubmission whose prompt logprobs all arrived does not ask for them again.
  if (e.prompt_logprobs_seen + 1 >= e.prompt_tokens) m.prompt_logprobs = -1;
  rank->channel->Send(m);
  e.submit.fork_of = 0;  // a resubmission (another group) prefills on its own
  // An idle group's other ranks wait for input up to a poll interval before stepping; wake them.
  if (group_idle) {
    for (const auto& other : group->ranks) {
      if (other && other != rank && !other->dead) other->channel->Send(control::Wake{});
    }
  }
}

void RequestTable::OnTokens(Rank& from, const control::Tokens& t, Clock::time_point now) {
  for (const control::TokenEvent& ev : t.events) {
    auto it = entries_.find(ev.request);
    if (it == entries_.end()) continue;  // ended here already
    Entry& e = it->second;
    if (e.rank.get() != &from) continue;  // not this rank's: ignored rather than trusted
    if (ev.prompt_position >= 0) {
      // Positions arrive in order; a rank the request was resumed on repeats those already delivered.
      if (e.submit.prompt_logprobs < 0 || ev.prompt_position != e.prompt_logprobs_seen + 1) continue;
      bool bad = ev.prompt_position >= static_cast<int32_t>(e.prompt_tokens) || ev.token != e.tokens[ev.prompt_position];
      for (int32_t t : ev.top_ids) bad = bad || t >= options_.model_vocab;
      if (bad) {
        CancelOnRank(e, ev.request);
        Finish(it, "error", ServerError(from.Name() + " returned a prompt logprob for a token not in the prompt", "worker_error"),
               true);
        continue;
      }
      e.prompt_logprobs_seen = ev.prompt_position;
      RequestEvent out;
      out.token = ev.token;
      out.prompt_position = ev.prompt_position;
      out.logprob = api::TokenLogprob{ev.token, ev.logprob, ev.top_ids, ev.top_logprobs, ev.rank};
      delivery_.Deliver(e.sink, std::move(out));
      continue;
    }
    if (ev.token >= 0) {
      bool bad_top = false;
      for (int32_t t : ev.top_ids) bad_top = bad_top || t >= options_.model_vocab;
      if (ev.token >= options_.model_vocab || bad_top) {
        CancelOnRank(e, ev.request);
        Finish(it, "error",
               ServerError(from.Name() + " returned token " + std::to_string(ev.token) + " outside the vocabulary",
                           "worker_error"),
               true);
        continue;
      }
      if (e.generated == 0) {
        ttft_->Observe(SecondsBetween(e.arrival, now));
      } else {
        itl_->Observe(SecondsBetween(e.last_token, now));
      }
      e.last_token = now;
      e.generated += 1;
      e.tokens.push_back(ev.token);
      from.outstanding_tokens -= 1;
      generation_tokens_->Inc();
      RequestEvent out;
      out.token = ev.token;
      out.stop_token = ev.finish == control::FinishReason::kStop;
      if (ev.has_logprob && e.submit.logprobs >= 0) {
        out.logprob = api::TokenLogprob{ev.token, ev.logprob, ev.top_ids, ev.top_logprobs};
      }
      delivery_.Deliver(e.sink, std::move(out));
    }
    switch (ev.finish) {
      case control::FinishReason::kNone: break;
      case control::FinishReason::kStop: Finish(it, "stop", nullptr, true); break;
      case control::FinishReason::kLength: Finish(it, "length", nullptr, true); break;
      case control::FinishReason::kCancelled:  // only the coordinator cancels; from a rank it is a fault
        Finish(it, "error", ServerError("worker " + from.Name() + " cancelled the request", "worker_error"), true);
        break;
      case control::FinishReason::kError:
        Finish(it, "error", ServerError("worker " + from.Name() + ": " + ev.error, "worker_error"), true);
        break;
    }
  }
  delivery_.Flush();
}

void RequestTable::EndFromClient(uint64_t id, const char* reason) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  CancelOnRank(it->second, id);
  Finish(it, reason, nullptr, false);
}

void RequestTable::FailGroup(const GroupFailure& f, bool stopping, Clock::time_point now) {
  const std::string why = "engine group " + f.group + " failed: " + f.reason;
  const bool migrate = !stopping && options_.migration_timeout_s > 0;
  const auto error = ServerError(stopping ? "the server is shutting down" : why, "worker_failed", 503);
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    Entry& e = it->second;
    if (e.rank && e.rank->group == f.group && e.rank->incarnation == f.incarnation) {
      if (migrate) {
        // Off the failed rank (its counts go with it); Migrate() finds it a group.
        e.rank->requests -= 1;
        e.rank->outstanding_tokens -= e.prompt_tokens + e.max_tokens - e.generated;
        e.rank.reset();
        e.migrate_by = now + std::chrono::seconds(options_.migration_timeout_s);
        e.failure = why;
        ++awaiting_;
      } else {
        Finish(it, "error", error, true);
      }
    }
    it = next;
  }
  if (migrate) Migrate(now, stopping);
  delivery_.Flush();
}

void RequestTable::Migrate(Clock::time_point now, bool stopping) {
  if (awaiting_ == 0) return;
  bool delivered = false;
  // Oldest first (ids grow with admission), so a request that waited longest is resubmitted first.
  std::vector<uint64_t> waiting;
  for (const auto& [id, e] : entries_) {
    if (!e.rank) waiting.push_back(id);
  }
  std::sort(waiting.begin(), waiting.end());
  for (uint64_t id : waiting) {
    auto it = entries_.find(id);
    Entry& e = it->second;
    if (stopping || now >= e.migrate_by) {
      Finish(it, "error",
             ServerError(stopping ? "the server is shutting down"
                                  : e.failure + "; no engine group took the request over within "
                                                "server.migration_timeout_s (" +
                                        std::to_string(options_.migration_timeout_s) + " s)",
                         "worker_failed", 503),
             true);
      delivered = true;
      continue;
    }
    StatusOr<std::shared_ptr<Rank>> routed = cluster_.Route(stopping);
    if (!routed.ok()) continue;  // no group ready yet, or every batch full: try again next tick
    const int64_t kv_tokens = static_cast<int64_t>(std::min<uint64_t>((*routed)->hello.kv_tokens, INT64_MAX / 2));
    const control::Fit fit =
        control::CheckFit(e.prompt_tokens, e.max_tokens, control::RequestLimits{options_.max_context, kv_tokens});
    if (!fit.ok()) {
      Finish(it, "error", ServerError(e.failure + "; the group that could take it over cannot hold it: " + fit.message,
                                      "worker_failed", 503),
             true);
      delivered = true;
      continue;
    }
    --awaiting_;
    SubmitTo(id, e, *routed);
    migrations_->Inc();
  }
  if (delivered) delivery_.Flush();
}

void RequestTable::FailAll(const api::ApiError& error) {
  const auto shared = std::make_shared<const api::ApiError>(error);
  while (!entries_.empty()) Finish(entries_.begin(), "error", shared, true);
  delivery_.Flush();
}

void RequestTable::ExpireOverdue(Clock::time_point now, int request_timeout_s) {
  std::shared_ptr<const api::ApiError> error;
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (now >= it->second.deadline) {
      if (!error) {
        error = std::make_shared<const api::ApiError>(
            api::ApiError{504, "the request did not finish within server.request_timeout_s (" +
                                   std::to_string(request_timeout_s) + " s)",
                          "timeout_error", "", "request_timeout"});
      }
      CancelOnRank(it->second, it->first);
      Finish(it, "error", error, true);
    }
    it = next;
  }
  if (error) delivery_.Flush();
}

void RequestTable::CancelOnRank(const Entry& e, uint64_t id) {
  if (e.rank && !e.rank->dead) e.rank->channel->Send(control::Cancel{id});
}

Counter& RequestTable::Outcome(const char* reason) {
  return metrics_.counter("shoal_requests_total", "Requests by final outcome", {{"finish_reason", reason}});
}

void RequestTable::Finish(Entries::iterator it, const char* reason, std::shared_ptr<const api::ApiError> error,
                          bool deliver) {
  Entry e = std::move(it->second);
  entries_.erase(it);
  if (e.rank) {
    e.rank->requests -= 1;
    e.rank->outstanding_tokens -= e.prompt_tokens + e.max_tokens - e.generated;
  } else {
    --awaiting_;
  }
  Outcome(reason).Inc();
  if (!error) {
    e2e_->Observe(SecondsBetween(e.arrival, Clock::now()));
    prompt_lengths_->Observe(static_cast<double>(e.prompt_tokens));
    output_lengths_->Observe(static_cast<double>(e.generated));
  }
  in_flight_->Set(static_cast<double>(entries_.size()));
  if (deliver) {
    RequestEvent out;
    out.end = true;
    out.finish_reason = reason;
    out.error = std::move(error);
    delivery_.Deliver(e.sink, std::move(out));
  }
  delivery_.Release(std::move(e.sink));
}

}  // namespace shoal::coord
