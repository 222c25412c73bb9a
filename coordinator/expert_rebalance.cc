#include "coordinator/expert_rebalance.h"

#include <algorithm>
#include <map>

#include "comm/placement_planner.h"

namespace shoal::coord {

LayerShares StartupShares(const std::vector<bool>& layer_is_moe, const std::vector<std::vector<int>>& rank_experts) {
  LayerShares out(layer_is_moe.size(), std::vector<std::vector<int>>(rank_experts.size()));
  for (size_t l = 0; l < layer_is_moe.size(); ++l) {
    if (layer_is_moe[l]) out[l] = rank_experts;
  }
  return out;
}

double SharesImbalance(const comm::ExpertLoad& load, const LayerShares& shares) {
  if (load.experts <= 0 || static_cast<int>(shares.size()) != load.layers) return 0;
  double weighted = 0, weight = 0;
  for (int l = 0; l < load.layers; ++l) {
    comm::ExpertLoad one;
    one.layers = 1;
    one.experts = load.experts;
    one.tokens.assign(load.tokens.begin() + static_cast<ptrdiff_t>(l) * load.experts,
                      load.tokens.begin() + static_cast<ptrdiff_t>(l + 1) * load.experts);
    const double tokens = static_cast<double>(one.Total());
    const double x = one.RankImbalance(shares[l]);
    if (tokens <= 0 || x <= 0) continue;
    weighted += tokens * x;
    weight += tokens;
  }
  return weight > 0 ? weighted / weight : 0;
}

StatusOr<RebalancePlan> PlanRebalance(const comm::ExpertLoad& load, const std::vector<bool>& layer_is_moe,
                                      const LayerShares& current, int ranks, const std::vector<int>& node_of_rank,
                                      int redundant, int expert_groups) {
  const int L = load.layers, E = load.experts;
  if (L != static_cast<int>(layer_is_moe.size()) || E < 1 || load.tokens.size() != static_cast<size_t>(L) * E) {
    return InvalidArgument("rebalance: the expert load is for " + std::to_string(L) + " layers × " + std::to_string(E) +
                           " experts, not the model's " + std::to_string(layer_is_moe.size()) + " layers");
  }
  if (ranks < 1) return InvalidArgument("rebalance: the group has no ranks");
  if (load.Total() == 0) return InvalidArgument("rebalance: no tokens were routed in the expert load window");
  RebalancePlan plan;
  plan.redundant = std::max(0, redundant);
  while ((E + plan.redundant) % ranks != 0) ++plan.redundant;
  // Unequal nodes cannot be planned node by node: one node then.
  std::vector<int> nodes = node_of_rank;
  std::map<int, int> per_node;
  for (int n : nodes) ++per_node[n];
  const bool equal = !per_node.empty() && std::all_of(per_node.begin(), per_node.end(), [&](const auto& kv) {
    return kv.second == per_node.begin()->second;
  });
  if (static_cast<int>(nodes.size()) != ranks || !equal) nodes.clear();
  plan.shares.assign(static_cast<size_t>(L), std::vector<std::vector<int>>(static_cast<size_t>(ranks)));
  plan.hierarchical = true;
  for (int l = 0; l < L; ++l) {
    if (!layer_is_moe[l]) continue;
    comm::PlacementRequest q;
    q.load.assign(load.tokens.begin() + static_cast<ptrdiff_t>(l) * E, load.tokens.begin() + static_cast<ptrdiff_t>(l + 1) * E);
    q.num_ranks = ranks;
    q.node_of_rank = nodes;
    q.redundant = plan.redundant;
    q.num_groups = expert_groups > 0 && E % expert_groups == 0 ? expert_groups : 1;
    StatusOr<comm::PlacementPlan> p = comm::PlanPlacement(q);
    if (!p.ok()) return p.status().WithContext("rebalance: layer " + std::to_string(l));
    plan.shares[l] = std::move(p->shares);
    plan.hierarchical = plan.hierarchical && p->hierarchical;
  }
  plan.before = SharesImbalance(load, current);
  plan.after = SharesImbalance(load, plan.shares);
  return plan;
}

control::Rebalance RebalanceFrame(uint64_t generation, const LayerShares& shares, int ranks) {
  control::Rebalance m;
  m.generation = generation;
  m.layers = static_cast<uint32_t>(shares.size());
  m.ranks = static_cast<uint32_t>(ranks);
  for (const auto& layer : shares) {
    for (int r = 0; r < ranks; ++r) {
      const std::vector<int> none;
      const std::vector<int>& s = static_cast<size_t>(r) < layer.size() ? layer[r] : none;
      m.slots.push_back(static_cast<uint32_t>(s.size()));
      for (int e : s) m.experts.push_back(static_cast<uint32_t>(e));
    }
  }
  return m;
}

std::vector<int> NodesOfRanks(const std::vector<std::string>& hosts) {
  std::map<std::string, int> ids;
  std::vector<int> out;
  for (const std::string& h : hosts) {
    auto [it, added] = ids.emplace(h, static_cast<int>(ids.size()));
    out.push_back(it->second);
  }
  return out;
}

}  // namespace shoal::coord
