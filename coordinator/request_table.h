// Every request's life on the coordinator, in one place: admission (routing and the one fit check),
// the Submit to its rank, the tokens the rank sends back, migration when its group fails, and its
// single end — finished, failed (no group took it over in time), timed out, or ended by its client.
//
// Migration: the table keeps each request's prompt and every token it delivered. When a group fails,
// its requests wait (up to server.migration_timeout_s) for a ready group — another one, or the failed
// one relaunched — and are resubmitted there as prompt + tokens so far, marked as resumed output, so
// the worker counts them toward max_tokens and the penalties and samples the next token at its
// position (TokenSeed): the client's stream pauses and goes on, token-exact. The rank's request counts (cluster.h) change here and
// nowhere else.
//
// The table lives on the control thread and touches no sockets: it reaches ranks through their
// RankChannel and hands what a request's client should see to a Delivery (the HTTP front end, which
// moves it to the client's session thread; a recorder in tests). Events for one request are
// delivered in order, and after its end event nothing more.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/sampling_params.h"
#include "control/wire.h"
#include "coordinator/cluster.h"
#include "coordinator/metrics.h"
#include "coordinator/openai_api.h"

namespace shoal::coord {

// One step of a request as its client sees it: a token, or the end, or both.
struct RequestEvent {
  int32_t token = -1;       // a sampled token; -1 when the event only ends the request
  bool stop_token = false;  // the token matched a stop id (EOS included): counted, never printed
  bool end = false;         // nothing follows
  const char* finish_reason = "";  // with end: "stop", "length" or "error"
  std::shared_ptr<const api::ApiError> error;  // with an "error" end
  std::optional<api::TokenLogprob> logprob;    // with a token, when the request asked for logprobs
  // A prompt token's logprob (Admission::prompt_logprobs), not output: `token` and `logprob` are the
  // prompt token at position prompt_position (1, 2, … in order, each once).
  int32_t prompt_position = -1;
};

// The HTTP side of one request; the table only carries it.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
};

// Takes events off the control thread. The table calls Deliver for each event of a batch and Flush
// once after it, both on the control thread; neither may call back into the table.
class Delivery {
 public:
  virtual ~Delivery() = default;
  virtual void Deliver(const std::shared_ptr<RequestSink>& sink, RequestEvent event) = 0;
  virtual void Flush() = 0;
  // The table is done with `sink`: its reference is dropped where the sink lives (a session's objects
  // are destroyed on the session's thread).
  virtual void Release(std::shared_ptr<RequestSink> sink) { sink.reset(); }
};

class RequestTable {
 public:
  struct Options {
    int64_t max_context = 0;  // the model's
    int32_t model_vocab = 0;
    std::vector<int32_t> eos_ids;  // added to every request's stop ids unless it ignores EOS
    int migration_timeout_s = 0;   // how long a failed group's request waits for another (0: fails at once)
  };
  RequestTable(Options options, Cluster& cluster, Delivery& delivery, Metrics& metrics);

  struct Admission {
    const std::vector<int32_t>* prompt = nullptr;  // read during Admit only
    int64_t max_tokens = -1;                       // -1: what the context and the rank's KV cache leave
    bool chat = false;                             // chat's default max_tokens is the whole rest
    SamplingParams sampling;
    bool ignore_eos = false;
    std::vector<int32_t> stop_ids;  // the client's
    std::vector<int32_t> bias_ids;  // logit_bias, checked against the vocabulary
    std::vector<float> bias_values;
    std::string json_schema;  // the output's constraint (a forced tool call); "" none
    int logprobs = -1;  // api::SamplingOptions::logprobs
    int prompt_logprobs = -1;  // the prompt's logprobs with this many alternatives (prompt_logprobs, echo)
    // n > 1: a later choice of the admitted request fork_of (the same prompt): it goes to the same rank,
    // which prefills the prompt once (control::Submit::fork_of). 0: none.
    uint64_t fork_of = 0;
    std::shared_ptr<RequestSink> sink;
    Clock::time_point arrival{};
    Clock::time_point deadline = Clock::time_point::max();  // server.request_timeout_s (504 after it)
    std::string prompt_param = "prompt";                    // the field a context error names
  };
  struct Admitted {
    uint64_t id = 0;
    int64_t max_tokens = 0;
  };
  // Routes the request, decides once whether it fits there (control/admission.h), and submits it.
  // Every refusal happens before a rank sees the request: 400 (does not fit), 503 (no group ready,
  // stopping) or 429 (every rank's batch and the queue are full).
  std::variant<Admitted, api::ApiError> Admit(Admission a, bool stopping);

  // A Tokens frame from `from`. Events for requests `from` does not hold are ignored; a token outside
  // the vocabulary fails its request (and the rank is told to drop it).
  void OnTokens(Rank& from, const control::Tokens& tokens, Clock::time_point now);
  // The HTTP side ended the request: its client left ("cancelled"), a stop string matched ("stop"),
  // or its text could not be made ("error"). The rank drops it; nothing is delivered back.
  void EndFromClient(uint64_t id, const char* reason);
  // A group broke: its requests wait to migrate (see above), or end with 503 naming the failure when
  // migration is off or the server stops.
  void FailGroup(const GroupFailure& failure, bool stopping, Clock::time_point now);
  // Resubmits waiting requests to a ready group; those waiting past the timeout end with 503.
  void Migrate(Clock::time_point now, bool stopping);
  // Every request ends with `error` (the server stops; the ranks are shut down separately).
  void FailAll(const api::ApiError& error);
  // Requests past their deadline end with 504; their ranks drop them.
  void ExpireOverdue(Clock::time_point now, int request_timeout_s);

  size_t in_flight() const { return entries_.size(); }
  size_t awaiting_group() const { return awaiting_; }

 private:
  struct Entry {
    std::shared_ptr<Rank> rank;  // null while it waits for a group to take it over
    std::shared_ptr<RequestSink> sink;
    int64_t prompt_tokens = 0;
    int64_t max_tokens = 0;
    int64_t generated = 0;
    int32_t prompt_logprobs_seen = 0;  // the last prompt position delivered (a resumed rank repeats them)
    Clock::time_point arrival{}, last_token{}, deadline{};
    control::Submit submit;        // as first sent, its prompt moved into `tokens`
    std::vector<int32_t> tokens;   // prompt, then every token delivered
    Clock::time_point migrate_by{};
    std::string failure;           // why its last group failed (the 503 if none takes over)
  };
  using Entries = std::unordered_map<uint64_t, Entry>;

  // Ends the request once: its rank's counts, the outcome metrics, the end event (unless the HTTP
  // side ended it). `it` is erased.
  void Finish(Entries::iterator it, const char* reason, std::shared_ptr<const api::ApiError> error, bool deliver);
  void CancelOnRank(const Entry& e, uint64_t id);
  // Sends the entry's Submit (as a resumed request when it has output) to `rank` and counts it there.
  void SubmitTo(uint64_t id, Entry& e, const std::shared_ptr<Rank>& rank);
  Counter& Outcome(const char* reason);

  Options options_;
  Cluster& cluster_;
  Delivery& delivery_;
  Metrics& metrics_;
  Entries entries_;
  uint64_t next_id_ = 1;
  size_t awaiting_ = 0;  // entries with no rank
  // Series touched per token or per request, looked up once.
  Counter* prompt_tokens_;
  Counter* generation_tokens_;
  Gauge* in_flight_;
  Histogram* ttft_;
  Histogram* itl_;
  Histogram* e2e_;
  Histogram* prompt_lengths_;  // shoal_request_prompt_tokens
  Histogram* output_lengths_;  // shoal_request_generation_tokens
  Counter* migrations_;
};

}  // namespace shoal::coord
