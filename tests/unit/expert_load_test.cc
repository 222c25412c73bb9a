// Expert load statistics: the engine's per-layer counts (every MoE layer routes each token to top-k
// experts, so a layer's counts sum to tokens × k), and the coordinator's window over them
// (coordinator/expert_load.h): merging ranks, the sliding window, restarts, imbalance, the saved form.
#include "coordinator/expert_load.h"

#include <gtest/gtest.h>

#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"
#include "worker/engine.h"

namespace shoal::coord {
namespace {

using Clock = ExpertLoadWindow::Clock;

TEST(ExpertLoad, EngineCountsEveryTokensTopKPerMoeLayer) {
  const auto f = testing::LoadFixture("qwen2-moe-f32");
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  auto weights = LoadModelWeights(*config, f.dir);
  ASSERT_TRUE(weights.ok());
  EngineConfig cfg;
  cfg.threads = 2;
  auto engine = Engine::Create(*config, std::move(weights).value(), cfg);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  auto s = (*engine)->NewSequence();
  ASSERT_TRUE(s.ok());
  std::vector<ForwardOutput> out;
  const std::vector<int32_t>& prompt = f.prompts[0].prompt;
  ASSERT_TRUE((*engine)->Forward({{*s, prompt, false}}, &out).ok());
  const std::vector<uint64_t>& rows = (*engine)->layer_expert_rows();
  const int E = config->num_experts;
  ASSERT_EQ(rows.size(), static_cast<size_t>(config->num_layers * E));
  uint64_t all = 0;
  for (int l = 0; l < config->num_layers; ++l) {
    uint64_t layer = 0;
    for (int e = 0; e < E; ++e) layer += rows[static_cast<size_t>(l * E + e)];
    const bool moe = (*engine)->weights().layers[l].is_moe;
    EXPECT_EQ(layer, moe ? prompt.size() * config->num_experts_per_tok : 0u) << "layer " << l;
    all += layer;
  }
  uint64_t total = 0;
  for (uint64_t r : (*engine)->expert_rows_total()) total += r;
  EXPECT_EQ(all, total);
}

TEST(ExpertLoad, GroupCountsAddRanksAndReplicas) {
  // 2 layers, 4 experts, counted by expert id on each rank: expert 1 ran on both ranks (a replica).
  const std::vector<uint64_t> r0 = {1, 2, 0, 0, 10, 20, 0, 0}, r1 = {0, 3, 4, 5, 0, 30, 40, 50};
  EXPECT_EQ(GroupCumulative(2, 4, {&r0, &r1}), (std::vector<uint64_t>{1, 5, 4, 5, 10, 50, 40, 50}));
  // A rank whose counts have another shape (or none yet) is left out.
  const std::vector<uint64_t> bad = {1, 2, 3};
  EXPECT_EQ(GroupCumulative(2, 4, {&bad, &r1}), r1);
  EXPECT_EQ(GroupCumulative(2, 4, {nullptr}), std::vector<uint64_t>(8, 0));
}

TEST(ExpertLoad, WindowSlidesAndRestartsWhenCountersGoBack) {
  ExpertLoadWindow w(std::chrono::seconds(60));
  const Clock::time_point t0{};
  EXPECT_EQ(w.Current().seconds, 0);
  for (int i = 0; i <= 30; ++i) {  // every 5 s, expert 0 gains 10 tokens a step, expert 1 one
    w.Record(t0 + std::chrono::seconds(5 * i), 1, 2, {static_cast<uint64_t>(10 * i), static_cast<uint64_t>(i)});
  }
  ExpertLoad load = w.Current();
  EXPECT_GE(load.seconds, 60);
  EXPECT_LE(load.seconds, 65);  // the newest snapshot at least a window old is the baseline
  EXPECT_EQ(load.tokens[0], static_cast<uint64_t>(2 * load.seconds));
  EXPECT_EQ(load.tokens[1], static_cast<uint64_t>(load.seconds / 5));
  // Frequent records are thinned: at most window/12 apart except the newest.
  for (int i = 0; i < 100; ++i) w.Record(t0 + std::chrono::seconds(150) + std::chrono::milliseconds(10 * i), 1, 2, {300, 30});
  EXPECT_LE(w.Current().seconds, 66);
  // A counter going back (a rank restarted) starts the window again.
  w.Record(t0 + std::chrono::seconds(160), 1, 2, {5, 1});
  EXPECT_EQ(w.Current().seconds, 0);
  w.Record(t0 + std::chrono::seconds(165), 1, 2, {9, 1});
  EXPECT_EQ(w.Current().tokens, (std::vector<uint64_t>{4, 0}));
}

TEST(ExpertLoad, RankImbalanceAndTheSavedForm) {
  ExpertLoad load;
  load.layers = 2;
  load.experts = 4;
  // Layer 0: experts 0..3 = 30, 10, 10, 10 → ranks {0,1}: 40, {2,3}: 20 → max/mean = 40/30.
  // Layer 1: balanced.
  load.tokens = {30, 10, 10, 10, 5, 5, 5, 5};
  EXPECT_NEAR(load.RankImbalance({{0, 1}, {2, 3}}), (60 * (40.0 / 30) + 20 * 1.0) / 80, 1e-12);
  // Expert 0 replicated on both ranks: its tokens split, layer 0 → 25 + 35... {0,1}: 15 + 10, {0,2,3}: 15 + 20.
  EXPECT_NEAR(load.RankImbalance({{0, 1}, {0, 2, 3}}), (60 * (35.0 / 30) + 20 * (12.5 / 10)) / 80, 1e-12);
  EXPECT_EQ(ExpertLoad{}.RankImbalance({{0}}), 0);
  const auto j = ExpertLoadJson(load);
  auto back = ExpertLoadFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tokens, load.tokens);
  EXPECT_EQ(back->layers, 2);
  auto broken = j;
  broken["tokens"][1] = nlohmann::ordered_json::array({1, 2});
  EXPECT_TRUE(testing::MessageHas(ExpertLoadFromJson(broken).status(), "tokens[1] must have 4 counts"));
  broken = j;
  broken["tokens"][0][2] = -1;
  EXPECT_FALSE(ExpertLoadFromJson(broken).ok());
}

}  // namespace
}  // namespace shoal::coord

namespace shoal::coord {
namespace {

TEST(ExpertLoad, BalancedRangesAsThePlacementSplitsThem) {
  ExpertLoad load;
  load.layers = 1;
  load.experts = 5;
  load.tokens = {50, 10, 10, 10, 20};
  // 2 ranks, Placement::Balanced's cuts: {0,1} = 60, {2,3,4} = 40 → 60 / 50.
  EXPECT_NEAR(load.BalancedImbalance(2), 1.2, 1e-12);
  // 5 ranks: an expert each → 50 / 20.
  EXPECT_NEAR(load.BalancedImbalance(5), 2.5, 1e-12);
  // 8 ranks: experts 0, 1, 2 twice (ranks r and r + 5), their tokens split → 25 / 12.5.
  EXPECT_NEAR(load.BalancedImbalance(8), 2.0, 1e-12);
  EXPECT_NEAR(load.BalancedImbalance(1), 1.0, 1e-12);
}

}  // namespace
}  // namespace shoal::coord
