// Expert placement from measured load: which experts get extra copies and which rank holds every
// copy, so the most loaded rank — which sets every step's time for the group — carries as little as
// possible. Pure and deterministic (ties go to the lower index): the same load gives the same plan on
// every rank and in every test.
//
// The reference point is DeepSeek's EPLB (github.com/deepseek-ai/EPLB), whose policy this follows and
// then improves on:
//   1. hierarchical, when the ranks span several nodes and the model's expert groups divide evenly
//      over them: groups are packed onto nodes (equal counts, heaviest first onto the lightest node),
//      so every copy of an expert — and the traffic of group-limited routing — stays inside one node;
//      otherwise the whole group of ranks is one "node";
//   2. within a node, the extra slots go one at a time to the expert with the highest load per share;
//   3. the shares (each carrying load / shares) are packed onto the node's ranks, equal slots per rank,
//      heaviest first onto the lightest rank, then improved by swapping shares between the most loaded
//      rank and the others while that lowers it — twice: once letting two shares of an expert meet on a
//      rank (EPLB's packing), once keeping them apart (every share its own copy); the node keeps the
//      one whose most loaded rank carries less (ties: apart).
// A rank given two shares of one expert holds one copy and takes two shares of its tokens
// (Placement::RankFor), so the slot EPLB would spend on a second copy is free memory here.
// Tested against EPLB's own output on skewed loads (tests/unit/placement_planner_test.cc): the max/mean
// rank load is never worse.
#pragma once

#include <vector>

#include "comm/placement.h"
#include "common/status.h"

namespace shoal::comm {

struct PlacementRequest {
  std::vector<double> load;       // [E] tokens routed to each expert over the measured window (≥ 0)
  int num_ranks = 1;              // N
  std::vector<int> node_of_rank;  // [N] the node of each rank, equal ranks per node; empty: one node
  int redundant = 0;              // R extra copies over the group: E + R slots, (E + R) % N == 0
  int num_groups = 1;             // the model's expert groups (DeepSeek-V3's n_group); 1 = none
};

struct PlacementPlan {
  std::vector<std::vector<int>> shares;  // [N] the expert of each of a rank's slots, ascending (repeats: shares)
  std::vector<int> copies;               // [E] shares of each expert's tokens (≥ 1)
  std::vector<double> rank_load;         // [N] each expert's load split evenly over its shares
  bool hierarchical = false;            // every copy of an expert (and its group) inside one node
  double MaxOverMean() const;           // max / mean of rank_load (1 = perfectly even; 1 when idle)
  StatusOr<Placement> ToPlacement() const;
};

// InvalidArgument naming the field for an impossible request (loads negative or not finite, E + R
// not a multiple of N, nodes of unequal size, groups not dividing the experts).
StatusOr<PlacementPlan> PlanPlacement(const PlacementRequest& request);

}  // namespace shoal::comm
