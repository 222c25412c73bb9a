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

StatusOr<Placement> Placement::FromRanks(int num_experts, std::vector<std::vector<int>> shares) {
  if (num_experts < 1 || shares.empty()) return InvalidArgument("placement: need at least one expert and one rank");
  Placement p;
  p.replicas_.resize(num_experts);
  p.local_.resize(shares.size());
  for (size_t r = 0; r < shares.size(); ++r) {
    std::sort(shares[r].begin(), shares[r].end());
    for (size_t i = 0; i < shares[r].size(); ++i) {
      const int e = shares[r][i];
      if (e < 0 || e >= num_experts) {
        return InvalidArgument("placement: rank " + std::to_string(r) + " holds expert " + std::to_string(e) +
                               ", outside [0, " + std::to_string(num_experts) + ")");
      }
      p.replicas_[e].push_back(static_cast<int>(r));
      if (i == 0 || shares[r][i - 1] != e) p.local_[r].push_back(e);
    }
  }
  for (int e = 0; e < num_experts; ++e) {
    if (p.replicas_[e].empty()) return InvalidArgument("placement: expert " + std::to_string(e) + " is on no rank");
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
