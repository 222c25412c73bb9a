// The coordinator's state, shared by its translation units (internal; include only from coordinator/).
// Everything here lives on the I/O thread: no locks, except where noted.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "control/wire.h"
#include "coordinator/asio.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "coordinator/openai_api.h"
#include "coordinator/rendezvous.h"
#include "coordinator/stop_strings.h"
#include "model/jinja/template.h"
#include "model/tokenizer.h"

namespace shoal::coord {

using Clock = std::chrono::steady_clock;

// Histogram buckets (seconds), close to vLLM's so dashboards built for it read ours the same way.
inline std::vector<double> TtftBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
}
inline std::vector<double> ItlBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
}
inline std::vector<double> E2eBuckets() {
  return {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0};
}

struct GroupState;

// Counts an open connection for the lifetime of its session (a local of the session coroutine). The
// I/O thread alone touches the count; a session destroyed with the io_context (at shutdown) still
// decrements it, so the count must outlive the io_context (Impl declares it first).
class ConnectionCount {
 public:
  explicit ConnectionCount(int* count) : count_(count) { ++*count_; }
  ~ConnectionCount() { --*count_; }
  ConnectionCount(const ConnectionCount&) = delete;
  ConnectionCount& operator=(const ConnectionCount&) = delete;

 private:
  int* count_;
};

// After a failed accept (out of descriptors, say): waits before the next try — 10 ms, doubling to 1 s
// while accepts keep failing — and logs the first failure of a run. *delay_ms is 0 after a success.
awaitable<void> AcceptBackoff(asio::io_context& io, int* delay_ms, const char* listener,
                              const boost::system::error_code& ec);

// One worker rank's control connection.
struct WorkerLink {
  explicit WorkerLink(tcp::socket s) : socket(std::move(s)) {}
  tcp::socket socket;
  control::Hello hello;
  std::string group;  // "" until the handshake registered it
  uint64_t incarnation = 0;
  std::deque<std::string> out;  // frames waiting to be written
  bool writing = false;
  bool dead = false;
  std::string dead_reason;
  Clock::time_point last_seen = Clock::now();
  control::Heartbeat hb;
  // When hb.steps last moved (or the rank last went from idle to busy): a rank that heartbeats but
  // never finishes a step while it has requests is hung inside a step.
  Clock::time_point last_progress = Clock::now();
  std::unordered_set<uint64_t> requests;  // in flight on this rank
  int64_t outstanding_tokens = 0;         // Σ over those requests of prompt + max_tokens - generated
  std::string Name() const {
    return "rank " + std::to_string(hello.rank) + " of group " + group + " (" + hello.host + " pid " +
           std::to_string(hello.pid) + ")";
  }
};

struct GroupState {
  std::string name;
  uint32_t size = 0;
  uint64_t incarnation = 0;
  std::vector<std::shared_ptr<WorkerLink>> ranks;  // [size]; null until that rank connected
  bool broken = false;
  std::string broken_reason;
  // The last time the group had a live rank: a group broken with none for server.group_forget_s is
  // forgotten (Watchdog), so /ready does not wait for a group that is not coming back.
  Clock::time_point last_live = Clock::now();
  bool HasLiveRank() const {
    for (const auto& r : ranks) {
      if (r && !r->dead) return true;
    }
    return false;
  }
  int64_t in_flight = 0;
  bool Complete() const {
    if (broken || ranks.empty()) return false;
    for (const auto& r : ranks) {
      if (!r || r->dead) return false;
    }
    return true;
  }
};

// One client request from admission to its final outcome.
struct RequestState {
  explicit RequestState(asio::io_context& io) : signal(io) {}
  uint64_t id = 0;
  std::string api_id;
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  std::shared_ptr<WorkerLink> worker;
  std::vector<int32_t> output_ids;
  std::unique_ptr<IncrementalDetokenizer> detok;
  StopMatcher stops;       // holds back text while it could be the start of a stop string
  std::string ready_text;  // text the HTTP side has not taken yet
  bool done = false;
  std::string finish_reason;
  std::optional<api::ApiError> error;
  asio::steady_timer signal;  // cancelled whenever there is news for the HTTP side
  // Polls the client's socket for a hang-up once it holds unread bytes (generation.cc); null until then.
  std::unique_ptr<asio::steady_timer> disconnect_poll;
  // server.request_timeout_s for a non-streamed request: Watchdog ends it with 504 after this.
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point arrival = Clock::now(), first_token{}, last_token{};
  void Notify() { signal.cancel(); }
};

}  // namespace shoal::coord

namespace shoal {

struct Coordinator::Impl {
  using WorkerLink = coord::WorkerLink;
  using RequestState = coord::RequestState;

  EngineConfig cfg;
  std::string model_name;
  std::unique_ptr<Tokenizer> tokenizer;
  std::shared_ptr<const jinja::Template> chat_template;
  std::string bos_token, eos_token;
  std::vector<int32_t> eos_ids;
  int64_t max_context = 0;
  int32_t model_vocab = 0;
  std::vector<std::string> api_keys;
  std::string control_token;  // "" = workers need none (only allowed on loopback)

  // Touched by sessions' destructors, which run when `io` is destroyed: declared before it, so they
  // outlive it.
  int http_connections = 0;     // open, against server.max_connections
  int control_connections = 0;  // open, against server.max_control_connections
  int pending_handshakes = 0;   // control connections whose first frame has not been read yet

  coord::asio::io_context io;
  coord::tcp::acceptor http_acceptor{io};
  coord::tcp::acceptor control_acceptor{io};
  std::map<std::string, coord::GroupState> groups;
  // Groups launched without MPI meet here to share their data plane's id (worker_link.cc).
  // Ids live parallel.startup_timeout_s (set in Create).
  coord::RendezvousTable rendezvous{std::chrono::minutes(10)};
  // Ranks waiting for their rank 0's post: their timers are cancelled to wake them.
  std::map<std::string, std::vector<std::weak_ptr<coord::asio::steady_timer>>> rendezvous_waiters;
  size_t rendezvous_parked = 0;
  size_t rendezvous_parked_limit = 1024;  // from the descriptor limit (Create)
  size_t rendezvous_sessions = 0;         // answering or parked: a stop waits for their replies
  uint64_t last_incarnation = 0;  // across all groups: a group forgotten and made again never reuses one
  std::unordered_map<uint64_t, std::shared_ptr<RequestState>> requests;
  uint64_t next_request = 1;
  bool stopping = false;
  std::atomic<int> ready_groups{0};  // read from other threads (shoal up waits on them)
  std::atomic<int> known_groups{0};
  coord::Clock::time_point started = coord::Clock::now();
  int64_t created_unix = 0;
  Metrics metrics;
  // The series touched per token or per request, looked up once (a lookup validates and sorts labels).
  struct HotMetrics {
    Counter* prompt_tokens;
    Counter* generation_tokens;
    Gauge* in_flight;
    Histogram* ttft;
    Histogram* itl;
    Histogram* e2e;
  } hot{};
  void RegisterHotMetrics() {
    hot.prompt_tokens = &metrics.counter("shoal_prompt_tokens_total", "Prompt tokens of admitted requests");
    hot.generation_tokens = &metrics.counter("shoal_generation_tokens_total", "Tokens generated");
    hot.in_flight = &metrics.gauge("shoal_requests_in_flight", "Requests admitted and not finished");
    hot.ttft = &metrics.histogram("shoal_time_to_first_token_seconds", "Time to first token (TTFT)", coord::TtftBuckets());
    hot.itl = &metrics.histogram("shoal_inter_token_latency_seconds",
                                 "Time between consecutive tokens of a request (ITL)", coord::ItlBuckets());
    hot.e2e = &metrics.histogram("shoal_e2e_request_latency_seconds", "End-to-end request latency", coord::E2eBuckets());
  }

  // worker_link.cc: the control plane.
  coord::awaitable<void> AcceptWorkers();
  coord::awaitable<void> WorkerSession(std::shared_ptr<WorkerLink> link);
  coord::awaitable<void> Watchdog();
  // A rendezvous connection (its first frame was Rendezvous): answers it, then closes.
  coord::awaitable<void> RendezvousSession(std::shared_ptr<WorkerLink> link, control::Rendezvous rv);
  // One decision for a rendezvous request: the reply, or nullopt when the rank must wait for a post.
  std::optional<control::Message> RendezvousStep(const control::Rendezvous& rv, coord::Clock::time_point until);
  void PruneRendezvousWaiters(const std::string& group);
  void WakeRendezvous(const std::string& group);
  void Send(const std::shared_ptr<WorkerLink>& link, const control::Message& m);
  void LinkDied(const std::shared_ptr<WorkerLink>& link, const std::string& why);
  // Drops a broken group whose ranks are all gone, and its per-rank metrics (Watchdog).
  void ForgetGroup(const std::string& name);
  void UpdateReady();

  // requests.cc: admission, routing, token events, outcomes.
  // Picks a worker for a request of `tokens` total tokens; ApiError 503/429 when none can take it.
  std::variant<std::shared_ptr<WorkerLink>, api::ApiError> Route();
  void Start(const std::shared_ptr<RequestState>& r, const SamplingParams& s, bool ignore_eos,
             const std::vector<int32_t>& stop_ids);
  void OnTokens(WorkerLink& link, control::Tokens& t);
  void Finish(RequestState& r, const std::string& reason, std::optional<api::ApiError> error = std::nullopt);
  // The client went away or the server stops: tell the worker to free the request's KV at once.
  void Abandon(RequestState& r);
  // Tells the worker to drop a request that is still live there (before Finish marks it done).
  void CancelOnWorker(RequestState& r);
  void AppendText(RequestState& r, std::string_view text, bool final);

  // http_server.cc
  coord::awaitable<void> AcceptHttp();
  coord::awaitable<void> HttpSession(coord::tcp::socket socket);
  // /ready's rule: every known group complete, and at least as many as cluster.groups.
  bool IsReady() const;

  void BeginStop(int64_t grace_ms);
  void StopWhenWorkersGone(std::shared_ptr<coord::asio::steady_timer> timer, int64_t left_ms);
};

}  // namespace shoal
