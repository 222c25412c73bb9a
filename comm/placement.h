// Placement: which ranks of an expert-parallel group hold which experts of every MoE layer.
//
// With R ranks and E experts: when R ≤ E, rank r holds the contiguous experts [⌊rE/R⌋, ⌊(r+1)E/R⌋)
// (sizes differ by at most one, so any R works, dividing E or not); when R > E, rank r holds expert
// r mod E, so every expert has ⌊R/E⌋ or ⌈R/E⌉ replicas and tokens routed to an expert are spread over
// its replicas. The same placement applies to every MoE layer. Later placements (measured expert load,
// redundant copies of hot experts as DeepSeek's EPLB does) keep this interface.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"

namespace shoal {

class Placement {
 public:
  static StatusOr<Placement> Balanced(int num_experts, int num_ranks);
  // An explicit placement: shares[r] the experts rank r serves (comm/placement_planner.h makes them
  // from measured load). An expert listed k times on a rank is held once there and that rank takes k
  // shares of its tokens. Every expert on at least one rank.
  static StatusOr<Placement> FromRanks(int num_experts, std::vector<std::vector<int>> shares);

  int num_experts() const { return static_cast<int>(replicas_.size()); }
  int num_ranks() const { return static_cast<int>(local_.size()); }

  // Ranks holding `expert`, ascending (a rank with k shares of its tokens appears k times).
  const std::vector<int>& replicas(int expert) const { return replicas_.at(expert); }
  // Experts held by `rank`, ascending.
  const std::vector<int>& local_experts(int rank) const { return local_.at(rank); }
  bool Holds(int rank, int expert) const;

  // The rank that computes `expert` for the token with global index `token`: replicas take turns by
  // token index, so the choice is deterministic and spreads load evenly.
  int RankFor(int expert, int64_t token) const;

 private:
  std::vector<std::vector<int>> replicas_;  // [E] → ranks
  std::vector<std::vector<int>> local_;     // [R] → experts
};

}  // namespace shoal
