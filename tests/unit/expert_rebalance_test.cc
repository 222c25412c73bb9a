// Rebalancing as the coordinator runs it (coordinator/expert_rebalance.h, Cluster::Rebalance): the
// per-layer plan from a measured load, the frame the ranks get (read back as the workers read it,
// worker/expert_rebalance.h), and a group's placement following its ranks' heartbeats — taken when
// every rank serves under the new generation, dropped when one failed it.
#include "coordinator/expert_rebalance.h"

#include <gtest/gtest.h>

#include <cmath>
#include <optional>

#include "coordinator/cluster.h"
#include "tests/unit/test_files.h"
#include "worker/expert_rebalance.h"

namespace shoal::coord {
namespace {

// 3 layers (layer 0 dense), 8 experts; Zipf-skewed, each layer's hot experts elsewhere.
comm::ExpertLoad SkewedLoad() {
  comm::ExpertLoad load;
  load.layers = 3;
  load.experts = 8;
  load.tokens.assign(24, 0);
  for (int l = 1; l < 3; ++l) {
    for (int e = 0; e < 8; ++e) load.tokens[l * 8 + e] = static_cast<uint64_t>(8000 / std::pow((e + 5 * l) % 8 + 1, 1.3));
  }
  return load;
}
const std::vector<bool> kMoe = {false, true, true};

TEST(ExpertRebalance, PlanLowersTheImbalanceLayerByLayer) {
  const comm::ExpertLoad load = SkewedLoad();
  const LayerShares start = StartupShares(kMoe, {{0, 1, 2, 3}, {4, 5, 6, 7}});
  EXPECT_TRUE(start[0][0].empty() && start[0][1].empty());
  // SharesImbalance is RankImbalance taken layer by layer (the same placement in every layer here).
  EXPECT_NEAR(SharesImbalance(load, start), load.RankImbalance({{0, 1, 2, 3}, {4, 5, 6, 7}}), 1e-12);
  for (int redundant : {0, 1, 2}) {
    auto plan = PlanRebalance(load, kMoe, start, 2, {}, redundant, 1);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    EXPECT_EQ(plan->redundant, redundant + redundant % 2) << "rounded up to fill both ranks' slots";
    EXPECT_GT(plan->before, 1.2);
    EXPECT_LT(plan->after, plan->before);
    EXPECT_NEAR(plan->after, SharesImbalance(load, plan->shares), 1e-12);
    EXPECT_TRUE(plan->shares[0][0].empty() && plan->shares[0][1].empty()) << "a dense layer gets no experts";
    for (int l = 1; l < 3; ++l) {
      EXPECT_EQ(plan->shares[l][0].size() + plan->shares[l][1].size(), static_cast<size_t>(8 + plan->redundant));
    }
  }
  // Two hosts of one rank each: planned node by node when the slots split evenly.
  auto nodes = PlanRebalance(load, kMoe, start, 2, NodesOfRanks({"a", "b"}), 0, 2);
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  EXPECT_TRUE(nodes->hierarchical);
  EXPECT_EQ(NodesOfRanks({"x", "y", "x", "z"}), (std::vector<int>{0, 1, 0, 2}));
  // Nothing to plan from, or a load of another model.
  comm::ExpertLoad empty = load;
  empty.tokens.assign(24, 0);
  EXPECT_TRUE(testing::MessageHas(PlanRebalance(empty, kMoe, start, 2, {}, 0, 1).status(), "no tokens"));
  EXPECT_FALSE(PlanRebalance(load, {true, true}, start, 2, {}, 0, 1).ok());
}

TEST(ExpertRebalance, FrameReadsBackAsTheWorkersReadIt) {
  const comm::ExpertLoad load = SkewedLoad();
  auto plan = PlanRebalance(load, kMoe, StartupShares(kMoe, {{0, 1, 2, 3}, {4, 5, 6, 7}}), 2, {}, 2, 1);
  ASSERT_TRUE(plan.ok());
  const control::Rebalance frame = RebalanceFrame(4, plan->shares, 2);
  ModelConfig c;
  c.num_layers = 3;
  c.num_experts = 8;
  c.layer_is_moe = kMoe;
  auto back = PlacementsFromFrame(frame, c, 2);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_FALSE((*back)[0].has_value());
  for (int l = 1; l < 3; ++l) {
    for (int r = 0; r < 2; ++r) {
      std::vector<int> want = plan->shares[l][r];
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      EXPECT_EQ((*back)[l]->local_experts(r), want) << "layer " << l << " rank " << r;
    }
  }
  // And through the wire.
  auto decoded = control::DecodePayload(control::MessageType::kRebalance,
                                        {reinterpret_cast<const uint8_t*>(control::EncodeFrame(frame).data()) + control::kHeaderBytes,
                                         control::EncodeFrame(frame).size() - control::kHeaderBytes});
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(std::get<control::Rebalance>(*decoded).experts, frame.experts);
}

class RecordingChannel : public RankChannel {
 public:
  void Send(const control::Message& m) override { sent.push_back(m); }
  void Close() override {}
  std::vector<control::Message> sent;
};

struct TwoRankGroup {
  Metrics metrics;
  Cluster cluster;
  std::vector<std::shared_ptr<RecordingChannel>> channels;
  std::vector<std::shared_ptr<Rank>> ranks;
  Clock::time_point now{};
  explicit TwoRankGroup(Cluster::Options o) : cluster(std::move(o), metrics) {
    for (uint32_t r = 0; r < 2; ++r) {
      control::Hello h;
      h.group = "g0";
      h.rank = r;
      h.size = 2;
      h.model = "m";
      h.num_experts = 8;
      h.host = "h";
      h.local_experts = r == 0 ? std::vector<uint32_t>{0, 1, 2, 3} : std::vector<uint32_t>{4, 5, 6, 7};
      channels.push_back(std::make_shared<RecordingChannel>());
      auto rank = cluster.Join(h, channels.back(), now, false);
      EXPECT_TRUE(rank.ok()) << rank.status().ToString();
      ranks.push_back(*rank);
    }
  }
  // Every rank reports its share of `cumulative` (split by expert: rank 0 even ids, rank 1 odd ones).
  // `rank1_generation`: rank 1's, when it differs from rank 0's.
  void Heartbeat(const std::vector<uint64_t>& cumulative, uint64_t generation, uint64_t failed = 0,
                 std::optional<uint64_t> rank1_generation = std::nullopt) {
    for (int r = 1; r >= 0; --r) {  // rank 0 last: it takes the group's snapshot
      control::Heartbeat hb;
      hb.layer_expert_tokens.assign(cumulative.size(), 0);
      for (size_t i = 0; i < cumulative.size(); ++i) hb.layer_expert_tokens[i] = (i % 2 == static_cast<size_t>(r)) ? cumulative[i] : 0;
      hb.expert_tokens.assign(8, 0);
      hb.placement_generation = r == 1 && rank1_generation ? *rank1_generation : generation;
      hb.rebalance_failed = failed;
      if (failed != 0) hb.rebalance_error = "disk full";
      cluster.OnHeartbeat(*ranks[r], hb, now);
    }
  }
};

Cluster::Options RebalanceOptions(double threshold) {
  Cluster::Options o;
  o.model_name = "m";
  o.model_layers = 3;
  o.model_experts = 8;
  o.layer_is_moe = kMoe;
  o.redundant_experts = 2;
  o.rebalance_threshold = threshold;
  o.rebalance_min_tokens = 100;
  o.rebalance_interval_s = 60;
  o.expert_load_window_s = 3600;
  return o;
}

TEST(ExpertRebalance, GroupTakesThePlacementWhenEveryRankServesUnderIt) {
  TwoRankGroup g(RebalanceOptions(0));
  const std::vector<uint64_t> load = SkewedLoad().tokens;
  g.Heartbeat(std::vector<uint64_t>(24, 0), 0);
  g.now += std::chrono::seconds(10);
  g.Heartbeat(load, 0);
  // Automatic rebalancing is off: only a request plans one.
  EXPECT_EQ(g.cluster.Rebalance(g.now, false)["groups"][0]["action"], "none");
  auto done = g.cluster.Rebalance(g.now, true);
  ASSERT_EQ(done["groups"][0]["action"], "sent") << done.dump();
  EXPECT_EQ(done["groups"][0]["generation"], 1);
  EXPECT_LT(done["groups"][0]["imbalance_planned"].get<double>(), done["groups"][0]["imbalance_before"].get<double>());
  for (const auto& ch : g.channels) {
    ASSERT_EQ(ch->sent.size(), 1u);
    EXPECT_EQ(std::get<control::Rebalance>(ch->sent[0]).generation, 1u);
  }
  // A second one waits for the first.
  EXPECT_EQ(g.cluster.Rebalance(g.now, true)["groups"][0]["action"], "none");
  // One rank switched, the other not yet: still pending.
  g.now += std::chrono::seconds(1);
  g.Heartbeat(load, 1, 0, /*rank1_generation=*/0);
  EXPECT_EQ(g.cluster.ExpertLoadReport()["groups"]["g0"]["placement_generation"], 0);
  g.Heartbeat(load, 1);
  const auto report = g.cluster.ExpertLoadReport()["groups"]["g0"];
  EXPECT_EQ(report["placement_generation"], 1);
  EXPECT_LT(report["rank_imbalance"].get<double>(), done["groups"][0]["imbalance_before"].get<double>());
  EXPECT_EQ(report["placement"][1][0].size() + report["placement"][1][1].size(), 10u);
}

TEST(ExpertRebalance, AFailedRankDropsItAndAutomaticWaitsForItsThresholds) {
  TwoRankGroup g(RebalanceOptions(1.05));
  const std::vector<uint64_t> load = SkewedLoad().tokens;
  g.Heartbeat(std::vector<uint64_t>(24, 0), 0);
  g.now += std::chrono::seconds(10);
  g.Heartbeat(load, 0);
  auto sent = g.cluster.Rebalance(g.now, false);
  ASSERT_EQ(sent["groups"][0]["action"], "sent") << sent.dump();
  g.Heartbeat(load, 0, /*failed=*/1);
  const auto d = g.cluster.Describe(g.now)[0]["expert_placement"];
  EXPECT_EQ(d["generation"], 0);
  EXPECT_EQ(d["pending"], 0);
  EXPECT_EQ(d["dropped"], 1);
  EXPECT_NE(d["last_error"].get<std::string>().find("disk full"), std::string::npos);
  // The next automatic try waits the interval, as after a switch (a failing rank is not hammered).
  EXPECT_EQ(g.cluster.Rebalance(g.now, false)["groups"][0]["action"], "none");
  g.now += std::chrono::seconds(61);
  g.Heartbeat(load, 0, 1);
  EXPECT_EQ(g.cluster.Rebalance(g.now, false)["groups"][0]["action"], "sent");
  g.Heartbeat(load, 2, 1);
  // Now balanced enough, and inside the interval: nothing more.
  g.now += std::chrono::seconds(1);
  EXPECT_EQ(g.cluster.Rebalance(g.now, false)["groups"][0]["action"], "none");
}

}  // namespace
}  // namespace shoal::coord
