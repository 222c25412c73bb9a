// The control protocol between the coordinator and the workers: versioned, length-prefixed binary
// frames over TCP. Data only — integers, floats, strings and token ids; never code or serialized
// objects. Every field is checked on receipt (sizes, ranges, counts against the bytes present), so a
// corrupt or hostile peer produces an InvalidArgument naming the message and field, not a crash.
//
// Frame: a 12-byte header {magic "SHCP", u16 version, u16 type, u32 payload bytes} then the payload,
// all little-endian. A connection opens with Hello (worker → coordinator) answered by Welcome or
// Reject; the version must match exactly. After that:
//   coordinator → worker: Submit, Cancel, Wake, Shutdown, Rebalance
//   worker → coordinator: Tokens (a batch of per-request events after each step), Heartbeat, Bye
// Heartbeats go every heartbeat_ms from a thread of their own, so a busy step does not look like a
// dead worker, while a stopped process (or machine) does.
// A second kind of connection is the rendezvous of a group launched without MPI: its only frame is
// Rendezvous (worker → coordinator), answered by RendezvousId or Reject. Rank 0 posts the bytes its
// data plane's ranks must share (NCCL's unique id: rank 0's bootstrap address, data only); the other
// ranks wait for them. The connection then closes; the rank later opens its serving connection.
// Recovery and migration (a later issue) fit in: requests carry their full token history in Submit,
// so a coordinator can resubmit one elsewhere; groups carry an incarnation so a re-formed group's
// workers are told apart from a dead one's.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/sampling_params.h"
#include "common/status.h"
#include "control/engine_histograms.h"

namespace shoal::control {

inline constexpr uint32_t kMagic = 0x50434853;  // "SHCP" read as little-endian u32
inline constexpr uint16_t kProtocolVersion = 8;
inline constexpr size_t kHeaderBytes = 12;
// Upper bound of one frame's payload: a Submit of kMaxTokensPerRequest ids plus its fields fits.
inline constexpr uint32_t kMaxPayloadBytes = 16u << 20;
inline constexpr uint32_t kMaxTokensPerRequest = 1u << 21;
inline constexpr uint32_t kMaxStopIds = 1024;
inline constexpr uint32_t kMaxStringBytes = 4096;
inline constexpr uint32_t kMaxEventsPerFrame = 1u << 16;
inline constexpr uint32_t kMaxExperts = 1u << 16;
// Heartbeat.layer_expert_tokens entries (layers × experts), and a Rebalance's slots: 8 MiB at most.
inline constexpr uint32_t kMaxLayerExpertCounts = 1u << 20;
inline constexpr uint32_t kMaxGroupRanks = 65536;
inline constexpr uint32_t kMaxRendezvousIdBytes = 1024;  // NCCL's unique id is 128
// Upper bound of a Hello's or a Rendezvous's payload with every field at its limit (a Hello with
// kMaxExperts local experts and its strings at their decoders' limits is ~264 KB; wire_test checks
// the bound): the coordinator reads no larger first frame from a peer it has not authenticated yet.
inline constexpr uint32_t kMaxHandshakePayloadBytes = 320u << 10;

enum class MessageType : uint16_t {
  kHello = 1,
  kWelcome = 2,
  kReject = 3,
  kSubmit = 4,
  kCancel = 5,
  kTokens = 6,
  kHeartbeat = 7,
  kWake = 8,
  kShutdown = 9,
  kBye = 10,
  kRendezvous = 11,
  kRendezvousId = 12,
  kRebalance = 13,
};
const char* MessageTypeName(MessageType t);

struct FrameHeader {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;
  uint32_t payload_bytes = 0;
};
static_assert(sizeof(FrameHeader) == kHeaderBytes, "the header is sent as 12 packed bytes");

// Worker → coordinator, first frame: who it is and what it can hold.
struct Hello {
  std::string group;         // engine group name (config `parallel.group`)
  uint32_t rank = 0, size = 1;
  std::string model;         // served model name; must match the coordinator's
  uint32_t vocab_size = 0;
  uint32_t max_context = 0;  // tokens (model max_position_embeddings, or the configured limit)
  uint32_t max_num_seqs = 0;
  uint32_t block_size = 0;
  uint64_t kv_blocks = 0;
  // The longest sequence its KV cache holds (blocks × block_size unless layer groups free blocks early).
  uint64_t kv_tokens = 0;
  uint64_t kv_bytes_per_token = 0;  // one token's K/V over all layers in the rank's cache
  uint32_t num_experts = 0;  // the model's; 0 for a dense model
  std::vector<uint32_t> local_experts;  // experts this rank holds
  uint64_t pid = 0;
  std::string host;
  // The cluster's join secret (SHOAL_CONTROL_TOKEN), when the coordinator has one: only workers that
  // know it may join and receive prompts.
  std::string token;
  // Attention TP (protocol 5): the group's ranks form size / tp_size replicas of tp_size ranks; this
  // rank is tp_rank of replica `replica`. Requests go to a replica's tp_rank 0, which hands them to
  // the replica's other ranks.
  uint32_t tp_size = 1, tp_rank = 0, replica = 0;
};

struct Welcome {
  uint64_t incarnation = 0;  // of the group, as the coordinator numbers it
  uint32_t heartbeat_ms = 500;
};

struct Reject {
  std::string reason;
};

struct Submit {
  uint64_t request = 0;
  uint32_t max_tokens = 0;  // new tokens
  bool ignore_eos = false;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generation ends after one of these (EOS included by the coordinator)
  std::vector<int32_t> prompt;
  // A request resumed after its group failed: the last resumed_output prompt tokens are its own
  // earlier output (they count toward max_tokens and the penalties; sampling continues after them).
  uint32_t resumed_output = 0;
  // OpenAI logit_bias: bias_values[i] added to token bias_ids[i]'s logit (≤ kMaxLogitBias entries).
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  // -1: no logprobs; 0 .. kMaxTopLogprobs: each sampled token's logprob and this many alternatives.
  int32_t logprobs = -1;
  // -1: none; 0 .. kMaxTopLogprobs: the logprob of every prompt token after the first (of the prompt
  // as first submitted: not of resumed output), its vocabulary rank and this many alternatives.
  int32_t prompt_logprobs = -1;
  // n > 1: this is a later choice of request fork_of (same prompt, sent just before on this channel);
  // the worker prefills the prompt once and forks it (worker/scheduler.h). 0: none.
  uint64_t fork_of = 0;
  // Non-empty: the output is constrained to this JSON schema (grammar/json_schema.h; a forced tool
  // call), ≤ kMaxJsonSchemaBytes. The worker compiles it; the stop ids end it only once it is complete.
  std::string json_schema;
};

struct Cancel {
  uint64_t request = 0;
};

enum class FinishReason : uint8_t { kNone = 0, kStop = 1, kLength = 2, kCancelled = 3, kError = 4 };
const char* FinishReasonName(FinishReason r);

// One request's progress in one step: a sampled token, and/or the end (with an error message when
// the reason is kError; then token is -1).
struct TokenEvent {
  TokenEvent() = default;
  TokenEvent(uint64_t request, int32_t token, FinishReason finish, std::string error)
      : request(request), token(token), finish(finish), error(std::move(error)) {}
  uint64_t request = 0;
  int32_t token = -1;
  FinishReason finish = FinishReason::kNone;
  std::string error;
  // When the request asked for logprobs (Submit.logprobs ≥ 0) and a token was sampled: its logprob
  // and the top alternatives (≤ kMaxTopLogprobs, most likely first), from the distribution the
  // sampler drew from (worker/scheduler.h says which).
  bool has_logprob = false;
  float logprob = 0;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
  // A prompt logprob (Submit.prompt_logprobs ≥ 0), not a sampled token: `token` is the prompt token at
  // this position (≥ 1), with has_logprob set and finish kNone; `rank` its 1-based rank among the
  // vocabulary (1 + the tokens strictly more likely). -1 for a sampled token.
  int32_t prompt_position = -1;
  int32_t rank = 0;
};


struct Tokens {
  std::vector<TokenEvent> events;
};

struct Heartbeat {
  uint64_t steps = 0;            // steps this rank has taken
  double step_seconds_total = 0;  // wall time inside those steps
  double last_step_seconds = 0;
  uint32_t running = 0, waiting = 0;
  uint64_t kv_blocks_used = 0, kv_blocks_total = 0;
  uint64_t preemptions = 0;
  // Cumulative rows this rank ran through each expert, by expert id (protocol 8; all layers).
  std::vector<uint64_t> expert_tokens;
  // Lifetime histograms (control/engine_histograms.h): tokens per step, and requests' queue, prefill
  // and decode times on this rank.
  HistogramTotals iteration_tokens, queue_seconds, prefill_seconds, decode_seconds;
  // Where the step time went (worker/step_engine.h StepPhases), cumulative seconds (protocol 5).
  double attention_seconds = 0, mlp_seconds = 0, exchange_seconds = 0, tp_seconds = 0;
  // expert_tokens by layer: [layers × experts], entry l·E + e = layer l, expert e (dense layers 0);
  // empty before the first step. Its size is a multiple of expert_tokens'.
  std::vector<uint64_t> layer_expert_tokens;
  // The expert placement the rank serves under (a Rebalance's generation; 0: the start-up one), and
  // the last generation it could not take (0: none) with why (protocol 8).
  uint64_t placement_generation = 0;
  uint64_t rebalance_failed = 0;
  std::string rebalance_error;
};

struct Wake {};
struct Shutdown {};
struct Bye {
  std::string reason;
};

// Worker → coordinator, the one frame of a rendezvous connection (see above).
struct Rendezvous {
  std::string group;
  uint32_t rank = 0, size = 1;
  std::string model;  // must match the coordinator's, as in Hello
  std::string token;  // SHOAL_CONTROL_TOKEN, as in Hello
  std::string id;     // rank 0: the id to share (non-empty); other ranks: empty
};

// Coordinator → worker: the group's id (rank 0 gets its own back as the acknowledgement).
struct RendezvousId {
  std::string id;
};

// Coordinator → every rank of a group: serve under a new expert placement (worker/expert_rebalance.h).
// For each layer and then each rank, slots[l·ranks + r] experts of layer l on rank r, listed one after
// another in `experts` (an expert listed k times on a rank takes k shares of its tokens; dense layers
// have no slots). The ranks load what they gain in the background and switch together at one step.
struct Rebalance {
  uint64_t generation = 0;  // > 0, increasing per group
  uint32_t layers = 0, ranks = 0;
  std::vector<uint32_t> slots;    // [layers × ranks]
  std::vector<uint32_t> experts;  // Σ slots entries, each < kMaxExperts
};

using Message = std::variant<Hello, Welcome, Reject, Submit, Cancel, Tokens, Heartbeat, Wake, Shutdown, Bye, Rendezvous,
                             RendezvousId, Rebalance>;

MessageType TypeOf(const Message& m);

// A whole frame (header + payload) ready to write.
std::string EncodeFrame(const Message& m);

// Checks a received header: magic, version, known type, payload size limit.
StatusOr<FrameHeader> DecodeHeader(std::span<const uint8_t> bytes);
// Decodes and checks one payload of the given type; every byte must be consumed.
StatusOr<Message> DecodePayload(MessageType type, std::span<const uint8_t> payload);

}  // namespace shoal::control
