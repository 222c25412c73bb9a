// The engine as one rank of an expert-parallel group, on every fixture, at any rank count (ctest runs
// N = 1..4): each rank loads the dense weights and only its placement's experts, runs its own prompts
// (data-parallel attention), and the group exchanges rows at every MoE layer. Results must equal
// HF transformers (the fixtures, same tolerance as tests/unit/fixtures_test.cc) and the single-process
// engine bit for bit (the exchange adds each token's expert outputs in the single-process order).
//
// Prompt p goes to rank p % N and starts at step p, so early and late steps have ranks with no tokens
// (they still join every collective), and at N = 4 one rank never has any.

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <regex>

#include <cmath>

#include "comm/placement_planner.h"
#include "worker/expert_rebalance.h"
#include "model/checkpoint.h"
#include "tests/mpi/mpi_test_main.h"
#include "tests/unit/fixture_util.h"

namespace shoal::testing {
namespace {

constexpr float kF32Tol = 2e-4f;

struct RankEngine {
  std::unique_ptr<Engine> engine;
  size_t resident_bytes = 0;
};

// `planned`: that placement (it must outlive the engine), else Placement::Balanced.
RankEngine MakeRankEngine(const std::string& dir, comm::Group& g, const Placement* planned = nullptr,
                          bool shared_memory = false) {
  RankEngine r;
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok());
  if (!config.ok()) return r;
  auto placement = planned != nullptr ? StatusOr<Placement>(*planned) : Placement::Balanced(config->num_experts, g.size());
  EXPECT_TRUE(placement.ok());
  const int rank = g.rank();
  auto weights = LoadModelWeights(*config, dir, [&](int, int e) { return placement->Holds(rank, e); });
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  if (!weights.ok()) return r;
  r.resident_bytes = weights->MatrixBytes();
  EngineConfig cfg;
  cfg.threads = 1;  // N ranks share 2 cores
  cfg.kv_block_size = 4;
  cfg.kv_cache_mib = 16;
  cfg.collective_timeout_ms = 60000;
  cfg.shared_memory_exchange = shared_memory;
  auto engine = Engine::Create(*config, std::move(weights).value(), cfg, &g, planned);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  if (engine.ok()) r.engine = std::move(engine).value();
  return r;
}

// Runs the fixture's prompts on the group (prompt p on rank p % N from step p) and compares every
// step's logits with the single-process engine (bit for bit) and transformers (within kF32Tol).
// `before_step(step)` runs on every rank before each step (the rebalance tests switch placements there).
void ExpectGroupMatches(const Fixture& f, RankEngine& rank, comm::Group& g,
                        const std::function<void(int step)>& before_step = nullptr) {
  ASSERT_TRUE(rank.engine);
  auto single = MakeEngine(f.dir, 1);
  ASSERT_TRUE(single);
  Engine& e = *rank.engine;
  const int V = e.config().vocab_size;
  const int P = static_cast<int>(f.prompts.size());

  struct Live {
    int prompt;
    SeqId seq, single_seq;
    int step = 0;  // 0 = prefill, then decode steps 1..decode_steps
    int32_t next = 0;
  };
  std::vector<Live> live;
  const int total_steps = (P - 1) + 1 + f.decode_steps;
  for (int step = 0; step < total_steps; ++step) {
    if (before_step) before_step(step);
    // Admit this rank's prompt that starts now.
    if (step < P && step % g.size() == g.rank()) {
      auto s = e.NewSequence();
      auto s1 = single->NewSequence();
      ASSERT_TRUE(s.ok() && s1.ok());
      live.push_back({step, *s, *s1});
    }
    std::vector<ForwardInput> batch, single_batch;
    std::vector<size_t> idx;
    for (size_t i = 0; i < live.size(); ++i) {
      Live& l = live[i];
      if (l.step > f.decode_steps) continue;
      const bool prefill = l.step == 0;
      std::span<const int32_t> toks = prefill ? std::span<const int32_t>(f.prompts[l.prompt].prompt)
                                              : std::span<const int32_t>(&l.next, 1);
      batch.push_back({l.seq, toks, prefill});
      single_batch.push_back({l.single_seq, toks, prefill});
      idx.push_back(i);
    }
    std::vector<ForwardOutput> out, single_out;
    Status st = e.Forward(batch, &out);  // possibly empty: the rank still joins the exchange
    ASSERT_TRUE(st.ok()) << st.ToString();
    if (batch.empty()) continue;
    ASSERT_TRUE(single->Forward(single_batch, &single_out).ok());
    for (size_t b = 0; b < idx.size(); ++b) {
      Live& l = live[idx[b]];
      const std::string what = f.name + " rank " + std::to_string(g.rank()) + "/" + std::to_string(g.size()) +
                               " prompt " + std::to_string(l.prompt) + " step " + std::to_string(l.step);
      EXPECT_EQ(out[b].logits, single_out[b].logits) << what << ": differs from the single-process engine";
      const std::string key = "prompt" + std::to_string(l.prompt);
      std::vector<float> want;
      const float* got = out[b].logits.data();
      if (l.step == 0) {
        want = f.Tensor(key + ".prefill_logits");
        ASSERT_EQ(out[b].logits.size(), want.size()) << what;
        EXPECT_LE(MaxAbsDiff(got, want.data(), want.size()), kF32Tol) << what;
        got += out[b].logits.size() - V;
      } else {
        want = f.Tensor(key + ".decode_logits");
        EXPECT_LE(MaxAbsDiff(got, want.data() + static_cast<size_t>(l.step - 1) * V, V), kF32Tol) << what;
      }
      l.next = kernels::ArgMax(got, V);
      EXPECT_EQ(l.next, f.prompts[l.prompt].greedy[l.step]) << what;
      ++l.step;
    }
  }
  for (const Live& l : live) EXPECT_EQ(l.step, f.decode_steps + 1) << "prompt " << l.prompt << " did not finish";
}

class EpFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EpFixtureTest, GroupMatchesTransformersAndSingleProcess) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  ASSERT_TRUE(f.expected);
  RankEngine rank = MakeRankEngine(f.dir, g);
  ExpectGroupMatches(f, rank, g);
}

// The same through the shared-memory exchange (parallel.shared_memory_exchange): bit-identical.
TEST_P(EpFixtureTest, SharedMemoryExchangeMatchesSingleProcess) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  ASSERT_TRUE(f.expected);
  RankEngine rank = MakeRankEngine(f.dir, g, nullptr, /*shared_memory=*/true);
  ASSERT_TRUE(rank.engine);
  EXPECT_EQ(rank.engine->Describe().find("shared-memory") != std::string::npos, g.size() > 1) << rank.engine->Describe();
  ExpectGroupMatches(f, rank, g);
}

// A placement from the load planner (comm/placement_planner.h) on a skewed load, with redundant
// shares (hot experts served by several ranks, some ranks taking two shares of one expert): tokens
// pick among an expert's shares by index, and the results stay bit-identical to one process.
TEST_P(EpFixtureTest, PlannedPlacementWithSharesMatchesSingleProcess) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  ASSERT_TRUE(f.expected);
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  if (config->num_experts == 0) GTEST_SKIP() << "no MoE layers";
  comm::PlacementRequest q;
  for (int e = 0; e < config->num_experts; ++e) q.load.push_back(1000.0 / std::pow(e + 1.0, 1.2));
  q.num_ranks = g.size();
  q.redundant = g.size();  // at least one extra share per rank …
  while ((config->num_experts + q.redundant) % g.size() != 0) ++q.redundant;  // … filling every rank's slots
  auto plan = comm::PlanPlacement(q);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  auto placement = plan->ToPlacement();
  ASSERT_TRUE(placement.ok()) << placement.status().ToString();
  RankEngine rank = MakeRankEngine(f.dir, g, &*placement);
  ExpectGroupMatches(f, rank, g);
}

// Per-layer placements from the planner, each layer with its own hot experts (a Zipf load rotated by
// the layer), with redundant shares filling every rank's slots.
std::vector<std::optional<Placement>> PlannedLayers(const ModelConfig& c, int ranks) {
  std::vector<std::optional<Placement>> out(static_cast<size_t>(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[l]) continue;
    comm::PlacementRequest q;
    for (int e = 0; e < c.num_experts; ++e) q.load.push_back(1000.0 / std::pow((e + 7 * l) % c.num_experts + 1.0, 1.2));
    q.num_ranks = ranks;
    q.redundant = ranks;
    while ((c.num_experts + q.redundant) % ranks != 0) ++q.redundant;
    auto plan = comm::PlanPlacement(q);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    auto p = plan->ToPlacement();
    EXPECT_TRUE(p.ok());
    out[l] = std::move(*p);
  }
  return out;
}

// Runs the group with a rebalancer on every rank; the frame arrives before step `begin_at`, mid-way
// through the prompts' generation, and the ranks agree once per step, as the serve loop does.
// Returns the step before which the group switched (or dropped it): -1 if neither happened.
int RunWithRebalance(const Fixture& f, RankEngine& rank, comm::Group& g, ExpertRebalancer& rebalancer,
                     const control::Rebalance& frame, int begin_at) {
  int acted_at = -1;
  ExpectGroupMatches(f, rank, g, [&](int step) {
    if (step == begin_at) rebalancer.Begin(frame);
    auto values = rebalancer.AgreementValues();
    std::vector<int64_t> v(values.begin(), values.end());
    // Until the load finishes the agreement says "still loading", as it does while serving; here
    // the test waits for it at the step after Begin, so the switch step is known.
    if (step == begin_at + 1) {
      while (rebalancer.loading()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      values = rebalancer.AgreementValues();
      v.assign(values.begin(), values.end());
    }
    ASSERT_TRUE(g.AllReduceMax(v, TestDeadline()).ok());
    bool changed = false;
    Status st = rebalancer.Act(v, &changed);
    ASSERT_TRUE(st.ok()) << st.ToString();
    if (changed) acted_at = step;
  });
  return acted_at;
}

// Rebalancing mid-generation (worker/expert_rebalance.h): the ranks load the experts their new
// per-layer placements give them, switch before the same step, drop the experts they lost, and every
// step's logits stay bit-identical to one process (so greedy outputs are unchanged) and to transformers.
TEST_P(EpFixtureTest, RebalanceMidGenerationKeepsOutputs) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  ASSERT_TRUE(f.expected);
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  if (config->num_experts == 0) GTEST_SKIP() << "no MoE layers";
  RankEngine rank = MakeRankEngine(f.dir, g);
  ASSERT_TRUE(rank.engine);
  const std::vector<std::optional<Placement>> target = PlannedLayers(*config, g.size());
  const control::Rebalance frame = FrameFromPlacements(7, target, g.size());
  ExpertRebalancer rebalancer(*rank.engine, f.dir, std::nullopt);
  const int acted = RunWithRebalance(f, rank, g, rebalancer, frame, /*begin_at=*/2);
  // At the first agreement after every rank loaded: the step of the frame when the loads were that
  // quick (or nothing was gained), else the next one, where the test waits for them.
  EXPECT_TRUE(acted == 2 || acted == 3) << acted;
  EXPECT_EQ(rebalancer.generation(), 7u);
  EXPECT_EQ(rebalancer.last_failed(), 0u) << rebalancer.last_error();
  // This rank holds exactly its new experts, layer by layer; the others' memory was given back.
  const ModelWeights& w = rank.engine->weights();
  auto balanced = Placement::Balanced(config->num_experts, g.size());
  size_t held_now = 0, held_before = 0, expert_bytes = 0;
  for (int l = 0; l < config->num_layers; ++l) {
    if (!target[l]) continue;
    ASSERT_NE(rank.engine->layer_placement(l), nullptr);
    EXPECT_EQ(rank.engine->layer_placement(l)->local_experts(g.rank()), target[l]->local_experts(g.rank())) << "layer " << l;
    for (int e = 0; e < config->num_experts; ++e) {
      EXPECT_EQ(w.layers[l].experts[e].present(), target[l]->Holds(g.rank(), e)) << "layer " << l << " expert " << e;
      if (w.layers[l].experts[e].present()) expert_bytes = w.layers[l].experts[e].nbytes();
      held_now += target[l]->Holds(g.rank(), e) ? 1 : 0;
      held_before += balanced->Holds(g.rank(), e) ? 1 : 0;
    }
  }
  // Resident bytes follow: the dense weights plus the experts held now (every expert the same size).
  EXPECT_EQ(w.MatrixBytes() + held_before * expert_bytes, rank.resident_bytes + held_now * expert_bytes);
}

// A rank that cannot load its gained experts (here: a checkpoint that is not there) fails the
// generation; the group drops it together, before the same step, and goes on under the old placement.
TEST_P(EpFixtureTest, RebalanceOneRankCannotLoadIsDroppedByAll) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  if (config->num_experts == 0 || g.size() < 2) GTEST_SKIP() << "needs MoE layers and two ranks";
  RankEngine rank = MakeRankEngine(f.dir, g);
  ASSERT_TRUE(rank.engine);
  const control::Rebalance frame = FrameFromPlacements(3, PlannedLayers(*config, g.size()), g.size());
  ExpertRebalancer rebalancer(*rank.engine, g.rank() == 1 ? f.dir + "/missing" : f.dir, std::nullopt);
  const int acted = RunWithRebalance(f, rank, g, rebalancer, frame, /*begin_at=*/1);
  EXPECT_TRUE(acted == 1 || acted == 2) << acted;
  EXPECT_EQ(rebalancer.generation(), 0u);
  EXPECT_EQ(rebalancer.last_failed(), 3u);
  for (int l = 0; l < config->num_layers; ++l) {
    if (!config->layer_is_moe[l]) continue;
    EXPECT_EQ(rank.engine->layer_placement(l)->local_experts(g.rank()),
              Placement::Balanced(config->num_experts, g.size())->local_experts(g.rank()));
  }
}

// Frames that do not fit the model or the group are refused with the field named, before anything loads.
TEST_P(EpFixtureTest, RebalanceFrameChecks) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  if (config->num_experts == 0 || g.rank() != 0) GTEST_SKIP();
  const auto target = PlannedLayers(*config, g.size());
  control::Rebalance m = FrameFromPlacements(1, target, g.size());
  auto back = PlacementsFromFrame(m, *config, g.size());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (int l = 0; l < config->num_layers; ++l) {
    ASSERT_EQ((*back)[l].has_value(), target[l].has_value());
    if (!target[l]) continue;
    for (int e = 0; e < config->num_experts; ++e) EXPECT_EQ((*back)[l]->replicas(e), target[l]->replicas(e));
  }
  EXPECT_FALSE(PlacementsFromFrame(m, *config, g.size() + 1).ok());
  control::Rebalance bad = m;
  bad.experts[0] = static_cast<uint32_t>(config->num_experts);
  EXPECT_NE(PlacementsFromFrame(bad, *config, g.size()).status().message().find("outside"), std::string::npos);
  bad = m;
  bad.layers += 1;
  EXPECT_NE(PlacementsFromFrame(bad, *config, g.size()).status().message().find("layers"), std::string::npos);
  if (g.size() >= 2) {
    // Rank 0's slots of the last MoE layer moved to rank 1: rank 0 holds nothing there.
    bad = m;
    int moe = config->num_layers - 1;
    while (!config->layer_is_moe[moe]) --moe;
    const size_t last = static_cast<size_t>(moe) * g.size();
    bad.slots[last + 1] += bad.slots[last];
    bad.slots[last] = 0;
    EXPECT_NE(PlacementsFromFrame(bad, *config, g.size()).status().message().find("holds no expert"), std::string::npos);
  }
}

// A rejected batch on one rank (unknown sequence) must not stall the others: that rank joins the
// step with no tokens and returns its error; the others' step succeeds.
TEST_P(EpFixtureTest, RejectedBatchOnOneRankDoesNotStallTheGroup) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  RankEngine rank = MakeRankEngine(f.dir, g);
  ASSERT_TRUE(rank.engine);
  Engine& e = *rank.engine;
  std::vector<ForwardOutput> out;
  SeqId s = *e.NewSequence();
  if (g.rank() == 0) {
    Status st = e.Forward({{s + 100, f.prompts[0].prompt, false}}, &out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  } else {
    Status st = e.Forward({{s, f.prompts[0].prompt, false}}, &out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(kernels::ArgMax(out[0].logits.data(), e.config().vocab_size), f.prompts[0].greedy[0]);
  }
}

// Resident weight bytes = the dense tensors + this rank's experts, counted independently from the
// checkpoint's own tensor list (every 2-D tensor; an expert tensor only when placed here; Llama 4's
// fused [E, ., .] expert tensors by the slices of the experts placed here; a multimodal checkpoint's
// vision tensors not at all).
TEST_P(EpFixtureTest, ResidentBytesAreDenseWeightsPlusOwnExperts) {
  comm::Group& g = World();
  Fixture f = LoadFixture(GetParam());
  RankEngine rank = MakeRankEngine(f.dir, g);
  ASSERT_TRUE(rank.engine);
  auto config = LoadModelConfig(f.dir);
  auto placement = Placement::Balanced(config->num_experts, g.size());
  auto ckpt = Checkpoint::Open(f.dir);
  ASSERT_TRUE(ckpt.ok());
  const std::regex expert_re(R"(\.experts\.(\d+)\.)");
  size_t dense = 0, own = 0, all_experts = 0;
  for (const std::string& name : (*ckpt)->TensorNames()) {
    auto t = (*ckpt)->Get(name);
    ASSERT_TRUE(t.ok());
    if (name.compare(0, config->tensor_prefix.size(), config->tensor_prefix) != 0) continue;
    if (t->shape.size() == 3 && name.find(".experts.") != std::string::npos) {
      ASSERT_EQ(t->shape[0], config->num_experts) << name;
      const size_t slice = t->nbytes / static_cast<size_t>(config->num_experts);
      all_experts += t->nbytes;
      for (int e = 0; e < config->num_experts; ++e) own += placement->Holds(g.rank(), e) ? slice : 0;
      continue;
    }
    if (t->shape.size() != 2) continue;  // norms and biases are not matrices
    std::smatch m;
    if (std::regex_search(name, m, expert_re)) {
      all_experts += t->nbytes;
      if (placement->Holds(g.rank(), std::stoi(m[1]))) own += t->nbytes;
    } else {
      dense += t->nbytes;
    }
  }
  EXPECT_EQ(rank.resident_bytes, dense + own) << f.name << " rank " << g.rank();
  if (g.size() > 1) {
    EXPECT_LT(own, all_experts) << "a rank of a group must not hold every expert";
  }
  // Every expert is held by some rank: the group's experts add up to the whole model's.
  std::vector<int64_t> sum = {static_cast<int64_t>(own)};
  ASSERT_TRUE(g.AllReduceSum(sum, TestDeadline()).ok());
  if (g.size() <= config->num_experts) {
    EXPECT_EQ(sum[0], static_cast<int64_t>(all_experts));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EpFixtureTest, ::testing::ValuesIn(ListFixtures()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return s;
                         });

}  // namespace
}  // namespace shoal::testing
