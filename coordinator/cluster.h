// The engine groups as the coordinator knows them: their ranks (each joined with a Hello over its
// control connection), heartbeats, incarnations, readiness and routing.
//
// Bookkeeping only, on the control thread: no sockets (a rank is reached through its RankChannel) and
// no requests — a rank's request counts are written by the RequestTable alone (request_table.h), and
// read here to route. ready_groups() and known_groups() may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "control/wire.h"
#include "coordinator/expert_load.h"
#include "coordinator/expert_rebalance.h"
#include "coordinator/metrics.h"

namespace shoal::coord {

using Clock = std::chrono::steady_clock;

// How the coordinator reaches one worker rank: its control connection, or a test's recorder.
class RankChannel {
 public:
  virtual ~RankChannel() = default;
  // Queues a frame. A channel that cannot deliver reports it (the rank then fails); never blocks.
  virtual void Send(const control::Message& m) = 0;
  // Ends the connection: the worker sees it and stops.
  virtual void Close() = 0;
};

struct Rank {
  control::Hello hello;
  std::string group;  // set when it joined
  uint64_t incarnation = 0;
  std::shared_ptr<RankChannel> channel;
  bool dead = false;
  std::string dead_reason;
  Clock::time_point last_seen{};
  // When hb.steps last moved, or the rank last went from idle to busy: a rank that heartbeats but
  // never finishes a step while it holds requests is hung inside a step.
  Clock::time_point last_progress{};
  control::Heartbeat hb;
  // Written by RequestTable only: requests this rank holds, and Σ over them of prompt + max_tokens −
  // tokens generated so far.
  int64_t requests = 0;
  int64_t outstanding_tokens = 0;

  // "rank 1 of group g0 (host pid 123)", for messages.
  std::string Name() const;
};

struct Group {
  std::string name;
  uint32_t size = 0;
  uint32_t tp_size = 1;  // ranks per attention-TP replica; requests go to each replica's tp_rank 0
  uint64_t incarnation = 0;
  std::vector<std::shared_ptr<Rank>> ranks;  // [size]; null until that rank joined
  bool broken = false;
  std::string broken_reason;
  // The last time the group had a live rank: a broken group with none for server.group_forget_s is
  // forgotten, so /ready does not wait for a group that is not coming back.
  Clock::time_point last_live{};
  ExpertLoadWindow expert_load{std::chrono::seconds(60)};  // tokens per (layer, expert), sliding window
  GroupPlacement placement;  // the expert placement it serves under, and a rebalance in flight

  bool Complete() const;     // every rank joined and alive, not broken
  bool HasLiveRank() const;
  int64_t InFlight() const;  // requests held by its ranks
  // Attention replicas (size / tp_size): what serves requests, so what load is divided by.
  uint32_t Replicas() const { return tp_size > 0 ? size / tp_size : size; }
};

// A registered rank's failure, which broke its group: the group's requests end with `reason`.
struct GroupFailure {
  std::string group;
  uint64_t incarnation = 0;
  std::string reason;
};

class Cluster {
 public:
  struct Options {
    std::string model_name;
    int64_t model_vocab = 0;
    std::string control_token;  // "" = ranks need none (the coordinator allows that only on loopback)
    int expected_groups = 1;    // cluster.groups: /ready waits for at least this many
    int max_queued_requests = 256;
    int model_layers = 0, model_experts = 0;  // the expert load statistics' shape (0: none kept)
    int expert_load_window_s = 60;
    // Rebalancing (coordinator/expert_rebalance.h): which layers are MoE (empty: all), DeepSeek's
    // expert groups, parallel.redundant_experts, and the server.rebalance_* settings.
    std::vector<bool> layer_is_moe;
    int expert_groups = 1;
    int redundant_experts = 0;
    double rebalance_threshold = 0;  // 0: only on request
    int rebalance_interval_s = 600;
    int64_t rebalance_min_tokens = 20000;
    double rebalance_min_gain = 0.05;
  };
  Cluster(Options options, Metrics& metrics);

  // A rank's Hello: the rank, registered in its group (a new group, or a new incarnation of a broken
  // one whose ranks are all gone); or why it is refused (the message for its Reject).
  StatusOr<std::shared_ptr<Rank>> Join(const control::Hello& hello, std::shared_ptr<RankChannel> channel,
                                       Clock::time_point now, bool stopping);
  // Any frame from the rank.
  void Heard(Rank& rank, Clock::time_point now) { rank.last_seen = now; }
  void OnHeartbeat(Rank& rank, control::Heartbeat hb, Clock::time_point now);

  // The rank is gone (connection lost, a bad frame, Bye, silence): marks it dead and closes it. When
  // it was a live member of an unbroken group the group breaks — its other ranks are closed, since
  // every step needs every rank — and the failure is returned for the group's requests to end.
  std::optional<GroupFailure> RankFailed(const std::shared_ptr<Rank>& rank, const std::string& why, bool stopping);

  // Ranks silent for heartbeat_timeout, or holding requests without finishing a step for
  // step_timeout, with the reason for each.
  std::vector<std::pair<std::shared_ptr<Rank>, std::string>> LateRanks(Clock::time_point now,
                                                                       std::chrono::milliseconds heartbeat_timeout,
                                                                       std::chrono::milliseconds step_timeout) const;
  // Forgets broken groups without a live rank for `after` (and their per-rank metric series).
  void ForgetAbandonedGroups(Clock::time_point now, std::chrono::seconds after);

  // Where a new request goes: the least loaded replica (its tp_rank 0; every rank without attention
  // TP) of the least loaded complete group.
  // Unavailable when no group is ready (or the server stops), ResourceExhausted when the requests in
  // flight already fill every rank's batch plus server.max_queued_requests.
  StatusOr<std::shared_ptr<Rank>> Route(bool stopping) const;
  // The group a rank belongs to, if it still exists and the rank is of its current incarnation.
  Group* GroupOf(const Rank& rank);

  // /ready: every known group complete, and at least expected_groups of them.
  bool IsReady(bool stopping) const;
  int ready_groups() const { return ready_groups_.load(); }  // thread-safe
  int known_groups() const { return known_groups_.load(); }  // thread-safe
  bool HasConnectedRanks(const std::string& group) const;     // a live rank of an unbroken group
  bool AllRanksGone() const;
  std::vector<std::shared_ptr<Rank>> LiveRanks() const;

  // For a supervisor (shoal up) on another thread: how many times the group has failed so far, and a
  // note of its own (restarting, given up) that /v1/cluster shows with the group. Thread-safe.
  uint64_t GroupFailures(const std::string& group) const;
  void SetSupervisorNote(const std::string& group, std::string note);

  // GET /v1/cluster's groups, and the per-rank metric series from the latest heartbeats.
  nlohmann::ordered_json Describe(Clock::time_point now) const;
  // GET /v1/expert_load: each group's tokens per (layer, expert) over the window (expert_load.h's form)
  // with its rank imbalance.
  nlohmann::ordered_json ExpertLoadReport() const;
  void RefreshMetrics() const;

  // Re-places the experts of every complete group (or of `group` only) from its expert load window
  // and sends the ranks the new placement (coordinator/expert_rebalance.h). `forced` (POST
  // /v1/expert_load/rebalance): whenever there is load to plan from; otherwise only past the
  // server.rebalance_* thresholds. What was done per group, with the reason when nothing was.
  nlohmann::ordered_json Rebalance(Clock::time_point now, bool forced, const std::string& group = "");

 private:
  void UpdateReady();
  void RemoveRankSeries(const std::string& group, const Rank& rank);
  // The placement the group serves under, layer by layer (the start-up one from its ranks' Hellos).
  LayerShares SharesOf(const Group& g) const;
  // A heartbeat may complete (or fail) the group's pending rebalance.
  void CheckPendingRebalance(Group& g, Clock::time_point now);
  nlohmann::ordered_json RebalanceGroup(Group& g, Clock::time_point now, bool forced);

  Options options_;
  Metrics& metrics_;
  std::map<std::string, Group> groups_;
  uint64_t last_incarnation_ = 0;  // across all groups: one forgotten and made again never reuses one
  std::atomic<int> ready_groups_{0};
  std::atomic<int> known_groups_{0};
  mutable std::mutex supervision_mu_;
  std::map<std::string, uint64_t> group_failures_;       // guarded by supervision_mu_
  std::map<std::string, std::string> supervisor_notes_;  // guarded by supervision_mu_
};

}  // namespace shoal::coord
