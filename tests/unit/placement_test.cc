// Expert placement for any rank count: dividing the experts or not, and more ranks than experts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>

#include "comm/placement.h"

namespace shoal {
namespace {

// Every expert has an owner, owners and local lists agree, and Holds() matches both.
void ExpectConsistent(const Placement& p) {
  for (int e = 0; e < p.num_experts(); ++e) {
    ASSERT_FALSE(p.replicas(e).empty()) << "expert " << e << " has no rank";
    for (int r : p.replicas(e)) EXPECT_TRUE(p.Holds(r, e));
  }
  int held = 0;
  for (int r = 0; r < p.num_ranks(); ++r) {
    for (int e : p.local_experts(r)) {
      const auto& reps = p.replicas(e);
      EXPECT_NE(std::find(reps.begin(), reps.end(), r), reps.end());
      ++held;
    }
  }
  int replicas = 0;
  for (int e = 0; e < p.num_experts(); ++e) replicas += static_cast<int>(p.replicas(e).size());
  EXPECT_EQ(held, replicas);
}

TEST(Placement, EveryRankCountUpToTheExperts) {
  for (int experts : {1, 5, 8, 10, 60, 128}) {
    for (int ranks = 1; ranks <= experts && ranks <= 16; ++ranks) {
      auto p = Placement::Balanced(experts, ranks);
      ASSERT_TRUE(p.ok());
      ExpectConsistent(*p);
      size_t lo = SIZE_MAX, hi = 0;
      for (int r = 0; r < ranks; ++r) {
        lo = std::min(lo, p->local_experts(r).size());
        hi = std::max(hi, p->local_experts(r).size());
      }
      EXPECT_GE(lo, 1u) << experts << " experts on " << ranks << " ranks";
      EXPECT_LE(hi - lo, 1u) << "balanced within one expert";
      for (int e = 0; e < experts; ++e) EXPECT_EQ(p->replicas(e).size(), 1u) << "no replicas when R <= E";
    }
  }
}

TEST(Placement, TenExpertsOnThreeRanks) {
  auto p = Placement::Balanced(10, 3);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->local_experts(0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p->local_experts(1), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(p->local_experts(2), (std::vector<int>{6, 7, 8, 9}));
}

TEST(Placement, MoreRanksThanExpertsMakesReplicasThatShareTokens) {
  auto p = Placement::Balanced(3, 8);
  ASSERT_TRUE(p.ok());
  ExpectConsistent(*p);
  EXPECT_EQ(p->replicas(0), (std::vector<int>{0, 3, 6}));
  EXPECT_EQ(p->replicas(2), (std::vector<int>{2, 5}));
  std::map<int, int> load;
  for (int64_t t = 0; t < 300; ++t) ++load[p->RankFor(0, t)];
  EXPECT_EQ(load, (std::map<int, int>{{0, 100}, {3, 100}, {6, 100}}));
}

TEST(Placement, RejectsEmptyShapes) {
  EXPECT_FALSE(Placement::Balanced(0, 2).ok());
  EXPECT_FALSE(Placement::Balanced(8, 0).ok());
}

}  // namespace
}  // namespace shoal
