#include "comm/tensor_parallel.h"

#include <sstream>

namespace shoal::comm {

StatusOr<std::vector<ReplicaSlot>> AssignReplicas(std::span<const std::string> hosts, int tp, bool* cross_node) {
  const int n = static_cast<int>(hosts.size());
  if (tp < 1 || n % tp != 0) {
    return InvalidArgument("parallel.attention_tp " + std::to_string(tp) + " does not divide the group's " +
                           std::to_string(n) + " ranks");
  }
  // Ranks grouped by host, hosts in order of first appearance.
  std::vector<std::string> order;
  std::vector<std::vector<int>> by_host;
  for (int r = 0; r < n; ++r) {
    size_t h = 0;
    while (h < order.size() && order[h] != hosts[r]) ++h;
    if (h == order.size()) {
      order.push_back(hosts[r]);
      by_host.emplace_back();
    }
    by_host[h].push_back(r);
  }
  std::vector<int> sequence;
  for (const auto& ranks : by_host) sequence.insert(sequence.end(), ranks.begin(), ranks.end());
  std::vector<ReplicaSlot> slots(static_cast<size_t>(n));
  *cross_node = false;
  for (int i = 0; i < n; ++i) {
    const int r = sequence[i];
    slots[r] = {i / tp, i % tp};
    if (i % tp != 0 && hosts[r] != hosts[sequence[i - 1]]) *cross_node = true;
  }
  return slots;
}

StatusOr<TensorParallelLayout> SplitTensorParallel(Group& world, int tp, const std::string& host, Deadline deadline) {
  // Every host name to rank 0, and the list back to every rank, so all decide on the same list (a
  // bad name is found by all of them, after the exchange, so no rank is left waiting).
  const bool bad = host.empty() || host.find('\n') != std::string::npos;
  SHOAL_ASSIGN_OR_RETURN(std::vector<std::string> gathered, GatherBytes(world, bad ? "?" : host, 0, deadline));
  std::string joined;
  for (const std::string& h : gathered) joined += h + "\n";
  std::vector<int64_t> any_bad = {bad ? 1 : 0};
  SHOAL_RETURN_IF_ERROR(world.AllReduceMax(any_bad, deadline));
  if (any_bad[0] != 0) {
    return InvalidArgument("rank " + std::to_string(world.rank()) + ": " +
                           (bad ? "host name '" + host + "' is empty or has a newline"
                                : std::string("another rank's host name is empty or has a newline")));
  }
  SHOAL_ASSIGN_OR_RETURN(std::string all, BroadcastBytes(world, joined, 0, deadline));
  std::vector<std::string> hosts;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);) hosts.push_back(line);
  if (static_cast<int>(hosts.size()) != world.size()) {
    return Internal("rank " + std::to_string(world.rank()) + ": " + std::to_string(hosts.size()) + " host names for " +
                    std::to_string(world.size()) + " ranks");
  }
  TensorParallelLayout layout;
  SHOAL_ASSIGN_OR_RETURN(std::vector<ReplicaSlot> slots, AssignReplicas(hosts, tp, &layout.cross_node));
  const ReplicaSlot me = slots[static_cast<size_t>(world.rank())];
  layout.replica = me.replica;
  layout.replicas = world.size() / tp;
  SHOAL_ASSIGN_OR_RETURN(layout.tp_group, world.Split(me.replica, me.tp_rank, deadline));
  return layout;
}

}  // namespace shoal::comm
