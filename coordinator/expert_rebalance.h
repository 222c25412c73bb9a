// The coordinator's half of rebalancing (the workers' half: worker/expert_rebalance.h).
//
// A group starts on the placement its workers loaded (Placement::Balanced, the same in every layer).
// From the expert load window (coordinator/expert_load.h) the coordinator plans a placement per MoE
// layer (comm/placement_planner.h: parallel.redundant_experts extra slots, hot experts copied, expert
// groups kept inside a node when the ranks span several hosts) and sends it to every rank as one
// Rebalance frame; the ranks load what they gain in the background and switch together. The group's
// placement is the new one once every rank's heartbeat says it serves under that generation; a rank
// reporting the generation failed (rebalance_failed) drops it for the group, which keeps the old one.
//
// When: POST /v1/expert_load/rebalance (any time there is load to plan from), or automatically when
// server.rebalance_threshold > 0 and the window's rank imbalance passes it — at most once per
// server.rebalance_interval_s, from at least server.rebalance_min_tokens routed tokens, and only when
// the plan lowers the imbalance by server.rebalance_min_gain (a placement is not churned for noise).
// Pure functions here; the Cluster keeps each group's GroupPlacement on the control thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/expert_load.h"
#include "common/status.h"
#include "control/wire.h"

namespace shoal::coord {

// [layers][ranks] → the experts of that rank in that layer (an expert listed k times: k shares of its
// tokens); every rank empty in a dense layer.
using LayerShares = std::vector<std::vector<std::vector<int>>>;

struct GroupPlacement {
  uint64_t generation = 0;  // what every rank serves under (0: the start-up placement)
  LayerShares shares;       // that placement (empty until the group's ranks have all joined)
  uint64_t pending = 0;     // a generation sent and not yet taken by every rank (0: none)
  LayerShares pending_shares;
  double pending_before = 0, pending_after = 0;  // the imbalance it was planned to lower, and to what
  std::chrono::steady_clock::time_point pending_since{}, last_change{};
  uint64_t next_generation = 1;
  uint64_t rebalances = 0, dropped = 0;  // generations taken, and dropped (a rank failed them)
  std::string last_error;                // why the last one was dropped
};

// The start-up placement: every MoE layer as the ranks' Hello lists their experts.
LayerShares StartupShares(const std::vector<bool>& layer_is_moe, const std::vector<std::vector<int>>& rank_experts);

// Per MoE layer with tokens: the most loaded rank's share of the layer's tokens over the mean rank's,
// averaged over layers weighted by their tokens (ExpertLoad::RankImbalance, layer by layer). 0 with
// no tokens.
double SharesImbalance(const comm::ExpertLoad& load, const LayerShares& shares);

struct RebalancePlan {
  LayerShares shares;
  double before = 0, after = 0;  // SharesImbalance of the current and the planned placement
  int redundant = 0;             // the extra slots per layer used (rounded up to fill every rank)
  bool hierarchical = false;     // every layer planned node by node
};

// The placement for `load` over `ranks` ranks (the node of each: empty, or unequal nodes, plan as
// one node) with `redundant` extra slots per MoE layer rounded up to a multiple that fills every
// rank equally. InvalidArgument when the load does not fit the model (shape) or has no tokens.
StatusOr<RebalancePlan> PlanRebalance(const comm::ExpertLoad& load, const std::vector<bool>& layer_is_moe,
                                      const LayerShares& current, int ranks, const std::vector<int>& node_of_rank,
                                      int redundant, int expert_groups);

// The frame every rank of the group gets.
control::Rebalance RebalanceFrame(uint64_t generation, const LayerShares& shares, int ranks);

// Node ids (0, 1, …, in order of first appearance) from the ranks' host names.
std::vector<int> NodesOfRanks(const std::vector<std::string>& hosts);

}  // namespace shoal::coord
