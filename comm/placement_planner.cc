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

// One node: its experts, its ranks and their slots.
struct NodePlan {
  std::vector<int> experts;  // global expert ids
  std::vector<int> ranks;    // global rank ids
  int slots_per_rank = 0;
};

struct Copy {
  int expert;  // global id
  double weight;
};

struct NodeResult {
  std::vector<int> copies;                // [E]: shares of this node's experts (others 0)
  std::vector<std::vector<int>> shares;   // [ranks of the node]
  double max_load = 0;                    // the node's most loaded rank
};

// Steps 2 and 3 for one node. `distinct`: at most one share of an expert per rank (every share a copy
// of its own), else shares may meet on a rank (EPLB's packing). Fails only when `distinct` cannot hold.
StatusOr<NodeResult> PlanNode(const std::vector<double>& load, const NodePlan& node, bool distinct) {
  const int n_ranks = static_cast<int>(node.ranks.size());
  const int slots = n_ranks * node.slots_per_rank;
  const int n_exp = static_cast<int>(node.experts.size());
  NodeResult out;
  std::vector<int>& copies = out.copies;
  copies.assign(load.size(), 0);
  // 2. The extra slots, one at a time, to the highest load per share (ties: the lower expert).
  for (int e : node.experts) copies[e] = 1;
  for (int extra = n_exp; extra < slots; ++extra) {
    int best = -1;
    for (int e : node.experts) {
      if (distinct && copies[e] >= n_ranks) continue;
      if (best < 0 || load[e] / copies[e] > load[best] / copies[best]) best = e;
    }
    if (best < 0) return InvalidArgument("more shares than ranks to hold them apart");
    ++copies[best];
  }
  // 3. Shares onto ranks: heaviest first onto the lightest rank with a free slot (that does not hold
  //    the expert yet, when distinct).
  std::vector<Copy> items;
  for (int e : node.experts) {
    for (int c = 0; c < copies[e]; ++c) items.push_back({e, load[e] / copies[e]});
  }
  std::stable_sort(items.begin(), items.end(), [](const Copy& a, const Copy& b) { return a.weight > b.weight; });
  std::vector<std::vector<Copy>> held(n_ranks);
  std::vector<double> rank_load(n_ranks, 0.0);
  auto holds = [&](int r, int e) {
    return distinct && std::any_of(held[r].begin(), held[r].end(), [e](const Copy& c) { return c.expert == e; });
  };
  auto full = [&](int r) { return static_cast<int>(held[r].size()) >= node.slots_per_rank; };
  for (const Copy& item : items) {
    int best = -1;
    for (int r = 0; r < n_ranks; ++r) {
      if (full(r) || holds(r, item.expert)) continue;
      if (best < 0 || rank_load[r] < rank_load[best]) best = r;
    }
    if (best < 0) {
      // Every rank with room holds this expert: move another share from a rank without it there.
      int room = -1, from = -1, moved = -1;
      for (int r = 0; r < n_ranks && room < 0; ++r) room = full(r) ? -1 : r;
      for (int r = 0; r < n_ranks && moved < 0 && room >= 0; ++r) {
        if (r == room || holds(r, item.expert)) continue;
        for (size_t i = 0; i < held[r].size() && moved < 0; ++i) {
          if (!holds(room, held[r][i].expert)) from = r, moved = static_cast<int>(i);
        }
      }
      if (moved < 0) return InvalidArgument("no rank can take a share of expert " + std::to_string(item.expert));
      const Copy c = held[from][moved];
      held[from].erase(held[from].begin() + moved);
      rank_load[from] -= c.weight;
      held[room].push_back(c);
      rank_load[room] += c.weight;
      best = from;
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
          if (a.expert == b.expert || holds(r, a.expert) || holds(hi, b.expert)) continue;
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
  out.shares.resize(n_ranks);
  for (int r = 0; r < n_ranks; ++r) {
    for (const Copy& c : held[r]) out.shares[r].push_back(c.expert);
  }
  out.max_load = *std::max_element(rank_load.begin(), rank_load.end());
  return out;
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
    // Both packings; the one whose most loaded rank carries less (ties: every share its own copy).
    StatusOr<NodeResult> shared = PlanNode(q.load, node, /*distinct=*/false);
    SHOAL_RETURN_IF_ERROR(shared.status());
    StatusOr<NodeResult> apart = PlanNode(q.load, node, /*distinct=*/true);
    const NodeResult& best = apart.ok() && apart->max_load <= shared->max_load ? *apart : *shared;
    for (int e : node.experts) plan.copies[e] = best.copies[e];
    for (size_t i = 0; i < node.ranks.size(); ++i) plan.shares[node.ranks[i]] = best.shares[i];
  }
  plan.rank_load.assign(N, 0.0);
  for (int r = 0; r < N; ++r) {
    std::sort(plan.shares[r].begin(), plan.shares[r].end());
    for (int e : plan.shares[r]) plan.rank_load[r] += q.load[e] / plan.copies[e];
  }
  return plan;
}

}  // namespace shoal::comm
