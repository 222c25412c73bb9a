// Cluster's rebalancing (coordinator/expert_rebalance.h): planning from a group's load window,
// sending the ranks the new placement, and following it until every rank took it or one failed it.
#include "common/log.h"
#include "coordinator/cluster.h"

namespace shoal::coord {

void Cluster::CheckPendingRebalance(Group& g, Clock::time_point now) {
  GroupPlacement& p = g.placement;
  bool all_took = true;
  for (const auto& r : g.ranks) {
    if (!r || r->dead) return;  // a broken group's rebalance ends with the group
    if (r->hb.rebalance_failed == p.pending) {
      ++p.dropped;
      p.last_error = r->Name() + ": " + r->hb.rebalance_error;
      log::Warn("group %s dropped expert placement generation %llu: %s", g.name.c_str(),
                static_cast<unsigned long long>(p.pending), p.last_error.c_str());
      p.pending = 0;
      p.pending_shares.clear();
      p.last_change = now;  // the next automatic try waits server.rebalance_interval_s, as after a switch
      return;
    }
    all_took = all_took && r->hb.placement_generation == p.pending;
  }
  if (!all_took) return;
  log::Info("group %s serves under expert placement generation %llu (rank imbalance %.3f → %.3f planned, %.1f s)",
            g.name.c_str(), static_cast<unsigned long long>(p.pending), p.pending_before, p.pending_after,
            std::chrono::duration<double>(now - p.pending_since).count());
  p.generation = p.pending;
  p.shares = std::move(p.pending_shares);
  p.pending = 0;
  p.pending_shares.clear();
  p.last_change = now;
  ++p.rebalances;
}

nlohmann::ordered_json Cluster::RebalanceGroup(Group& g, Clock::time_point now, bool forced) {
  nlohmann::ordered_json out = {{"group", g.name}, {"generation", g.placement.generation}};
  auto skip = [&](std::string why) {
    out["action"] = "none";
    out["reason"] = std::move(why);
    return out;
  };
  if (options_.model_layers <= 0 || options_.model_experts <= 0) return skip("the model has no experts");
  if (!g.Complete()) return skip("the group is not ready");
  if (g.placement.pending != 0) {
    return skip("generation " + std::to_string(g.placement.pending) + " is still being loaded by the ranks");
  }
  const ExpertLoad load = g.expert_load.Current();
  const uint64_t tokens = load.Total();
  if (tokens == 0) return skip("no tokens were routed in the expert load window yet");
  if (!forced) {
    if (options_.rebalance_threshold <= 0) return skip("automatic rebalancing is off (server.rebalance_threshold 0)");
    if (static_cast<int64_t>(tokens) < options_.rebalance_min_tokens) {
      return skip(std::to_string(tokens) + " tokens in the window, below server.rebalance_min_tokens");
    }
    if (g.placement.last_change != Clock::time_point{} &&
        now - g.placement.last_change < std::chrono::seconds(options_.rebalance_interval_s)) {
      return skip("rebalanced less than server.rebalance_interval_s ago");
    }
  }
  const LayerShares current = SharesOf(g);
  const double before = SharesImbalance(load, current);
  if (!forced && before < options_.rebalance_threshold) return skip("the rank imbalance is below server.rebalance_threshold");
  std::vector<std::string> hosts;
  for (const auto& r : g.ranks) hosts.push_back(r->hello.host);
  std::vector<bool> moe = options_.layer_is_moe;
  if (moe.empty()) moe.assign(static_cast<size_t>(options_.model_layers), true);
  StatusOr<RebalancePlan> plan = PlanRebalance(load, moe, current, static_cast<int>(g.size), NodesOfRanks(hosts),
                                               options_.redundant_experts, options_.expert_groups);
  if (!plan.ok()) return skip(plan.status().message());
  out["imbalance_before"] = plan->before;
  out["imbalance_planned"] = plan->after;
  out["redundant_experts"] = plan->redundant;
  if (!forced && plan->after > plan->before * (1 - options_.rebalance_min_gain)) {
    return skip("the plan lowers the imbalance by less than server.rebalance_min_gain");
  }
  const uint64_t generation = g.placement.next_generation++;
  const control::Message frame = RebalanceFrame(generation, plan->shares, static_cast<int>(g.size));
  for (const auto& r : g.ranks) r->channel->Send(frame);
  g.placement.pending = generation;
  g.placement.pending_shares = std::move(plan->shares);
  g.placement.pending_before = plan->before;
  g.placement.pending_after = plan->after;
  g.placement.pending_since = now;
  log::Info("group %s: expert placement generation %llu sent (%s; rank imbalance %.3f, planned %.3f, %d redundant)",
            g.name.c_str(), static_cast<unsigned long long>(generation), forced ? "requested" : "automatic",
            plan->before, plan->after, plan->redundant);
  out["action"] = "sent";
  out["generation"] = generation;
  return out;
}

nlohmann::ordered_json Cluster::Rebalance(Clock::time_point now, bool forced, const std::string& group) {
  nlohmann::ordered_json groups = nlohmann::ordered_json::array();
  for (auto& [name, g] : groups_) {
    if (!group.empty() && name != group) continue;
    groups.push_back(RebalanceGroup(g, now, forced));
  }
  return {{"groups", std::move(groups)}};
}

}  // namespace shoal::coord
