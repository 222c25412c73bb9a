#include "control/wire.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "common/utf8.h"

namespace shoal::control {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian; add byte swaps");

namespace {

class Writer {
 public:
  template <class T>
  void Put(T v) {
    static_assert(std::is_arithmetic_v<T>);
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &v, sizeof(T));
  }
  void PutBool(bool b) { Put<uint8_t>(b ? 1 : 0); }
  void PutString(const std::string& s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  template <class T>
  void PutVector(const std::vector<T>& v) {
    Put<uint32_t>(static_cast<uint32_t>(v.size()));
    const size_t at = out_.size();
    out_.resize(at + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(out_.data() + at, v.data(), v.size() * sizeof(T));
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads fields in order; the first failure sticks and names the message and field.
class Reader {
 public:
  Reader(const char* message, std::span<const uint8_t> in) : message_(message), in_(in) {}

  template <class T>
  T Get(const char* field) {
    T v{};
    if (!Need(sizeof(T), field)) return v;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  bool GetBool(const char* field) {
    const uint8_t b = Get<uint8_t>(field);
    if (b > 1) Fail(field, "must be 0 or 1, got " + std::to_string(b));
    return b == 1;
  }
  float GetFinite(const char* field) {
    const float f = Get<float>(field);
    if (!std::isfinite(f)) Fail(field, "is not a finite number");
    return f;
  }
  std::string GetString(const char* field, uint32_t max_bytes = kMaxStringBytes) {
    const uint32_t n = Get<uint32_t>(field);
    if (n > max_bytes) {
      Fail(field, "length " + std::to_string(n) + " exceeds the limit of " + std::to_string(max_bytes));
      return {};
    }
    if (!Need(n, field)) return {};
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  template <class T>
  std::vector<T> GetVector(const char* field, uint32_t max_count) {
    const uint32_t n = Get<uint32_t>(field);
    if (n > max_count) {
      Fail(field, "count " + std::to_string(n) + " exceeds the limit of " + std::to_string(max_count));
      return {};
    }
    // Checked against the bytes present before allocating, so a lying count cannot make us allocate.
    if (!Need(static_cast<size_t>(n) * sizeof(T), field)) return {};
    std::vector<T> v(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }
  void Fail(const char* field, const std::string& what) {
    if (status_.ok()) status_ = InvalidArgument(std::string(message_) + "." + field + ": " + what);
  }
  Status Finish() {
    if (status_.ok() && pos_ != in_.size()) {
      status_ = InvalidArgument(std::string(message_) + ": " + std::to_string(in_.size() - pos_) +
                                " unexpected bytes after the last field");
    }
    return status_;
  }
  bool ok() const { return status_.ok(); }

 private:
  bool Need(size_t n, const char* field) {
    if (!status_.ok()) return false;
    if (in_.size() - pos_ < n) {
      Fail(field, "truncated: needs " + std::to_string(n) + " bytes, " + std::to_string(in_.size() - pos_) + " left");
      return false;
    }
    return true;
  }

  const char* message_;
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  Status status_;
};

void Encode(Writer& w, const Hello& m) {
  w.PutString(m.group);
  w.Put(m.rank);
  w.Put(m.size);
  w.PutString(m.model);
  w.Put(m.vocab_size);
  w.Put(m.max_context);
  w.Put(m.max_num_seqs);
  w.Put(m.block_size);
  w.Put(m.kv_blocks);
  w.Put(m.kv_tokens);
  w.Put(m.kv_bytes_per_token);
  w.Put(m.num_experts);
  w.PutVector(m.local_experts);
  w.Put(m.pid);
  w.PutString(m.host);
  w.PutString(m.token);
  w.Put(m.tp_size);
  w.Put(m.tp_rank);
  w.Put(m.replica);
}
void Encode(Writer& w, const Welcome& m) {
  w.Put(m.incarnation);
  w.Put(m.heartbeat_ms);
}
void Encode(Writer& w, const Reject& m) { w.PutString(m.reason); }
void Encode(Writer& w, const Submit& m) {
  w.Put(m.request);
  w.Put(m.max_tokens);
  w.PutBool(m.ignore_eos);
  w.Put(m.sampling.temperature);
  w.Put(m.sampling.top_p);
  w.Put(m.sampling.top_k);
  w.Put(m.sampling.presence_penalty);
  w.Put(m.sampling.frequency_penalty);
  w.Put(m.sampling.seed);
  w.Put(m.sampling.min_p);
  w.Put(m.sampling.repetition_penalty);
  w.Put(m.sampling.min_tokens);
  w.PutVector(m.stop_ids);
  w.PutVector(m.prompt);
  w.Put(m.resumed_output);
  w.PutVector(m.bias_ids);
  w.PutVector(m.bias_values);
  w.Put(m.logprobs);
  w.Put(m.prompt_logprobs);
  w.Put(m.fork_of);
  w.PutString(m.json_schema);
}
void Encode(Writer& w, const Cancel& m) { w.Put(m.request); }
void Encode(Writer& w, const Tokens& m) {
  w.Put<uint32_t>(static_cast<uint32_t>(m.events.size()));
  for (const TokenEvent& e : m.events) {
    w.Put(e.request);
    w.Put(e.token);
    w.Put(static_cast<uint8_t>(e.finish));
    w.PutString(e.error.substr(0, Utf8PrefixLength(e.error, kMaxStringBytes)));
    w.PutBool(e.has_logprob);
    if (e.has_logprob) {
      w.Put(e.logprob);
      w.PutVector(e.top_ids);
      w.PutVector(e.top_logprobs);
    }
    w.Put(e.prompt_position);
    if (e.prompt_position >= 0) w.Put(e.rank);
  }
}
void Encode(Writer& w, const Heartbeat& m) {
  w.Put(m.steps);
  w.Put(m.step_seconds_total);
  w.Put(m.last_step_seconds);
  w.Put(m.running);
  w.Put(m.waiting);
  w.Put(m.kv_blocks_used);
  w.Put(m.kv_blocks_total);
  w.Put(m.preemptions);
  w.PutVector(m.expert_tokens);
  for (const HistogramTotals* h : {&m.iteration_tokens, &m.queue_seconds, &m.prefill_seconds, &m.decode_seconds}) {
    w.PutVector(h->counts);
    w.Put(h->sum);
  }
  for (double v : {m.attention_seconds, m.mlp_seconds, m.exchange_seconds, m.tp_seconds}) w.Put(v);
  w.PutVector(m.layer_expert_tokens);
  w.Put(m.placement_generation);
  w.Put(m.rebalance_failed);
  w.PutString(m.rebalance_error);
}
void Encode(Writer& w, const Rebalance& m) {
  w.Put(m.generation);
  w.Put(m.layers);
  w.Put(m.ranks);
  w.PutVector(m.slots);
  w.PutVector(m.experts);
}
void Encode(Writer&, const Wake&) {}
void Encode(Writer&, const Shutdown&) {}
void Encode(Writer& w, const Bye& m) { w.PutString(m.reason); }
void Encode(Writer& w, const Rendezvous& m) {
  w.PutString(m.group);
  w.Put(m.rank);
  w.Put(m.size);
  w.PutString(m.model);
  w.PutString(m.token);
  w.PutString(m.id);
}
void Encode(Writer& w, const RendezvousId& m) { w.PutString(m.id); }

void CheckRankAndSize(Reader& r, uint32_t rank, uint32_t size) {
  if (size == 0 || size > kMaxGroupRanks) {
    r.Fail("size", "must be in 1.." + std::to_string(kMaxGroupRanks) + ", got " + std::to_string(size));
  }
  if (rank >= size) r.Fail("rank", std::to_string(rank) + " is not below size " + std::to_string(size));
}

StatusOr<Message> DecodeHello(Reader& r) {
  Hello m;
  m.group = r.GetString("group", 256);
  m.rank = r.Get<uint32_t>("rank");
  m.size = r.Get<uint32_t>("size");
  m.model = r.GetString("model", 1024);
  m.vocab_size = r.Get<uint32_t>("vocab_size");
  m.max_context = r.Get<uint32_t>("max_context");
  m.max_num_seqs = r.Get<uint32_t>("max_num_seqs");
  m.block_size = r.Get<uint32_t>("block_size");
  m.kv_blocks = r.Get<uint64_t>("kv_blocks");
  m.kv_tokens = r.Get<uint64_t>("kv_tokens");
  m.kv_bytes_per_token = r.Get<uint64_t>("kv_bytes_per_token");
  m.num_experts = r.Get<uint32_t>("num_experts");
  m.local_experts = r.GetVector<uint32_t>("local_experts", kMaxExperts);
  m.pid = r.Get<uint64_t>("pid");
  m.host = r.GetString("host", 256);
  m.token = r.GetString("token", 256);
  m.tp_size = r.Get<uint32_t>("tp_size");
  m.tp_rank = r.Get<uint32_t>("tp_rank");
  m.replica = r.Get<uint32_t>("replica");
  if (r.ok()) {
    if (m.group.empty()) r.Fail("group", "is empty");
    CheckRankAndSize(r, m.rank, m.size);
    if (m.tp_size == 0 || m.tp_size > m.size || m.size % m.tp_size != 0) {
      r.Fail("tp_size", std::to_string(m.tp_size) + " does not divide the group's " + std::to_string(m.size) + " ranks");
    } else if (m.tp_rank >= m.tp_size || m.replica >= m.size / m.tp_size) {
      r.Fail("tp_rank", "rank " + std::to_string(m.tp_rank) + " of replica " + std::to_string(m.replica) +
                            " is outside tp_size " + std::to_string(m.tp_size));
    }
    if (m.vocab_size == 0) r.Fail("vocab_size", "is 0");
    if (m.max_context == 0) r.Fail("max_context", "is 0");
    if (m.max_num_seqs == 0) r.Fail("max_num_seqs", "is 0");
    if (m.block_size == 0) r.Fail("block_size", "is 0");
    for (uint32_t e : m.local_experts) {
      if (e >= m.num_experts) r.Fail("local_experts", "expert " + std::to_string(e) + " ≥ num_experts");
    }
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

StatusOr<Message> DecodeRendezvous(Reader& r) {
  Rendezvous m;
  m.group = r.GetString("group", 256);
  m.rank = r.Get<uint32_t>("rank");
  m.size = r.Get<uint32_t>("size");
  m.model = r.GetString("model", 1024);
  m.token = r.GetString("token", 256);
  m.id = r.GetString("id", kMaxRendezvousIdBytes);
  if (r.ok()) {
    if (m.group.empty()) r.Fail("group", "is empty");
    CheckRankAndSize(r, m.rank, m.size);
    if (m.rank == 0 && m.id.empty()) r.Fail("id", "is empty: rank 0 posts the group's id");
    if (m.rank != 0 && !m.id.empty()) r.Fail("id", "only rank 0 posts an id");
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

StatusOr<Message> DecodeSubmit(Reader& r) {
  Submit m;
  m.request = r.Get<uint64_t>("request");
  m.max_tokens = r.Get<uint32_t>("max_tokens");
  m.ignore_eos = r.GetBool("ignore_eos");
  m.sampling.temperature = r.GetFinite("temperature");
  m.sampling.top_p = r.GetFinite("top_p");
  m.sampling.top_k = r.Get<int32_t>("top_k");
  m.sampling.presence_penalty = r.GetFinite("presence_penalty");
  m.sampling.frequency_penalty = r.GetFinite("frequency_penalty");
  m.sampling.seed = r.Get<uint64_t>("seed");
  m.sampling.min_p = r.GetFinite("min_p");
  m.sampling.repetition_penalty = r.GetFinite("repetition_penalty");
  m.sampling.min_tokens = r.Get<int32_t>("min_tokens");
  m.stop_ids = r.GetVector<int32_t>("stop_ids", kMaxStopIds);
  m.prompt = r.GetVector<int32_t>("prompt", kMaxTokensPerRequest);
  m.resumed_output = r.Get<uint32_t>("resumed_output");
  m.bias_ids = r.GetVector<int32_t>("bias_ids", kMaxLogitBias);
  m.bias_values = r.GetVector<float>("bias_values", kMaxLogitBias);
  m.logprobs = r.Get<int32_t>("logprobs");
  m.prompt_logprobs = r.Get<int32_t>("prompt_logprobs");
  m.fork_of = r.Get<uint64_t>("fork_of");
  m.json_schema = r.GetString("json_schema", static_cast<uint32_t>(kMaxJsonSchemaBytes));
  if (r.ok()) {
    if (m.logprobs < -1 || m.logprobs > kMaxTopLogprobs) r.Fail("logprobs", "is outside [-1, 20]");
    if (m.prompt_logprobs < -1 || m.prompt_logprobs > kMaxTopLogprobs) r.Fail("prompt_logprobs", "is outside [-1, 20]");
    if (!(m.sampling.min_p >= 0 && m.sampling.min_p <= 1)) r.Fail("min_p", "is outside [0, 1]");
    if (!(m.sampling.repetition_penalty > 0 && m.sampling.repetition_penalty <= 100)) {
      r.Fail("repetition_penalty", "is outside (0, 100]");
    }
    if (m.sampling.min_tokens < 0 || static_cast<uint32_t>(m.sampling.min_tokens) > m.max_tokens) {
      r.Fail("min_tokens", "is outside [0, max_tokens]");
    }
    if (m.bias_ids.size() != m.bias_values.size()) r.Fail("bias_values", "does not match bias_ids");
    for (int32_t t : m.bias_ids) {
      if (t < 0) r.Fail("bias_ids", "negative token id " + std::to_string(t));
    }
    for (float v : m.bias_values) {
      if (!(v >= -100 && v <= 100)) r.Fail("bias_values", "a bias outside [-100, 100]");
    }
    if (m.max_tokens == 0) r.Fail("max_tokens", "is 0");
    if (m.prompt.empty()) r.Fail("prompt", "is empty");
    if (m.resumed_output >= m.prompt.size() || m.resumed_output >= m.max_tokens) {
      r.Fail("resumed_output", "must leave a prompt token and a token to generate");
    }
    if (m.sampling.temperature < 0) r.Fail("temperature", "is negative");
    if (!(m.sampling.top_p > 0 && m.sampling.top_p <= 1)) r.Fail("top_p", "is outside (0, 1]");
    if (m.sampling.top_k < 0) r.Fail("top_k", "is negative");
    for (int32_t t : m.prompt) {
      if (t < 0) r.Fail("prompt", "negative token id " + std::to_string(t));
    }
    for (int32_t t : m.stop_ids) {
      if (t < 0) r.Fail("stop_ids", "negative token id " + std::to_string(t));
    }
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

StatusOr<Message> DecodeTokens(Reader& r) {
  Tokens m;
  const uint32_t n = r.Get<uint32_t>("events");
  if (n > kMaxEventsPerFrame) r.Fail("events", "count " + std::to_string(n) + " exceeds the limit");
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    TokenEvent e;
    e.request = r.Get<uint64_t>("events.request");
    e.token = r.Get<int32_t>("events.token");
    const uint8_t f = r.Get<uint8_t>("events.finish");
    if (f > static_cast<uint8_t>(FinishReason::kError)) r.Fail("events.finish", "unknown reason " + std::to_string(f));
    e.finish = static_cast<FinishReason>(f);
    e.error = r.GetString("events.error");
    e.has_logprob = r.GetBool("events.has_logprob");
    if (e.has_logprob) {
      e.logprob = r.Get<float>("events.logprob");
      e.top_ids = r.GetVector<int32_t>("events.top_ids", kMaxTopLogprobs);
      e.top_logprobs = r.GetVector<float>("events.top_logprobs", kMaxTopLogprobs);
      if (r.ok() && (e.top_ids.size() != e.top_logprobs.size() || e.token < 0)) {
        r.Fail("events.top_logprobs", "does not match top_ids, or no token");
      }
      if (r.ok() && !(e.logprob <= 0)) r.Fail("events.logprob", "is not a log-probability");
      for (size_t k = 0; k < e.top_ids.size() && r.ok(); ++k) {
        if (e.top_ids[k] < 0 || !(e.top_logprobs[k] <= 0)) r.Fail("events.top_logprobs", "a bad entry");
      }
    }
    e.prompt_position = r.Get<int32_t>("events.prompt_position");
    if (e.prompt_position >= 0) {
      e.rank = r.Get<int32_t>("events.rank");
      if (r.ok() && (e.prompt_position < 1 || !e.has_logprob || e.finish != FinishReason::kNone || e.rank < 1)) {
        r.Fail("events.prompt_position", "a prompt logprob needs a position >= 1, a logprob, a rank >= 1 and no end");
      }
    } else if (r.ok() && e.prompt_position != -1) {
      r.Fail("events.prompt_position", "is negative");
    }
    if (e.token < -1) r.Fail("events.token", "negative token id " + std::to_string(e.token));
    if (e.token == -1 && e.finish == FinishReason::kNone) r.Fail("events", "neither a token nor an end");
    m.events.push_back(std::move(e));
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

StatusOr<Message> DecodeRebalance(Reader& r) {
  Rebalance m;
  m.generation = r.Get<uint64_t>("generation");
  m.layers = r.Get<uint32_t>("layers");
  m.ranks = r.Get<uint32_t>("ranks");
  m.slots = r.GetVector<uint32_t>("slots", kMaxLayerExpertCounts);
  m.experts = r.GetVector<uint32_t>("experts", kMaxLayerExpertCounts);
  if (r.ok()) {
    if (m.generation == 0) r.Fail("generation", "is 0 (the start-up placement's)");
    if (m.generation > static_cast<uint64_t>(INT64_MAX)) r.Fail("generation", "is past 2^63 - 1");
    if (m.ranks == 0 || m.ranks > kMaxGroupRanks) r.Fail("ranks", "is " + std::to_string(m.ranks));
  }
  if (r.ok() && static_cast<uint64_t>(m.layers) * m.ranks != m.slots.size()) {
    r.Fail("slots", "has " + std::to_string(m.slots.size()) + " entries, not layers × ranks = " +
                        std::to_string(static_cast<uint64_t>(m.layers) * m.ranks));
  }
  uint64_t total = 0;
  for (uint32_t n : m.slots) total += n;
  if (r.ok() && total != m.experts.size()) {
    r.Fail("experts", "has " + std::to_string(m.experts.size()) + " entries, the slots add up to " + std::to_string(total));
  }
  for (size_t i = 0; r.ok() && i < m.experts.size(); ++i) {
    if (m.experts[i] >= kMaxExperts) r.Fail("experts", "holds expert " + std::to_string(m.experts[i]));
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

StatusOr<Message> DecodeHeartbeat(Reader& r) {
  Heartbeat m;
  m.steps = r.Get<uint64_t>("steps");
  m.step_seconds_total = r.Get<double>("step_seconds_total");
  m.last_step_seconds = r.Get<double>("last_step_seconds");
  m.running = r.Get<uint32_t>("running");
  m.waiting = r.Get<uint32_t>("waiting");
  m.kv_blocks_used = r.Get<uint64_t>("kv_blocks_used");
  m.kv_blocks_total = r.Get<uint64_t>("kv_blocks_total");
  m.preemptions = r.Get<uint64_t>("preemptions");
  m.expert_tokens = r.GetVector<uint64_t>("expert_tokens", kMaxExperts);
  const struct {
    HistogramTotals* h;
    const char* name;
    const std::vector<double>& bounds;
  } histograms[] = {{&m.iteration_tokens, "iteration_tokens", IterationTokenBuckets()},
                    {&m.queue_seconds, "queue_seconds", RequestPhaseBuckets()},
                    {&m.prefill_seconds, "prefill_seconds", RequestPhaseBuckets()},
                    {&m.decode_seconds, "decode_seconds", RequestPhaseBuckets()}};
  for (const auto& x : histograms) {
    x.h->counts = r.GetVector<uint64_t>(x.name, x.bounds.size() + 1);
    x.h->sum = r.Get<double>(x.name);
    // Empty: nothing observed yet; otherwise one count per bucket and +Inf.
    if (r.ok() && !x.h->counts.empty() && x.h->counts.size() != x.bounds.size() + 1) {
      r.Fail(x.name, "has " + std::to_string(x.h->counts.size()) + " buckets, not " + std::to_string(x.bounds.size() + 1));
    }
    if (r.ok() && (!std::isfinite(x.h->sum) || x.h->sum < 0)) r.Fail(x.name, "sum is invalid");
  }
  const struct {
    double* v;
    const char* name;
  } phases[] = {{&m.attention_seconds, "attention_seconds"}, {&m.mlp_seconds, "mlp_seconds"},
                {&m.exchange_seconds, "exchange_seconds"}, {&m.tp_seconds, "tp_seconds"}};
  for (const auto& p : phases) {
    *p.v = r.Get<double>(p.name);
    if (r.ok() && (!std::isfinite(*p.v) || *p.v < 0)) r.Fail(p.name, "is invalid");
  }
  m.layer_expert_tokens = r.GetVector<uint64_t>("layer_expert_tokens", kMaxLayerExpertCounts);
  if (r.ok() && !m.layer_expert_tokens.empty() &&
      (m.expert_tokens.empty() || m.layer_expert_tokens.size() % m.expert_tokens.size() != 0)) {
    r.Fail("layer_expert_tokens", "has " + std::to_string(m.layer_expert_tokens.size()) +
                                      " entries, not a multiple of the experts' " +
                                      std::to_string(m.expert_tokens.size()));
  }
  m.placement_generation = r.Get<uint64_t>("placement_generation");
  m.rebalance_failed = r.Get<uint64_t>("rebalance_failed");
  m.rebalance_error = r.GetString("rebalance_error", kMaxStringBytes);
  if (r.ok()) {
    if (!std::isfinite(m.step_seconds_total) || m.step_seconds_total < 0) r.Fail("step_seconds_total", "is invalid");
    if (!std::isfinite(m.last_step_seconds) || m.last_step_seconds < 0) r.Fail("last_step_seconds", "is invalid");
    if (m.kv_blocks_used > m.kv_blocks_total) r.Fail("kv_blocks_used", "exceeds kv_blocks_total");
  }
  SHOAL_RETURN_IF_ERROR(r.Finish());
  return Message(std::move(m));
}

}  // namespace

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHello: return "Hello";
    case MessageType::kWelcome: return "Welcome";
    case MessageType::kReject: return "Reject";
    case MessageType::kSubmit: return "Submit";
    case MessageType::kCancel: return "Cancel";
    case MessageType::kTokens: return "Tokens";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kWake: return "Wake";
    case MessageType::kShutdown: return "Shutdown";
    case MessageType::kBye: return "Bye";
    case MessageType::kRendezvous: return "Rendezvous";
    case MessageType::kRendezvousId: return "RendezvousId";
    case MessageType::kRebalance: return "Rebalance";
  }
  return "unknown";
}

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

MessageType TypeOf(const Message& m) {
  return static_cast<MessageType>(m.index() + 1);  // the variant lists the types in enum order
}

std::string EncodeFrame(const Message& m) {
  Writer w;
  w.bytes().resize(kHeaderBytes);
  std::visit([&](const auto& msg) { Encode(w, msg); }, m);
  FrameHeader h;
  h.type = static_cast<uint16_t>(TypeOf(m));
  h.payload_bytes = static_cast<uint32_t>(w.bytes().size() - kHeaderBytes);
  std::memcpy(w.bytes().data(), &h, kHeaderBytes);
  return std::move(w.bytes());
}

StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() != kHeaderBytes) return InvalidArgument("frame header: needs 12 bytes");
  FrameHeader h;
  std::memcpy(&h, bytes.data(), kHeaderBytes);
  if (h.magic != kMagic) return InvalidArgument("frame header: bad magic (not a shoal control connection)");
  if (h.version != kProtocolVersion) {
    return InvalidArgument("frame header: protocol version " + std::to_string(h.version) + ", this build speaks " +
                           std::to_string(kProtocolVersion) + " (coordinator and workers must run the same shoal)");
  }
  if (h.type < static_cast<uint16_t>(MessageType::kHello) || h.type > static_cast<uint16_t>(MessageType::kRebalance)) {
    return InvalidArgument("frame header: unknown message type " + std::to_string(h.type));
  }
  if (h.payload_bytes > kMaxPayloadBytes) {
    return InvalidArgument("frame header: payload of " + std::to_string(h.payload_bytes) + " bytes exceeds the limit of " +
                           std::to_string(kMaxPayloadBytes));
  }
  return h;
}

StatusOr<Message> DecodePayload(MessageType type, std::span<const uint8_t> payload) {
  Reader r(MessageTypeName(type), payload);
  switch (type) {
    case MessageType::kHello: return DecodeHello(r);
    case MessageType::kWelcome: {
      Welcome m;
      m.incarnation = r.Get<uint64_t>("incarnation");
      m.heartbeat_ms = r.Get<uint32_t>("heartbeat_ms");
      if (r.ok() && (m.heartbeat_ms < 10 || m.heartbeat_ms > 60000)) r.Fail("heartbeat_ms", "outside 10..60000");
      SHOAL_RETURN_IF_ERROR(r.Finish());
      return Message(m);
    }
    case MessageType::kReject: {
      Reject m{r.GetString("reason")};
      SHOAL_RETURN_IF_ERROR(r.Finish());
      return Message(std::move(m));
    }
    case MessageType::kSubmit: return DecodeSubmit(r);
    case MessageType::kCancel: {
      Cancel m{r.Get<uint64_t>("request")};
      SHOAL_RETURN_IF_ERROR(r.Finish());
      return Message(m);
    }
    case MessageType::kTokens: return DecodeTokens(r);
    case MessageType::kHeartbeat: return DecodeHeartbeat(r);
    case MessageType::kWake: SHOAL_RETURN_IF_ERROR(r.Finish()); return Message(Wake{});
    case MessageType::kShutdown: SHOAL_RETURN_IF_ERROR(r.Finish()); return Message(Shutdown{});
    case MessageType::kBye: {
      Bye m{r.GetString("reason")};
      SHOAL_RETURN_IF_ERROR(r.Finish());
      return Message(std::move(m));
    }
    case MessageType::kRendezvous: return DecodeRendezvous(r);
    case MessageType::kRebalance: return DecodeRebalance(r);
    case MessageType::kRendezvousId: {
      RendezvousId m{r.GetString("id", kMaxRendezvousIdBytes)};
      if (r.ok() && m.id.empty()) r.Fail("id", "is empty");
      SHOAL_RETURN_IF_ERROR(r.Finish());
      return Message(std::move(m));
    }
  }
  return InvalidArgument("unknown message type " + std::to_string(static_cast<int>(type)));
}

}  // namespace shoal::control
