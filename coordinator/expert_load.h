// Expert load over a sliding window: tokens routed to each (layer, expert) in the last
// server.expert_load_window_s seconds, from the cumulative per-layer counts every rank's heartbeat
// carries (control::Heartbeat::layer_expert_tokens). What GET /v1/expert_load returns (and what
// `shoal plan --calibrate` reads back from a saved copy), and the imbalance /metrics and /v1/cluster
// show: how much more the most loaded rank routes than the average one.
//
// A group's counts are the sum over its ranks (each counts by expert id, whatever it holds). Snapshots are kept at most every window/12, so a window costs
// ≤ 13 copies of [layers × experts]. A counter that goes backwards (a rank restarted) restarts the window.
// Not thread-safe: the control thread owns it (as it owns the Cluster).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/expert_load.h"
#include "common/status.h"

namespace shoal::coord {

using comm::ExpertLoad;

class ExpertLoadWindow {
 public:
  using Clock = std::chrono::steady_clock;
  explicit ExpertLoadWindow(std::chrono::seconds window) : window_(window) {}

  // The group's cumulative counts at `now` ([layers × experts]).
  void Record(Clock::time_point now, int layers, int experts, std::vector<uint64_t> cumulative);
  ExpertLoad Current() const;
  void Reset() { snapshots_.clear(); }

 private:
  struct Snapshot {
    Clock::time_point at;
    std::vector<uint64_t> counts;
  };
  std::chrono::seconds window_;
  int layers_ = 0, experts_ = 0;
  std::deque<Snapshot> snapshots_;  // oldest first; the last one is the newest Record
};

// A group's cumulative [layers × experts]: the sum of its ranks' (each [layers × experts], by expert
// id, so a replicated expert's copies add up). A rank that sent none yet, or counts of another shape,
// is skipped.
std::vector<uint64_t> GroupCumulative(int layers, int experts, const std::vector<const std::vector<uint64_t>*>& layer_counts);

using comm::ExpertLoadFromJson;
using comm::ExpertLoadJson;

}  // namespace shoal::coord
