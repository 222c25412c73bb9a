// The control thread: worker ranks' connections (Hello, heartbeats, Tokens, Bye), the rendezvous of
// groups launched without MPI, the watchdog, and the Cluster and RequestTable it owns.
//
// Everything here runs on one thread, the one that runs io() (Coordinator::Run's). Request work that
// could take long — JSON, chat templates, tokenizing, detokenizing, SSE — never runs here, so
// heartbeats are read on time whatever the clients send. The HTTP side reaches this thread only
// through the methods marked "any thread", which hop here and back.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/config.h"
#include "coordinator/asio.h"
#include "coordinator/cluster.h"
#include "coordinator/metrics.h"
#include "coordinator/rendezvous.h"
#include "coordinator/request_table.h"
#include "coordinator/served_model.h"

namespace shoal::coord {

class WorkerLink;

class ControlPlane {
 public:
  // `delivery` takes request events off this thread (the HTTP front end); it must outlive this.
  ControlPlane(const EngineConfig& cfg, const ServedModel& model, std::string control_token, Metrics& metrics,
               Delivery& delivery);
  ~ControlPlane();

  // Binds the control listener (errors name the address).
  Status Bind();
  int port() const;
  asio::io_context& io() { return io_; }

  // Spawns the accept loop and the watchdog; io().run() then serves them.
  void Start();

  // Any thread. Routes and starts a request's n choices (RequestTable::Admit) in one go on this thread (so their Submits leave back to back
  // and the rank sees the later ones before it samples the first): choice i > 0 gets fork_of = the
  // first one's id. All or none: a refusal ends the ones admitted before it.
  awaitable<std::variant<std::vector<RequestTable::Admitted>, api::ApiError>> AdmitChoices(
      std::vector<RequestTable::Admission> choices);
  // Any thread. The HTTP side ended request `id` (RequestTable::EndFromClient).
  void End(uint64_t id, const char* reason);
  // Any thread. GET /v1/cluster's body.
  awaitable<std::string> DescribeCluster();
  // GET /v1/expert_load's body (Cluster::ExpertLoadReport), built on the control thread.
  awaitable<std::string> ExpertLoadReport();
  // POST /v1/expert_load/rebalance's body (Cluster::Rebalance, forced), on the control thread.
  awaitable<std::string> RequestRebalance(std::string group);
  // Any thread. Brings the per-rank metric series up to date.
  awaitable<void> RefreshMetrics();

  // Any thread: /ready's rule, every known group complete and at least cluster.groups of them.
  bool IsReady() const;
  int ready_groups() const { return cluster_.ready_groups(); }
  int known_groups() const { return cluster_.known_groups(); }
  uint64_t GroupFailures(const std::string& group) const { return cluster_.GroupFailures(group); }  // thread-safe
  void SetSupervisorNote(const std::string& group, std::string note) {  // thread-safe
    cluster_.SetSupervisorNote(group, std::move(note));
  }
  bool stopping() const { return stopping_.load(); }
  int connections() const { return connections_.load(); }

  // Any thread. Refuses new work, ends in-flight requests with 503, asks the ranks to shut down, and
  // calls `stopped` on this thread once they have said goodbye or grace_ms has passed.
  void Stop(int64_t grace_ms, std::function<void()> stopped);

 private:
  friend class WorkerLink;

  awaitable<void> AcceptLoop();
  awaitable<void> Session(std::shared_ptr<WorkerLink> link);
  awaitable<void> Watchdog();
  // A rank failed (its link, or the watchdog): the cluster marks it, its group's requests end.
  void RankFailed(const std::shared_ptr<Rank>& rank, const std::string& why);
  void BeginStop(int64_t grace_ms, std::function<void()> stopped);
  void StopWhenRanksGone(std::shared_ptr<asio::steady_timer> timer, int64_t left_ms, std::function<void()> stopped);

  // Rendezvous (control_rendezvous.cc): a connection whose first frame was a Rendezvous is answered
  // and closed; ranks that ask before their rank 0 posted are parked until it does.
  awaitable<void> RendezvousSession(std::shared_ptr<WorkerLink> link, control::Rendezvous rv);
  std::optional<control::Message> RendezvousStep(const control::Rendezvous& rv, Clock::time_point until);
  void WakeRendezvous(const std::string& group);
  void PruneRendezvousWaiters(const std::string& group);

  const EngineConfig& cfg_;
  const ServedModel& model_;
  const std::string control_token_;
  Metrics& metrics_;
  // Touched by sessions' destructors, which may run when io_ is destroyed: declared before it.
  std::atomic<int> connections_{0};  // open, against server.max_control_connections
  int pending_handshakes_ = 0;       // connections whose first frame has not been read yet
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  Cluster cluster_;
  RequestTable table_;
  std::atomic<bool> stopping_{false};

  RendezvousTable rendezvous_;
  // Ranks waiting for their rank 0's post: their timers are cancelled to wake them.
  std::map<std::string, std::vector<std::weak_ptr<asio::steady_timer>>> rendezvous_waiters_;
  size_t rendezvous_parked_ = 0;
  size_t rendezvous_parked_limit_ = 1024;  // half the descriptor limit (Bind)
  size_t rendezvous_sessions_ = 0;         // answering or parked: a stop waits for their replies
};

}  // namespace shoal::coord
