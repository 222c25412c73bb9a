#include "comm/placement.h"

#include <algorithm>
#include <string>

namespace shoal {

StatusOr<Placement> Placement::Balanced(int num_experts, int num_ranks) {
  if (num_experts < 1) return InvalidArgument("placement: need at least one expert, got " + std::to_string(num_experts));
  if (num_ranks < 1) return InvalidArgument("placement: need at least one rank, got " + std::to_string(num_ranks));
  Placement p;
  p.replicas_.resize(num_experts);
  p.local_.resize(num_ranks);
  if (num_ranks <= num_experts) {
    for (int r = 0; r < num_ranks; ++r) {
      const int begin = static_cast<int>(int64_t{r} * num_experts / num_ranks);
      const int end = static_cast<int>(int64_t{r + 1} * num_experts / num_ranks);
      for (int e = begin; e < end; ++e) {
        p.local_[r].push_back(e);
        p.replicas_[e].push_back(r);
      }
    }
  } else {
    for (int r = 0; r < num_ranks; ++r) {
      p.local_[r].push_back(r % num_experts);
      p.replicas_[r % num_experts].push_back(r);
    }
  }
  return p;
}

bool Placement::Holds(int rank, int expert) const {
  const auto& l = local_.at(rank);
  return std::binary_search(l.begin(), l.end(), expert);
}

int Placement::RankFor(int expert, int64_t token) const {
  const auto& r = replicas_.at(expert);
  return r[static_cast<size_t>(token % static_cast<int64_t>(r.size()))];
}

}  // namespace shoal
