// Continuous batching on one rank: requests join and leave between steps; every step packs decode
// tokens first, then prompt chunks, under engine.max_step_tokens; KV blocks are accounted before the
// step, and when they run out the newest running request is preempted (its blocks freed; it goes back
// to the head of the queue and is recomputed from its prompt plus the tokens it already produced, as
// vLLM does), so a step never fails for lack of KV.
//
// On a rank of an expert-parallel group every rank calls Step() whenever the group agreed to step —
// with or without work of its own (Forward with an empty batch still joins the collectives).
// Thread-safety: none; the worker's loop owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "control/wire.h"
#include "grammar/token_constraint.h"
#include "kernels/kernels.h"
#include "worker/step_engine.h"

namespace shoal {

struct ScheduledRequest {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;   // generation ends after emitting one of these
  // The last resumed_output tokens of `prompt` were generated earlier (a request resumed after its
  // group failed): they count toward max_tokens and the penalties, and sampling goes on at their
  // position (TokenSeed), so the continuation equals an undisturbed run.
  int64_t resumed_output = 0;
  std::vector<int32_t> bias_ids;   // logit_bias: bias_values[i] added to token bias_ids[i]
  std::vector<float> bias_values;
  // -1: none. Else each sampled token's logprob and `logprobs` top alternatives, from the logits after
  // logit_bias, the min_tokens mask and the penalties, divided by the temperature (1 when greedy) —
  // vLLM's processed_logprobs; before min-p, top-k and top-p.
  int logprobs = -1;
  // -1: none. Else, for every prompt token after the first (of the prompt as first submitted, not
  // resumed output): its logprob, vocabulary rank and `prompt_logprobs` top alternatives, from the raw
  // logits (no bias, penalties or temperature: the model's own distribution), as TokenEvents with
  // prompt_position set, before the request's first sampled token. Prompt chunks of such a request
  // are at most kPromptLogprobRows tokens (each returns a row of logits per token).
  int prompt_logprobs = -1;
  // n > 1: a later choice of request `fork_of` (the same prompt, submitted before it, without prompt
  // logprobs). It waits for that request's prompt to be prefilled, then forks its sequence
  // (StepEngine::ForkSequence: the prompt's KV blocks shared) and samples its first token from the same
  // logits with its own seed: the prompt is prefilled once for all choices. If fork_of is unknown or
  // already past its prompt, or ends or cannot be forked first, this one prefills on its own.
  uint64_t fork_of = 0;
  // Non-empty: a JSON schema the output is constrained to (grammar/token_constraint.h): each token is
  // drawn from those that keep the output a prefix of a text the schema accepts, and the stop ids only
  // once it is whole. The mask applies before everything else, so logprobs describe the masked
  // distribution. Needs the Scheduler's vocabulary.
  std::string json_schema;
};

inline constexpr int64_t kPromptLogprobRows = 128;
// All requests' prompt-logprob rows in one step: each row returns [vocab] logits.
inline constexpr int64_t kPromptLogprobStepRows = 256;

struct SchedulerStats {
  uint64_t steps = 0;
  double step_seconds_total = 0;
  double last_step_seconds = 0;
  uint64_t preemptions = 0;
  // The latest step's composition: decode tokens (one per running request past its prompt) and
  // prompt tokens fed (chunks, recomputation after preemption).
  int64_t last_step_decode_tokens = 0;
  int64_t last_step_prompt_tokens = 0;
  // Lifetime histograms for GET /metrics (control/engine_histograms.h): tokens per step; per request,
  // submit → first scheduled (queue), → first token (prefill), first → last token (decode, requests
  // that finished by stop or length).
  control::HistogramTotals iteration_tokens, queue_seconds, prefill_seconds, decode_seconds;
};

class Scheduler {
 public:
  // vocabulary: the model's tokens as bytes, for requests with a json_schema (null: such requests
  // are refused).
  explicit Scheduler(StepEngine& engine, std::shared_ptr<const grammar::TokenVocabulary> vocabulary = nullptr);
  ~Scheduler();

  // Queues a request. InvalidArgument (naming the request) for one that could never run here: empty
  // prompt, token ids outside the vocabulary, prompt + max_tokens beyond the model's context, or more
  // KV blocks than the whole cache has; AlreadyExists-style InvalidArgument for a duplicate id.
  Status Submit(ScheduledRequest r);
  // Drops a request wherever it is and frees its KV blocks at once. False if unknown (finished).
  bool Cancel(uint64_t id);
  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }

  // One step. Appends a TokenEvent per sampled token (with finish set on the last one). A batch the
  // engine rejects fails those requests with error events and returns OK; an error from the group (a
  // peer timed out, the group broke) is returned: the group cannot step again.
  Status Step(std::vector<control::TokenEvent>* events);

  // Ends every request with an error event (the group is going away).
  void FailAll(const std::string& why, std::vector<control::TokenEvent>* events);

  size_t running() const { return running_.size(); }
  size_t waiting() const { return waiting_.size() + waiting_forks_; }
  const SchedulerStats& stats() const { return stats_; }

 private:
  struct Seq {
    ScheduledRequest req;
    std::vector<int32_t> tokens;  // prompt, then every token sampled so far
    size_t fed = 0;               // tokens[0, fed) are in the KV cache
    int generated = 0;
    SeqId seq = -1;               // engine sequence while running
    std::mt19937_64 rng;
    std::unordered_map<int32_t, int> output_counts;  // for the penalties
    std::vector<uint8_t> seen;  // [vocab] tokens in the prompt or output (repetition_penalty only)
    // For the phase histograms: when it was submitted, first scheduled and gave its first token.
    std::chrono::steady_clock::time_point submitted, scheduled, first_token;
    bool was_scheduled = false, has_first_token = false;
    // Prompt logprobs: positions [prompt_lp_next, prompt_lp_end) are still to be reported (empty
    // when none were asked for). Kept across preemption, so recomputation reports nothing twice.
    size_t prompt_lp_next = 1, prompt_lp_end = 0;
    // n > 1 (ScheduledRequest::fork_of): the request whose prompt this one waits to fork, and the
    // choices waiting on this one's.
    Seq* parent = nullptr;
    std::vector<Seq*> children;
    std::unique_ptr<grammar::TokenConstraint> constraint;  // a json_schema's (null: none)
  };
  // The compiled json_schema of a request, shared by requests with the same text.
  StatusOr<std::shared_ptr<const grammar::JsonGrammar>> Grammar(const std::string& schema, const std::string& name);
  // Tokens `s` can add with `avail` free blocks (its last block's slack included).
  int64_t Fits(const Seq& s, int64_t avail) const;
  // Returns the KV blocks it freed.
  int64_t Preempt(Seq* s);
  void Finish(Seq* s);
  void Sample(Seq* s, std::vector<float>& logits, std::vector<control::TokenEvent>* events);
  // The prompt logprobs a chunk of `s` starting at `fed` with logits rows for each of its tokens gives.
  void ReportPromptLogprobs(Seq* s, size_t fed, const std::vector<float>& rows, std::vector<control::TokenEvent>* events);
  // The most prompt tokens `s` may feed in one step, with `logit_rows_left` of the step's
  // prompt-logprob rows left.
  int64_t ChunkLimit(const Seq& s, int64_t logit_rows_left) const;
  // `s` has just fed its whole prompt, giving `logits`: its waiting choices fork its sequence and
  // sample from them (before `s` samples, which rewrites the logits).
  void ForkChildren(Seq* s, const std::vector<float>& logits, std::vector<control::TokenEvent>* events);
  // A waiting choice goes its own way (its parent ended, or could not be forked): queued to prefill.
  void Orphan(Seq* child);

  StepEngine& engine_;
  std::shared_ptr<const grammar::TokenVocabulary> vocabulary_;
  std::unordered_map<std::string, std::shared_ptr<const grammar::JsonGrammar>> grammars_;  // ≤ kMaxCachedGrammars
  std::vector<uint8_t> allowed_;  // Sample's scratch: a constrained request's token mask
  std::unordered_map<uint64_t, std::unique_ptr<Seq>> all_;
  std::vector<Seq*> running_;  // in admission order; the newest is preempted first
  std::deque<Seq*> waiting_;
  static constexpr size_t kMaxCachedGrammars = 64;
  size_t waiting_forks_ = 0;  // choices waiting on a parent's prompt (in no queue)
  SchedulerStats stats_;
  // Step scratch.
  std::vector<ForwardInput> batch_;
  std::vector<ForwardOutput> outs_;
  std::vector<Seq*> batch_seqs_;
};

}  // namespace shoal
