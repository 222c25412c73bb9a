// Tensor-parallel replicas inside an engine group (parallel.attention_tp = T): the N ranks of a group
// form N / T replicas of T ranks each; a replica's ranks split attention heads and dense layers among
// them and reduce their activations with the TP group's collectives (Group::AllReduceSumF32, ...),
// while the MoE block stays expert-parallel over all N. A replica's ranks should share a node (their
// collectives run every layer), so ranks are grouped by the host each reports before being cut into
// replicas.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/group.h"
#include "common/deadline.h"
#include "common/status.h"

namespace shoal::comm {

struct ReplicaSlot {
  int replica = 0;  // which replica, 0 .. N / T - 1
  int tp_rank = 0;  // position inside it, 0 .. T - 1
};

// Pure. hosts[r]: the host rank r runs on. Ranks are ordered by host (hosts in order of first
// appearance, each host's ranks in rank order) and cut into consecutive runs of `tp`. *cross_node is
// set when some replica spans hosts (a host's rank count that `tp` does not divide). InvalidArgument
// when tp < 1 or tp does not divide the number of ranks.
StatusOr<std::vector<ReplicaSlot>> AssignReplicas(std::span<const std::string> hosts, int tp, bool* cross_node);

struct TensorParallelLayout {
  std::unique_ptr<Group> tp_group;  // this rank's replica: T ranks, tp_rank order
  int replica = 0;
  int replicas = 1;
  bool cross_node = false;
};

// Collective over `world`: every rank's host name is shared, AssignReplicas decides, and the world
// splits into the replicas' TP groups. Host names must be non-empty and free of newlines.
StatusOr<TensorParallelLayout> SplitTensorParallel(Group& world, int tp, const std::string& host, Deadline deadline);

}  // namespace shoal::comm
