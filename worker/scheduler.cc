#include "worker/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "control/admission.h"

namespace shoal {

namespace {

std::string Name(uint64_t id) { return "request " + std::to_string(id); }

// Every token's logprob, once: the top alternatives and a prompt token's rank read from it.
std::vector<float> AllLogprobs(const kernels::LogSoftmax& lp, int vocab) {
  std::vector<float> at(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) at[i] = lp.At(i);
  return at;
}

// The k most likely tokens (ties to the lower id) and their logprobs, most likely first.
void TopLogprobs(const std::vector<float>& at, int k, std::vector<int32_t>* ids, std::vector<float>* values) {
  const int vocab = static_cast<int>(at.size());
  const auto n = static_cast<size_t>(std::clamp(k, 0, vocab));
  if (n == 0) return;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) order[i] = i;
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](int32_t a, int32_t b) { return at[a] != at[b] ? at[a] > at[b] : a < b; });
  ids->assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n));
  for (int32_t t : *ids) values->push_back(at[t]);
}

}  // namespace

Scheduler::Scheduler(StepEngine& engine, std::shared_ptr<const grammar::TokenVocabulary> vocabulary)
    : engine_(engine), vocabulary_(std::move(vocabulary)) {}

StatusOr<std::shared_ptr<const grammar::JsonGrammar>> Scheduler::Grammar(const std::string& schema, const std::string& name) {
  if (auto it = grammars_.find(schema); it != grammars_.end()) return it->second;
  StatusOr<std::shared_ptr<const grammar::JsonGrammar>> g = grammar::CompileJsonSchema(schema, name + ": json_schema");
  if (!g.ok()) return InvalidArgument(g.status().message());
  if (grammars_.size() >= kMaxCachedGrammars) grammars_.clear();
  grammars_.emplace(schema, *g);
  return g;
}

Scheduler::~Scheduler() {
  for (auto& [id, s] : all_) engine_.ReleaseSequence(s->seq);
}

int64_t Scheduler::Fits(const Seq& s, int64_t avail) const {
  return engine_.kv_blocks().TokensThatFit(static_cast<int64_t>(s.fed), avail);
}

Status Scheduler::Submit(ScheduledRequest r) {
  const ModelConfig& c = engine_.config();
  const std::string name = Name(r.id);
  if (all_.count(r.id) != 0) return InvalidArgument(name + ": already submitted");
  if (r.prompt.empty()) return InvalidArgument(name + ": empty prompt");
  if (r.max_tokens < 1) return InvalidArgument(name + ": max_tokens must be at least 1");
  // A resumed request (migrated from a failed group): the last resumed_output prompt tokens are its
  // own earlier output, which counts toward max_tokens, the penalties and the sampling positions.
  if (r.resumed_output < 0 || r.resumed_output >= static_cast<int64_t>(r.prompt.size()) ||
      r.resumed_output >= r.max_tokens) {
    return InvalidArgument(name + ": resumed_output " + std::to_string(r.resumed_output) +
                           " must leave at least one prompt token and one token to generate");
  }
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return InvalidArgument(name + ": prompt token " + std::to_string(t) + " is outside the vocabulary of " +
                             std::to_string(c.vocab_size));
    }
  }
  if (r.logprobs < -1 || r.logprobs > kMaxTopLogprobs || r.prompt_logprobs < -1 || r.prompt_logprobs > kMaxTopLogprobs) {
    return InvalidArgument(name + ": logprobs and prompt_logprobs must be in [-1, " + std::to_string(kMaxTopLogprobs) + "]");
  }
  if (r.bias_ids.size() != r.bias_values.size() || r.bias_ids.size() > static_cast<size_t>(kMaxLogitBias)) {
    return InvalidArgument(name + ": logit_bias ids and values do not pair up (or exceed " +
                           std::to_string(kMaxLogitBias) + " entries)");
  }
  for (int32_t t : r.bias_ids) {
    if (t < 0 || t >= c.vocab_size) {
      return InvalidArgument(name + ": logit_bias token " + std::to_string(t) + " is outside the vocabulary");
    }
  }
  std::unique_ptr<grammar::TokenConstraint> constraint;
  if (!r.json_schema.empty()) {
    if (vocabulary_ == nullptr) {
      return InvalidArgument(name + ": its output is constrained to a JSON schema, which needs the model's "
                             "tokenizer.json on the worker (none was loaded)");
    }
    SHOAL_ASSIGN_OR_RETURN(std::shared_ptr<const grammar::JsonGrammar> g, Grammar(r.json_schema, name));
    constraint = std::make_unique<grammar::TokenConstraint>(std::move(g), vocabulary_);
    // A resumed request's earlier output was written under the same constraint.
    for (size_t i = r.prompt.size() - static_cast<size_t>(r.resumed_output); i < r.prompt.size(); ++i) {
      if (!constraint->Accept(r.prompt[i])) {
        return InvalidArgument(name + ": its resumed output does not fit its json_schema");
      }
    }
  }
  // The same check the coordinator admitted the request with (control/admission.h).
  const control::Fit fit = control::CheckFit(
      static_cast<int64_t>(r.prompt.size()) - r.resumed_output, r.max_tokens,
      {c.max_position_embeddings, engine_.kv_blocks().MaxSequenceTokens(engine_.max_step_tokens())});
  if (fit.exceeded == control::Limit::kKvCache) {
    return ResourceExhausted(name + ": " + fit.message + " (raise kv_cache.memory_mib)");
  }
  if (!fit.ok()) return InvalidArgument(name + ": " + fit.message);
  auto s = std::make_unique<Seq>();
  s->tokens = r.prompt;
  s->generated = static_cast<int>(r.resumed_output);
  for (size_t i = r.prompt.size() - static_cast<size_t>(r.resumed_output); i < r.prompt.size(); ++i) {
    ++s->output_counts[r.prompt[i]];
  }
  if (r.sampling.repetition_penalty != 1.0f) {
    s->seen.assign(static_cast<size_t>(c.vocab_size), 0);
    for (int32_t t : r.prompt) s->seen[t] = 1;
  }
  if (r.prompt_logprobs >= 0) s->prompt_lp_end = r.prompt.size() - static_cast<size_t>(r.resumed_output);
  s->req = std::move(r);
  s->constraint = std::move(constraint);
  s->submitted = std::chrono::steady_clock::now();
  Seq* parent = nullptr;
  if (s->req.fork_of != 0 && s->req.resumed_output == 0 && s->req.prompt_logprobs < 0) {
    auto it = all_.find(s->req.fork_of);
    // The parent has not sampled yet (so it is still before or inside its prompt) and has the same
    // prompt; a choice waiting on another waits on that one's parent (only parents fork).
    if (it != all_.end() && !it->second->has_first_token && it->second->req.resumed_output == 0 &&
        it->second->tokens == s->tokens) {
      parent = it->second.get();
      while (parent->parent != nullptr) parent = parent->parent;
    }
  }
  if (parent != nullptr) {
    s->parent = parent;
    parent->children.push_back(s.get());
    ++waiting_forks_;
  } else {
    waiting_.push_back(s.get());
  }
  all_.emplace(s->req.id, std::move(s));
  return Status::Ok();
}

void Scheduler::Orphan(Seq* child) {
  child->parent = nullptr;
  --waiting_forks_;
  waiting_.push_front(child);  // it was due with its parent: ahead of later arrivals
}

void Scheduler::ForkChildren(Seq* s, const std::vector<float>& logits, std::vector<control::TokenEvent>* events) {
  std::vector<Seq*> kids = std::move(s->children);
  s->children.clear();
  std::vector<Seq*> forked;
  for (Seq* c : kids) {
    StatusOr<SeqId> id = engine_.ForkSequence(s->seq);
    if (!id.ok()) {  // no free slot or block: it prefills on its own when there is room
      Orphan(c);
      continue;
    }
    c->parent = nullptr;
    --waiting_forks_;
    c->seq = *id;
    c->fed = s->fed;
    c->was_scheduled = true;
    c->scheduled = std::max(c->submitted, s->scheduled);
    stats_.queue_seconds.Observe(std::chrono::duration<double>(c->scheduled - c->submitted).count(),
                                 control::RequestPhaseBuckets());
    running_.push_back(c);
    forked.push_back(c);
  }
  for (Seq* c : forked) {
    std::vector<float> own = logits;
    Sample(c, own, events);
  }
}

bool Scheduler::Cancel(uint64_t id) {
  auto it = all_.find(id);
  if (it == all_.end()) return false;
  Finish(it->second.get());
  return true;
}

void Scheduler::Finish(Seq* s) {
  if (s->parent != nullptr) {
    auto& siblings = s->parent->children;
    siblings.erase(std::remove(siblings.begin(), siblings.end(), s), siblings.end());
    --waiting_forks_;
  }
  for (Seq* c : std::vector<Seq*>(std::move(s->children))) Orphan(c);
  engine_.ReleaseSequence(s->seq);
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
  all_.erase(s->req.id);  // destroys *s
}

int64_t Scheduler::Preempt(Seq* s) {
  // Measured, not computed from its length: blocks it shares with forked choices stay in use.
  const int64_t free_before = engine_.kv_blocks().free_blocks();
  engine_.ReleaseSequence(s->seq);
  const int64_t freed = engine_.kv_blocks().free_blocks() - free_before;
  s->seq = -1;
  s->fed = 0;
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  waiting_.push_front(s);
  ++stats_.preemptions;
  return freed;
}

void Scheduler::FailAll(const std::string& why, std::vector<control::TokenEvent>* events) {
  std::vector<uint64_t> ids;
  for (auto& [id, s] : all_) ids.push_back(id);
  for (uint64_t id : ids) {
    events->push_back({id, -1, control::FinishReason::kError, why});
    Finish(all_.at(id).get());
  }
}

int64_t Scheduler::ChunkLimit(const Seq& s, int64_t logit_rows_left) const {
  return s.prompt_lp_next < s.prompt_lp_end ? std::min(kPromptLogprobRows, logit_rows_left) : INT64_MAX;
}

// Row i of a chunk starting at `fed` is the distribution of the token at position fed + i + 1.
void Scheduler::ReportPromptLogprobs(Seq* s, size_t fed, const std::vector<float>& rows,
                                     std::vector<control::TokenEvent>* events) {
  const int vocab = engine_.config().vocab_size;
  const size_t n_rows = rows.size() / static_cast<size_t>(vocab);
  const size_t last = std::min(fed + n_rows, s->prompt_lp_end - 1);  // the last position these rows give
  for (size_t p = std::max(s->prompt_lp_next, fed + 1); p <= last; ++p) {
    const float* row = rows.data() + (p - 1 - fed) * static_cast<size_t>(vocab);
    const std::vector<float> at = AllLogprobs(kernels::LogSoftmax(row, vocab, 1.0f), vocab);
    const int32_t token = s->tokens[p];
    control::TokenEvent e{s->req.id, token, control::FinishReason::kNone, {}};
    e.has_logprob = true;
    e.logprob = at[token];
    e.prompt_position = static_cast<int32_t>(p);
    e.rank = 1 + static_cast<int32_t>(std::count_if(at.begin(), at.end(), [&](float v) { return v > e.logprob; }));
    TopLogprobs(at, s->req.prompt_logprobs, &e.top_ids, &e.top_logprobs);
    events->push_back(std::move(e));
  }
  s->prompt_lp_next = std::max(s->prompt_lp_next, last + 1);
}

// What the sampler draws from, in vLLM's order: logit_bias, the min_tokens mask of the stop ids, the
// repetition penalty (prompt and output), presence/frequency penalties (output); then SampleToken:
// temperature, min-p, top-k, top-p. Logprobs (when asked) are the log-softmax of the logits after the
// penalties, at the temperature (1 when greedy): vLLM's processed_logprobs.
void Scheduler::Sample(Seq* s, std::vector<float>& logits, std::vector<control::TokenEvent>* events) {
  const ScheduledRequest& r = s->req;
  const int vocab = engine_.config().vocab_size;
  if (s->constraint != nullptr) {
    s->constraint->Allowed(r.stop_ids, vocab, &allowed_);
    if (std::find(allowed_.begin(), allowed_.end(), 1) == allowed_.end()) {
      // Whole, with no stop id to end it (ignore_eos): it ends here. Otherwise it cannot go on.
      if (s->constraint->complete()) {
        events->push_back({r.id, -1, control::FinishReason::kStop, {}});
      } else {
        events->push_back({r.id, -1, control::FinishReason::kError, Name(r.id) + ": no token can continue its json_schema"});
      }
      Finish(s);
      return;
    }
    for (int t = 0; t < vocab; ++t) {
      if (!allowed_[static_cast<size_t>(t)]) logits[static_cast<size_t>(t)] = -INFINITY;
    }
  }
  for (size_t i = 0; i < r.bias_ids.size(); ++i) logits[r.bias_ids[i]] += r.bias_values[i];
  // min_tokens holds the stop ids back — unless a constraint is complete and allows nothing else.
  bool only_stops = false;
  if (s->constraint != nullptr && s->constraint->complete()) {
    only_stops = true;
    for (size_t t = 0; t < allowed_.size() && only_stops; ++t) {
      only_stops = !allowed_[t] || std::find(r.stop_ids.begin(), r.stop_ids.end(), static_cast<int32_t>(t)) != r.stop_ids.end();
    }
  }
  if (s->generated < r.sampling.min_tokens && !only_stops) {
    for (int32_t t : r.stop_ids) {
      if (t >= 0 && t < static_cast<int32_t>(logits.size())) logits[t] = -INFINITY;
    }
  }
  if (!s->seen.empty()) {
    const float rp = r.sampling.repetition_penalty;
    for (size_t t = 0; t < s->seen.size(); ++t) {
      if (s->seen[t]) logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
    }
  }
  if (r.sampling.presence_penalty != 0.0f || r.sampling.frequency_penalty != 0.0f) {
    for (const auto& [tok, n] : s->output_counts) {
      logits[tok] -= r.sampling.presence_penalty + r.sampling.frequency_penalty * static_cast<float>(n);
    }
  }
  // Log-softmax of what the sampler draws from, before SampleToken rewrites NaNs (they count as -inf).
  std::optional<kernels::LogSoftmax> log_softmax;
  if (r.logprobs >= 0) log_softmax.emplace(logits.data(), vocab, r.sampling.temperature);
  auto logprob = [&](int32_t t) { return log_softmax->At(t); };
  std::vector<int32_t> top_ids;
  std::vector<float> top_lp;
  if (r.logprobs > 0) TopLogprobs(AllLogprobs(*log_softmax, vocab), r.logprobs, &top_ids, &top_lp);
  s->rng.seed(TokenSeed(r.sampling.seed, static_cast<uint64_t>(s->generated)));
  // (SampleToken turns NaN logits into -inf in place, which logprob() already treats them as.)
  const int32_t tok = kernels::SampleToken(logits.data(), vocab, r.sampling, s->rng);
  const bool stop = std::find(r.stop_ids.begin(), r.stop_ids.end(), tok) != r.stop_ids.end();
  // (Only a row of non-finite logits can draw a masked token.)
  if (s->constraint != nullptr && (stop ? !s->constraint->complete() : !s->constraint->Accept(tok))) {
    events->push_back({r.id, -1, control::FinishReason::kError,
                       Name(r.id) + ": drew token " + std::to_string(tok) + ", which its json_schema does not allow "
                       "(the logits were not finite)"});
    Finish(s);
    return;
  }
  s->tokens.push_back(tok);
  ++s->generated;
  ++s->output_counts[tok];
  if (!s->seen.empty()) s->seen[tok] = 1;
  control::TokenEvent e{r.id, tok, control::FinishReason::kNone, {}};
  if (r.logprobs >= 0) {
    e.has_logprob = true;
    e.logprob = logprob(tok);
    e.top_ids = std::move(top_ids);
    e.top_logprobs = std::move(top_lp);
  }
  if (stop) {
    e.finish = control::FinishReason::kStop;
  } else if (s->generated >= r.max_tokens) {
    e.finish = control::FinishReason::kLength;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!s->has_first_token) {
    s->has_first_token = true;
    s->first_token = now;
    stats_.prefill_seconds.Observe(std::chrono::duration<double>(now - s->scheduled).count(),
                                   control::RequestPhaseBuckets());
  }
  if (e.finish != control::FinishReason::kNone) {
    stats_.decode_seconds.Observe(std::chrono::duration<double>(now - s->first_token).count(),
                                  control::RequestPhaseBuckets());
  }
  events->push_back(std::move(e));
  if (events->back().finish != control::FinishReason::kNone) Finish(s);
}

Status Scheduler::Step(std::vector<control::TokenEvent>* events) {
  const KvBlockPool& kv = engine_.kv_blocks();
  int64_t budget = engine_.max_step_tokens();
  int64_t avail = kv.free_blocks();
  int64_t logit_rows_left = kPromptLogprobStepRows;  // prompt-logprob rows this step may still return
  batch_.clear();
  batch_seqs_.clear();
  auto add = [&](Seq* s, int64_t n) {
    avail -= kv.BlocksToGrow(static_cast<int64_t>(s->fed), n);
    // Logits for every token of a chunk whose rows give prompt logprobs still to report.
    const bool rows = s->prompt_lp_next < s->prompt_lp_end && s->prompt_lp_next <= s->fed + static_cast<size_t>(n);
    if (rows) logit_rows_left -= n;
    batch_.push_back({s->seq, std::span<const int32_t>(s->tokens).subspan(s->fed, static_cast<size_t>(n)), rows});
    batch_seqs_.push_back(s);
    budget -= n;
  };

  // 1. One decode token for every running request whose prompt is in, oldest first; when blocks run
  //    out, the newest running request makes room (possibly the one asking).
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Seq* s = running_[i];
    if (s->tokens.size() - s->fed != 1) continue;
    while (Fits(*s, avail) < 1 && running_.back() != s) avail += Preempt(running_.back());
    if (Fits(*s, avail) < 1) {
      avail += Preempt(s);
      break;  // s was the newest: everything after it is gone too
    }
    add(s, 1);
  }
  // 2. Prompt chunks: running requests part-way through their prompt, then new ones, first come first
  //    served, while the budget, the sequence slots and the KV blocks allow.
  for (Seq* s : running_) {
    if (budget <= 0) break;
    const int64_t left = static_cast<int64_t>(s->tokens.size() - s->fed);
    if (left <= 1) continue;  // decodes were placed above (one that did not fit the budget waits a step)
    const int64_t n = std::min({left, budget, Fits(*s, avail), ChunkLimit(*s, logit_rows_left)});
    if (n > 0) add(s, n);
  }
  while (budget > 0 && !waiting_.empty()) {
    Seq* s = waiting_.front();
    const int64_t n =
        std::min({static_cast<int64_t>(s->tokens.size()), budget, Fits(*s, avail), ChunkLimit(*s, logit_rows_left)});
    if (n <= 0) break;
    StatusOr<SeqId> id = engine_.NewSequence();
    if (!id.ok()) break;  // every slot (engine.max_num_seqs) is taken
    s->seq = *id;
    waiting_.pop_front();
    running_.push_back(s);
    if (!s->was_scheduled) {  // a preempted request's later rescheduling is not queueing again
      s->was_scheduled = true;
      s->scheduled = std::chrono::steady_clock::now();
      stats_.queue_seconds.Observe(std::chrono::duration<double>(s->scheduled - s->submitted).count(),
                                   control::RequestPhaseBuckets());
    }
    add(s, n);
  }

  stats_.last_step_decode_tokens = 0;
  stats_.last_step_prompt_tokens = 0;
  for (size_t b = 0; b < batch_seqs_.size(); ++b) {
    const Seq* s = batch_seqs_[b];
    const bool decode = batch_[b].tokens.size() == 1 && s->fed + 1 == s->tokens.size() &&
                        s->tokens.size() > s->req.prompt.size();
    (decode ? stats_.last_step_decode_tokens : stats_.last_step_prompt_tokens) +=
        static_cast<int64_t>(batch_[b].tokens.size());
  }
  if (!batch_.empty()) {
    stats_.iteration_tokens.Observe(
        static_cast<double>(stats_.last_step_decode_tokens + stats_.last_step_prompt_tokens),
        control::IterationTokenBuckets());
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status st = engine_.Forward(batch_, &outs_);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++stats_.steps;
  stats_.step_seconds_total += secs;
  stats_.last_step_seconds = secs;
  if (!st.ok()) {
    if (comm::IsGroupFailure(st)) return st;
    // The engine rejected this rank's batch (nothing changed); its requests end with the reason.
    for (Seq* s : batch_seqs_) {
      events->push_back({s->req.id, -1, control::FinishReason::kError, st.message()});
      Finish(s);
    }
    return Status::Ok();
  }
  const auto V = static_cast<size_t>(engine_.config().vocab_size);
  for (size_t b = 0; b < batch_seqs_.size(); ++b) {
    Seq* s = batch_seqs_[b];
    std::vector<float>& logits = outs_[b].logits;
    if (batch_[b].all_logits) {
      ReportPromptLogprobs(s, s->fed, logits, events);
      logits.erase(logits.begin(), logits.end() - static_cast<std::ptrdiff_t>(V));  // the last row samples
    }
    s->fed += batch_[b].tokens.size();
    // The step that feeds a request's last known token gives its next one.
    if (s->fed == s->tokens.size()) {
      if (!s->children.empty()) ForkChildren(s, logits, events);
      Sample(s, logits, events);
    }
  }
  return Status::Ok();
}

}  // namespace shoal
