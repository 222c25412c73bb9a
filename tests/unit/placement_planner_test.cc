// The expert placement planner (comm/placement_planner.h) against DeepSeek's EPLB run as published
// (tools/reference/make_eplb_cases.py → tests/fixtures/eplb/cases.json): on every recorded skewed load
// the most loaded rank carries no more (max/mean rank load ≤ EPLB's), with its invariants — every
// expert placed, equal slots per rank, every share of an expert inside one node in the hierarchical
// case, tokens following the shares — and the same plan every time.
#include "comm/placement_planner.h"

#include <gtest/gtest.h>

#include <fstream>
#include <algorithm>

#include <nlohmann/json.hpp>

#include "tests/unit/fixture_util.h"

namespace shoal::comm {
namespace {

TEST(PlacementPlanner, NeverWorseThanEplbOnItsOwnCases) {
  std::ifstream in(testing::FixturesDir() + "/eplb/cases.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  int better = 0;
  double ours_sum = 0, eplb_sum = 0;
  for (const nlohmann::json& c : doc["cases"]) {
    const std::string name = c["name"];
    PlacementRequest q;
    for (const auto& v : c["load"]) q.load.push_back(v.get<double>());
    q.num_ranks = c["num_ranks"];
    const int nodes = c["nodes"];
    for (int r = 0; r < q.num_ranks; ++r) q.node_of_rank.push_back(r / (q.num_ranks / nodes));
    q.redundant = c["redundant"];
    q.num_groups = c["groups"];
    auto plan = PlanPlacement(q);
    ASSERT_TRUE(plan.ok()) << name << ": " << plan.status().ToString();
    const double eplb = c["eplb_max_over_mean"];
    const double ours = plan->MaxOverMean();
    EXPECT_LE(ours, eplb * (1 + 1e-9)) << name;
    better += ours < eplb * (1 - 1e-6) ? 1 : 0;
    ours_sum += ours;
    eplb_sum += eplb;

    const int E = static_cast<int>(q.load.size());
    const int slots = (E + q.redundant) / q.num_ranks;
    std::vector<int> seen(E, 0);
    for (int r = 0; r < q.num_ranks; ++r) {
      EXPECT_EQ(static_cast<int>(plan->shares[r].size()), slots) << name << " rank " << r;
      for (int e : plan->shares[r]) ++seen[e];
    }
    for (int e = 0; e < E; ++e) {
      EXPECT_GE(seen[e], 1) << name << " expert " << e;
      EXPECT_EQ(seen[e], plan->copies[e]) << name << " expert " << e;
    }
    EXPECT_EQ(plan->hierarchical, nodes > 1) << name;
    if (plan->hierarchical) {
      // Every copy of an expert, and every expert of a group, on one node.
      const int group_size = E / q.num_groups;
      std::vector<int> node_of_group(q.num_groups, -1);
      for (int r = 0; r < q.num_ranks; ++r) {
        for (int e : plan->shares[r]) {
          int& n = node_of_group[e / group_size];
          if (n < 0) n = q.node_of_rank[r];
          EXPECT_EQ(n, q.node_of_rank[r]) << name << ": group " << e / group_size << " spans nodes";
        }
      }
    }
    auto again = PlanPlacement(q);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->shares, plan->shares) << name << ": not deterministic";
    auto placement = plan->ToPlacement();
    ASSERT_TRUE(placement.ok()) << name << ": " << placement.status().ToString();
    EXPECT_EQ(placement->num_ranks(), q.num_ranks);
    // Tokens follow the shares: over many tokens each rank's count of an expert's tokens matches its
    // shares of them, exactly, for a whole number of rounds.
    for (int e = 0; e < E; ++e) {
      std::vector<int> got(q.num_ranks, 0), want(q.num_ranks, 0);
      for (int64_t t = 0; t < plan->copies[e] * 10; ++t) ++got[placement->RankFor(e, t)];
      for (int r = 0; r < q.num_ranks; ++r) want[r] = 10 * static_cast<int>(std::count(plan->shares[r].begin(), plan->shares[r].end(), e));
      ASSERT_EQ(got, want) << name << " expert " << e;
      for (int r = 0; r < q.num_ranks; ++r) EXPECT_EQ(placement->Holds(r, e), want[r] > 0);
    }
  }
  std::printf("planner vs EPLB over %zu cases: mean max/mean %.4f vs %.4f, strictly better in %d\n",
              doc["cases"].size(), ours_sum / doc["cases"].size(), eplb_sum / doc["cases"].size(), better);
}

TEST(PlacementPlanner, BadRequestsNameTheField) {
  PlacementRequest q;
  q.load = {1, 2, 3, 4};
  q.num_ranks = 3;
  EXPECT_NE(PlanPlacement(q).status().message().find("multiple of the 3 ranks"), std::string::npos);
  q.num_ranks = 2;
  q.load[1] = -1;
  EXPECT_NE(PlanPlacement(q).status().message().find("load[1]"), std::string::npos);
  q.load[1] = 2;
  q.node_of_rank = {0, 1, 1};
  EXPECT_NE(PlanPlacement(q).status().message().find("node_of_rank"), std::string::npos);
  q.node_of_rank = {};
  q.num_groups = 3;
  EXPECT_NE(PlanPlacement(q).status().message().find("num_groups"), std::string::npos);
  q.num_groups = 1;
  q.redundant = 4;
  EXPECT_TRUE(PlanPlacement(q).ok());
  // FromRanks refuses an unplaced expert or one out of range; repeats are shares.
  EXPECT_FALSE(Placement::FromRanks(3, {{0, 1}, {1}}).ok());
  EXPECT_FALSE(Placement::FromRanks(2, {{0, 2}, {1}}).ok());
  auto shared = Placement::FromRanks(2, {{0, 1, 1}, {1}});
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(shared->replicas(1), (std::vector<int>{0, 0, 1}));
  EXPECT_EQ(shared->local_experts(0), (std::vector<int>{0, 1}));
}

}  // namespace
}  // namespace shoal::comm
