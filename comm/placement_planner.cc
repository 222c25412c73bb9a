#include "comm/placement_planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace shoal::comm {

namespace {

// Items (weights) into `packs` packs of `per_pack` items each: heaviest first, each onto the lightest
// pack with room (ties: the lower pack). Returns the pack of every item.
std::vector<int> BalancedPacking(const std::vector<double>& weight, int packs, int per_pack) {
  std::vector<int> order(weight.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight[a] > weight[b]; });
  std::vector<double> load(packs, 0.0);
  std::vector<int> count(packs, 0), pack_of(weight.size(), -1);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < packs; ++p) {
      if (count[p] < per_pack && (best < 0 || load[p] < load[best])) best = p;
    }
    pack_of[item] = best;
    load[best] += weight[item];
    ++count[best];
  }
  return pack_of;
}

// One node: its experts, its ranks and their slots. Fills each expert's share count and each rank's
// shares.
struct NodePlan {
  std::vector<int> experts;  // global expert ids
  std::vector<int> ranks;    // global rank ids
  int slots_per_rank = 0;
};

struct Copy {
  int expert;  // global id
  double weight;
};

void PlanNode(const std::vector<double>& load, const NodePlan& node, std::vector<int>* copies,
              std::vector<std::vector<int>>* shares) {
  const int n_ranks = static_cast<int>(node.ranks.size());
  const int slots = n_ranks * node.slots_per_rank;
  const int n_exp = static_cast<int>(node.experts.size());
  // 2. The extra slots, one at a time, to the highest load per share (ties: the lower expert).
  for (int e : node.experts) (*copies)[e] = 1;
  for (int extra = n_exp; extra < slots; ++extra) {
    int best = node.experts.front();
    for (int e : node.experts) {
      if (load[e] / (*copies)[e] > load[best] / (*copies)[best]) best = e;
    }
    ++(*copies)[best];
  }
  // 3. Shares onto ranks: heaviest first onto the lightest rank with a free slot (EPLB's packing).
  std::vector<Copy> items;
  for (int e : node.experts) {
    for (int c = 0; c < (*copies)[e]; ++c) items.push_back({e, load[e] / (*copies)[e]});
  }
  std::stable_sort(items.begin(), items.end(), [](const Copy& a, const Copy& b) { return a.weight > b.weight; });
  std::vector<std::vector<Copy>> held(n_ranks);
  std::vector<double> rank_load(n_ranks, 0.0);
  for (const Copy& item : items) {
    int best = -1;
    for (int r = 0; r < n_ranks; ++r) {
      if (static_cast<int>(held[r].size()) >= node.slots_per_rank) continue;
      if (best < 0 || rank_load[r] < rank_load[best]) best = r;
    }
    held[best].push_back(item);
    rank_load[best] += item.weight;
  }
  // Then swaps between the most loaded rank and any other while one lowers the larger of the two
  // (so the node's maximum never rises; each accepted swap lowers the pair's maximum strictly).
  for (int round = 0; round < 64 * n_ranks; ++round) {
    const int hi = static_cast<int>(std::max_element(rank_load.begin(), rank_load.end()) - rank_load.begin());
    double best_gain = 1e-12 * (1.0 + rank_load[hi]);
    int best_r = -1, best_i = -1, best_j = -1;
    for (int r = 0; r < n_ranks; ++r) {
      if (r == hi) continue;
      for (size_t i = 0; i < held[hi].size(); ++i) {
        for (size_t j = 0; j < held[r].size(); ++j) {
          const Copy& a = held[hi][i];
          const Copy& b = held[r][j];
          if (a.expert == b.expert) continue;
          const double d = a.weight - b.weight;
          if (d <= 0) continue;
          const double pair_max = std::max(rank_load[hi] - d, rank_load[r] + d);
          const double gain = rank_load[hi] - pair_max;
          if (gain > best_gain) best_gain = gain, best_r = r, best_i = static_cast<int>(i), best_j = static_cast<int>(j);
        }
      }
    }
    if (best_r < 0) break;
    std::swap(held[hi][best_i], held[best_r][best_j]);
    const double d = held[best_r][best_j].weight - held[hi][best_i].weight;
    rank_load[hi] -= d;
    rank_load[best_r] += d;
  }
  for (int r = 0; r < n_ranks; ++r) {
    for (const Copy& c : held[r]) (*shares)[node.ranks[r]].push_back(c.expert);
  }
}

}  // namespace

double PlacementPlan::MaxOverMean() const {
  if (rank_load.empty()) return 1.0;
  const double sum = std::accumulate(rank_load.begin(), rank_load.end(), 0.0);
  if (sum <= 0) return 1.0;
  return *std::max_element(rank_load.begin(), rank_load.end()) / (sum / static_cast<double>(rank_load.size()));
}

StatusOr<Placement> PlacementPlan::ToPlacement() const {
  return Placement::FromRanks(static_cast<int>(copies.size()), shares);
}

StatusOr<PlacementPlan> PlanPlacement(const PlacementRequest& q) {
  const int E = static_cast<int>(q.load.size()), N = q.num_ranks, R = q.redundant;
  if (E < 1) return InvalidArgument("placement planner: load: need at least one expert");
  for (int e = 0; e < E; ++e) {
    if (!std::isfinite(q.load[e]) || q.load[e] < 0) {
      return InvalidArgument("placement planner: load[" + std::to_string(e) + "] is not a finite count ≥ 0");
    }
  }
  if (N < 1) return InvalidArgument("placement planner: num_ranks must be at least 1");
  if (R < 0 || (E + R) % N != 0) {
    return InvalidArgument("placement planner: redundant " + std::to_string(R) + ": experts + redundant (" +
                           std::to_string(E + R) + ") must be a multiple of the " + std::to_string(N) + " ranks");
  }
  std::vector<int> node_of = q.node_of_rank.empty() ? std::vector<int>(N, 0) : q.node_of_rank;
  if (static_cast<int>(node_of.size()) != N) return InvalidArgument("placement planner: node_of_rank needs one entry per rank");
  const int M = *std::max_element(node_of.begin(), node_of.end()) + 1;
  std::vector<std::vector<int>> ranks_of(M);
  for (int r = 0; r < N; ++r) {
    if (node_of[r] < 0) return InvalidArgument("placement planner: node_of_rank[" + std::to_string(r) + "] is negative");
    ranks_of[node_of[r]].push_back(r);
  }
  for (const auto& rs : ranks_of) {
    if (rs.size() != ranks_of[0].size()) return InvalidArgument("placement planner: node_of_rank: nodes of unequal size");
  }
  const int G = q.num_groups;
  if (G < 1 || E % G != 0) return InvalidArgument("placement planner: num_groups must divide the experts");

  PlacementPlan plan;
  plan.copies.assign(E, 0);
  plan.shares.assign(N, {});
  const int slots_per_rank = (E + R) / N;
  // 1. Groups onto nodes when the nodes can share them evenly (and the slots too); else one node.
  plan.hierarchical = M > 1 && G % M == 0 && ((E + R) / M) * M == E + R;
  std::vector<NodePlan> nodes;
  if (plan.hierarchical) {
    const int group_size = E / G;
    std::vector<double> group_load(G, 0.0);
    for (int e = 0; e < E; ++e) group_load[e / group_size] += q.load[e];
    const std::vector<int> node_of_group = BalancedPacking(group_load, M, G / M);
    nodes.resize(M);
    for (int m = 0; m < M; ++m) nodes[m].ranks = ranks_of[m];
    for (int e = 0; e < E; ++e) nodes[node_of_group[e / group_size]].experts.push_back(e);
  } else {
    nodes.resize(1);
    for (int r = 0; r < N; ++r) nodes[0].ranks.push_back(r);
    for (int e = 0; e < E; ++e) nodes[0].experts.push_back(e);
  }
  for (NodePlan& node : nodes) {
    node.slots_per_rank = slots_per_rank;
    PlanNode(q.load, node, &plan.copies, &plan.shares);
  }
  plan.rank_load.assign(N, 0.0);
  for (int r = 0; r < N; ++r) {
    std::sort(plan.shares[r].begin(), plan.shares[r].end());
    for (int e : plan.shares[r]) plan.rank_load[r] += q.load[e] / plan.copies[e];
  }
  return plan;
}

}  // namespace shoal::comm
