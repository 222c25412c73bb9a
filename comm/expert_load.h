// The expert load: tokens routed to each (layer, expert) over some span — what the coordinator
// measures while serving (coordinator/expert_load.h, GET /v1/expert_load) and what the placement
// planner and `shoal plan --calibrate` read back. The saved form is JSON: {"layers", "experts",
// "window_seconds", "tokens": [[per expert] per layer]}.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace shoal::comm {

struct ExpertLoad {
  double seconds = 0;  // the span the counts cover (0: unknown, or no span yet)
  int layers = 0, experts = 0;
  std::vector<uint64_t> tokens;  // [layers × experts]: tokens routed to expert e in layer l

  uint64_t Total() const;
  // Per MoE layer (one with any tokens): the most loaded rank's tokens over the mean rank's, rank r
  // holding rank_experts[r] (an expert held by several ranks splits its tokens evenly between them);
  // averaged over layers weighted by their tokens. 1 is perfect balance; 0 when nothing was routed.
  double RankImbalance(const std::vector<std::vector<int>>& rank_experts) const;
  // The same for `ranks` ranks placed as serving places them (Placement::Balanced: contiguous ranges;
  // replicas when ranks outnumber experts).
  double BalancedImbalance(int ranks) const;
};

nlohmann::ordered_json ExpertLoadJson(const ExpertLoad& load);
// InvalidArgument naming the field for anything but the saved form.
StatusOr<ExpertLoad> ExpertLoadFromJson(const nlohmann::ordered_json& j);

}  // namespace shoal::comm
