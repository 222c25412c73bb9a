// Requests on the coordinator: routing to a worker, token events from workers (detokenized, checked
// against stop strings, handed to the HTTP side), and every request's single final outcome.
#include "coordinator/state.h"

namespace shoal {

using namespace coord;

namespace {

double SecondsBetween(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

std::variant<std::shared_ptr<WorkerLink>, api::ApiError> Coordinator::Impl::Route() {
  if (stopping) return api::ApiError{503, "the server is shutting down", "server_error", "", "service_unavailable"};
  GroupState* best = nullptr;
  int64_t capacity = cfg.server.max_queued_requests, in_flight = 0;
  for (auto& [name, g] : groups) {
    if (!g.Complete()) continue;
    for (const auto& r : g.ranks) capacity += r->hello.max_num_seqs;
    in_flight += g.in_flight;
    // The healthiest group is the least loaded per rank among the complete ones.
    if (best == nullptr || g.in_flight * static_cast<int64_t>(best->size) < best->in_flight * static_cast<int64_t>(g.size)) {
      best = &g;
    }
  }
  if (best == nullptr) {
    return api::ApiError{503, "no engine group is ready to serve (see GET /v1/cluster)", "server_error", "",
                         "service_unavailable"};
  }
  if (in_flight >= capacity) {
    return api::ApiError{429,
                         "the server is at capacity (" + std::to_string(in_flight) + " requests in flight); retry later",
                         "rate_limit_error", "", "queue_full"};
  }
  std::shared_ptr<WorkerLink> pick;
  for (const auto& r : best->ranks) {
    if (!pick || r->requests.size() < pick->requests.size() ||
        (r->requests.size() == pick->requests.size() && r->outstanding_tokens < pick->outstanding_tokens)) {
      pick = r;
    }
  }
  return pick;
}

void Coordinator::Impl::Start(const std::shared_ptr<RequestState>& r, const SamplingParams& s, bool ignore_eos,
                              const std::vector<int32_t>& stop_ids) {
  WorkerLink& w = *r->worker;
  GroupState& g = groups.at(w.group);
  requests[r->id] = r;
  if (w.requests.empty()) w.last_progress = Clock::now();  // the step clock starts when work arrives
  w.requests.insert(r->id);
  w.outstanding_tokens += static_cast<int64_t>(r->prompt.size()) + r->max_tokens;
  control::Submit m;
  m.request = r->id;
  m.max_tokens = static_cast<uint32_t>(r->max_tokens);
  m.ignore_eos = ignore_eos;
  m.sampling = s;
  m.stop_ids = stop_ids;
  if (!ignore_eos) m.stop_ids.insert(m.stop_ids.end(), eos_ids.begin(), eos_ids.end());
  m.prompt = r->prompt;
  Send(r->worker, m);
  // An idle group's other ranks wait for input up to a poll interval before stepping; wake them.
  if (g.in_flight++ == 0) {
    for (const auto& other : g.ranks) {
      if (other != r->worker) Send(other, control::Wake{});
    }
  }
  hot.prompt_tokens->Inc(static_cast<double>(r->prompt.size()));
  hot.in_flight->Set(static_cast<double>(requests.size()));
}

void Coordinator::Impl::AppendText(RequestState& r, std::string_view text, bool final) {
  StopMatcher::Result out = r.stops.Append(text, final);
  r.ready_text += out.text;
  if (out.stop) {
    // OpenAI semantics: the output ends just before the stop string, which is not included.
    CancelOnWorker(r);  // it is still generating
    Finish(r, "stop");
    return;
  }
  r.Notify();
}

void Coordinator::Impl::OnTokens(WorkerLink& link, control::Tokens& t) {
  const auto now = Clock::now();
  for (control::TokenEvent& e : t.events) {
    auto it = requests.find(e.request);
    if (it == requests.end()) continue;  // cancelled or finished here already
    std::shared_ptr<RequestState> r = it->second;
    if (r->worker.get() != &link) continue;  // not this worker's: ignore rather than trust
    if (e.token >= 0) {
      if (e.token >= model_vocab) {
        CancelOnWorker(*r);
        Finish(*r, "error", api::ApiError{500, link.Name() + " returned token " + std::to_string(e.token) +
                                                   " outside the vocabulary", "server_error", "", "worker_error"});
        continue;
      }
      if (r->output_ids.empty()) {
        r->first_token = now;
        hot.ttft->Observe(SecondsBetween(r->arrival, now));
      } else {
        hot.itl->Observe(SecondsBetween(r->last_token, now));
      }
      r->last_token = now;
      r->output_ids.push_back(e.token);
      link.outstanding_tokens -= 1;
      hot.generation_tokens->Inc();
      const bool last = e.finish != control::FinishReason::kNone;
      // The token that matched a stop id (EOS included) ends the text without appearing in it, as in
      // OpenAI and vLLM.
      StatusOr<std::string> text = e.finish == control::FinishReason::kStop ? StatusOr<std::string>(std::string())
                                                                            : r->detok->Append(e.token);
      if (!text.ok()) {
        CancelOnWorker(*r);
        Finish(*r, "error", api::ApiError{500, text.status().message(), "server_error", "", "detokenize_failed"});
        continue;
      }
      AppendText(*r, *text + (last ? r->detok->Finish() : ""), last);
      if (r->done) continue;  // a stop string ended it
    }
    switch (e.finish) {
      case control::FinishReason::kNone: break;
      case control::FinishReason::kStop: Finish(*r, "stop"); break;
      case control::FinishReason::kLength: Finish(*r, "length"); break;
      case control::FinishReason::kCancelled:  // only the coordinator cancels; from a worker it is a fault
        Finish(*r, "error", api::ApiError{500, "worker " + link.Name() + " cancelled the request", "server_error", "",
                                          "worker_error"});
        break;
      case control::FinishReason::kError:
        Finish(*r, "error", api::ApiError{500, "worker " + link.Name() + ": " + e.error, "server_error", "", "worker_error"});
        break;
    }
  }
}

void Coordinator::Impl::Finish(RequestState& r, const std::string& reason, std::optional<api::ApiError> error) {
  if (r.done) return;
  if (!error) r.ready_text += r.stops.Flush();
  r.done = true;
  r.finish_reason = reason;
  r.error = std::move(error);
  if (r.worker) {
    WorkerLink& w = *r.worker;
    if (w.requests.erase(r.id) > 0) {
      w.outstanding_tokens -= static_cast<int64_t>(r.prompt.size()) + r.max_tokens - static_cast<int64_t>(r.output_ids.size());
      auto g = groups.find(w.group);
      if (g != groups.end() && g->second.incarnation == w.incarnation) --g->second.in_flight;
    }
  }
  requests.erase(r.id);
  const auto now = Clock::now();
  metrics.counter("shoal_requests_total", "Requests by final outcome", {{"finish_reason", reason}}).Inc();
  if (!r.error) {
    hot.e2e->Observe(SecondsBetween(r.arrival, now));
  }
  hot.in_flight->Set(static_cast<double>(requests.size()));
  r.Notify();
}

void Coordinator::Impl::CancelOnWorker(RequestState& r) {
  if (!r.done && r.worker && !r.worker->dead) Send(r.worker, control::Cancel{r.id});
}

void Coordinator::Impl::Abandon(RequestState& r) {
  if (r.done) return;
  CancelOnWorker(r);
  Finish(r, "cancelled");
}

}  // namespace shoal
