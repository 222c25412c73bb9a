// Tensor-parallel attention with expert parallelism over the whole group, on every fixture: ctest runs
// N = 2 and 4 ranks, and each run tries every T in {2, 4} that divides N (D = N / T replicas of T
// ranks). Every fixture has 4 q heads and 2 or 4 kv heads, so T = 4 covers fewer kv heads than ranks
// (a kv head replicated on two ranks); the expert counts (5, 6, 8, 10) do not all divide N. The MLA
// fixtures split their heads over a replicated latent cache; the FP8 one is refused.
//
// The tolerance: a TP step adds the heads' o_proj contributions, the dense MLP's intermediate ranges
// and the vocabulary ranges in another order than one process, so results are not bit-identical to
// it; they must stay within the same 2e-4 (max abs over the logits) of transformers computing in f32
// that every other engine test holds, with identical greedy tokens. The T ranks of a replica must
// agree with each other bit for bit (each sum is taken once, in rank order, and copied to all).

#include <gtest/gtest.h>

#include <regex>

#include "comm/tensor_parallel.h"
#include "model/checkpoint.h"
#include "model/tensor_parallel_weights.h"
#include "tests/mpi/mpi_test_main.h"
#include "tests/unit/fixture_util.h"

namespace shoal::testing {
namespace {

constexpr float kF32Tol = 2e-4f;

struct TpRank {
  comm::TensorParallelLayout layout;
  std::unique_ptr<Engine> engine;
  size_t resident_bytes = 0;
};

// Every rank reports the same host, so replicas are consecutive ranks.
// `tp_rank1_kv_blocks` > 0: that KV cache size on each replica's tp_rank 1 (the others keep 16 MiB).
TpRank MakeTpRank(const std::string& dir, comm::Group& world, int tp, int64_t tp_rank1_kv_blocks = 0) {
  TpRank r;
  auto layout = comm::SplitTensorParallel(world, tp, "localhost", TestDeadline());
  EXPECT_TRUE(layout.ok()) << layout.status().ToString();
  if (!layout.ok()) return r;
  r.layout = std::move(layout).value();
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok());
  if (!config.ok()) return r;
  auto placement = Placement::Balanced(config->num_experts, world.size());
  EXPECT_TRUE(placement.ok());
  const int rank = world.rank();
  auto weights = LoadModelWeights(*config, dir, [&](int, int e) { return placement->Holds(rank, e); });
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  if (!weights.ok()) return r;
  const TpShard shard{r.layout.tp_group->rank(), tp};
  Status sliced = SliceForTensorParallel(*config, shard, &*weights);
  EXPECT_TRUE(sliced.ok()) << sliced.ToString();
  r.resident_bytes = weights->MatrixBytes();
  EngineConfig cfg;
  cfg.threads = 1;  // N ranks share 2 cores
  cfg.kv_block_size = 4;
  cfg.kv_cache_mib = 16;
  if (shard.rank == 1) cfg.kv_cache_blocks = tp_rank1_kv_blocks;
  cfg.collective_timeout_ms = 60000;
  auto engine = Engine::Create(*config, std::move(weights).value(), cfg, &world, nullptr, r.layout.tp_group.get());
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  if (engine.ok()) r.engine = std::move(engine).value();
  return r;
}

uint64_t Fnv(const std::vector<float>& v) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::vector<int> TpSizes(int n) {
  std::vector<int> out;
  for (int t : {2, 4}) {
    if (n % t == 0) out.push_back(t);
  }
  return out;
}

class TpFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TpFixtureTest, ReplicasMatchTransformers) {
  comm::Group& world = World();
  Fixture f = LoadFixture(GetParam());
  ASSERT_TRUE(f.expected);
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  for (int tp : TpSizes(world.size())) {
    if (config->fp8_weights) {
      EXPECT_EQ(CheckTensorParallel(*config, tp).code(), StatusCode::kUnimplemented);
      continue;
    }
    TpRank rank = MakeTpRank(f.dir, world, tp);
    ASSERT_TRUE(rank.engine);
    Engine& e = *rank.engine;
    comm::Group& tpg = *rank.layout.tp_group;
    const int D = rank.layout.replicas, replica = rank.layout.replica;
    const int V = e.config().vocab_size;
    const int P = static_cast<int>(f.prompts.size());
    struct Live {
      int prompt;
      SeqId seq;
      int step = 0;
      int32_t next = 0;
    };
    std::vector<Live> live;
    const int total_steps = (P - 1) + 1 + f.decode_steps;
    for (int step = 0; step < total_steps; ++step) {
      // Prompt p to replica p % D, starting at step p: every rank of the replica runs it.
      if (step < P && step % D == replica) {
        auto s = e.NewSequence();
        ASSERT_TRUE(s.ok());
        live.push_back({step, *s});
      }
      std::vector<ForwardInput> batch;
      std::vector<size_t> idx;
      for (size_t i = 0; i < live.size(); ++i) {
        Live& l = live[i];
        if (l.step > f.decode_steps) continue;
        const bool prefill = l.step == 0;
        std::span<const int32_t> toks = prefill ? std::span<const int32_t>(f.prompts[l.prompt].prompt)
                                                : std::span<const int32_t>(&l.next, 1);
        batch.push_back({l.seq, toks, prefill});
        idx.push_back(i);
      }
      std::vector<ForwardOutput> out;
      Status st = e.Forward(batch, &out);
      ASSERT_TRUE(st.ok()) << st.ToString();
      // The replica's ranks agree bit for bit (an empty batch hashes alike on all of them).
      std::vector<float> all;
      for (const ForwardOutput& o : out) all.insert(all.end(), o.logits.begin(), o.logits.end());
      const auto h = static_cast<int64_t>(Fnv(all) >> 1);
      std::vector<int64_t> hv = {h, -h};
      ASSERT_TRUE(tpg.AllReduceMax(hv, TestDeadline()).ok());
      EXPECT_EQ(hv[0], -hv[1]) << f.name << " T=" << tp << " step " << step << ": a replica's ranks disagree";
      for (size_t b = 0; b < idx.size(); ++b) {
        Live& l = live[idx[b]];
        const std::string what = f.name + " T=" + std::to_string(tp) + " rank " + std::to_string(world.rank()) + "/" +
                                 std::to_string(world.size()) + " prompt " + std::to_string(l.prompt) + " step " +
                                 std::to_string(l.step);
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
}

// A rank holds its share of every split tensor and nothing else: counted independently from the
// checkpoint's tensor list by the split rules (q/o by heads, k/v by kv heads or one replicated head,
// dense MLPs and shared experts by intermediate range, embedding and lm_head by vocabulary range,
// routers whole, routed experts by the placement over all N ranks).
TEST_P(TpFixtureTest, ResidentBytesAreThisRanksShare) {
  comm::Group& world = World();
  Fixture f = LoadFixture(GetParam());
  auto config = LoadModelConfig(f.dir);
  ASSERT_TRUE(config.ok());
  if (config->fp8_weights) GTEST_SKIP() << "FP8 checkpoints are not split";
  for (int tp : TpSizes(world.size())) {
    TpRank rank = MakeTpRank(f.dir, world, tp);
    ASSERT_TRUE(rank.engine);
    const TpShard shard{rank.layout.tp_group->rank(), tp};
    auto placement = Placement::Balanced(config->num_experts, world.size());
    auto ckpt = Checkpoint::Open(f.dir);
    ASSERT_TRUE(ckpt.ok());
    const std::regex expert_re(R"(\.experts\.(\d+)\.)");
    const int64_t kv_local = std::max(1, config->num_kv_heads / tp);
    size_t want = 0;
    for (const std::string& name : (*ckpt)->TensorNames()) {
      auto t = (*ckpt)->Get(name);
      ASSERT_TRUE(t.ok());
      if (name.compare(0, config->tensor_prefix.size(), config->tensor_prefix) != 0) continue;
      const auto ends = [&](const std::string& s) {
        return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
      };
      if (t->shape.size() == 3 && name.find(".experts.") != std::string::npos) {
        const size_t slice = t->nbytes / static_cast<size_t>(config->num_experts);
        for (int e = 0; e < config->num_experts; ++e) want += placement->Holds(world.rank(), e) ? slice : 0;
        continue;
      }
      if (t->shape.size() != 2) continue;
      std::smatch m;
      if (std::regex_search(name, m, expert_re)) {
        if (placement->Holds(world.rank(), std::stoi(m[1]))) want += t->nbytes;
      } else if (ends("q_proj.weight") || ends("o_proj.weight") || ends("q_b_proj.weight") || ends("kv_b_proj.weight")) {
        want += t->nbytes / static_cast<size_t>(tp);
      } else if (ends("k_proj.weight") || ends("v_proj.weight")) {
        want += t->nbytes / static_cast<size_t>(config->num_kv_heads) * static_cast<size_t>(kv_local);
      } else if (ends("embed_tokens.weight") || ends("lm_head.weight")) {
        want += t->nbytes / static_cast<size_t>(t->shape[0]) * static_cast<size_t>(SplitRange(t->shape[0], shard).size);
      } else if (ends("gate_proj.weight") || ends("up_proj.weight")) {
        want += t->nbytes / static_cast<size_t>(t->shape[0]) * static_cast<size_t>(SplitRange(t->shape[0], shard).size);
      } else if (ends("down_proj.weight")) {
        want += t->nbytes / static_cast<size_t>(t->shape[1]) * static_cast<size_t>(SplitRange(t->shape[1], shard).size);
      } else {
        want += t->nbytes;  // routers, the shared expert's gate, MLA's q_a and kv_a
      }
    }
    EXPECT_EQ(rank.resident_bytes, want) << f.name << " T=" << tp << " rank " << world.rank();
  }
}

// A batch one rank of a replica cannot hold in its KV cache is rejected by every rank of the replica
// before any collective (so none waits on a peer that left the step), the blocks the others reserved
// are given back, and the next batch runs normally and matches transformers.
TEST(TpEngine, ABatchOneRankCannotHoldIsRejectedByTheReplica) {
  comm::Group& world = World();
  Fixture f = LoadFixture("qwen3-moe-f32");
  ASSERT_TRUE(f.expected);
  const std::vector<int32_t>& fits = f.prompts[0].prompt;
  ASSERT_LE(fits.size(), 8u);
  const std::vector<int32_t> too_long(12, fits[0]);
  for (int tp : TpSizes(world.size())) {
    TpRank rank = MakeTpRank(f.dir, world, tp, /*tp_rank1_kv_blocks=*/2);  // 2 blocks of 4 tokens
    ASSERT_TRUE(rank.engine);
    Engine& e = *rank.engine;
    const int64_t free_before = e.kv_blocks().free_blocks();
    auto seq = e.NewSequence();
    ASSERT_TRUE(seq.ok());
    std::vector<ForwardOutput> out;
    Status st = e.Forward({{*seq, too_long, true}}, &out);
    EXPECT_FALSE(st.ok()) << "T=" << tp << " rank " << world.rank();
    EXPECT_FALSE(comm::IsGroupFailure(st)) << st.ToString();
    EXPECT_EQ(e.kv_blocks().free_blocks(), free_before) << "T=" << tp << " rank " << world.rank() << ": blocks kept";
    EXPECT_EQ(e.SequenceLength(*seq), 0);
    st = e.Forward({{*seq, fits, true}}, &out);
    ASSERT_TRUE(st.ok()) << st.ToString();
    const std::vector<float> want = f.Tensor("prompt0.prefill_logits");
    ASSERT_EQ(out[0].logits.size(), want.size());
    EXPECT_LE(MaxAbsDiff(out[0].logits.data(), want.data(), want.size()), kF32Tol) << "T=" << tp;
  }
}

// The whole model handed to a TP rank is refused (its weights must be the rank's share).
TEST(TpEngine, WholeWeightsAreRefused) {
  comm::Group& world = World();
  const std::string dir = FixturesDir() + "/qwen3-moe-f32";
  auto layout = comm::SplitTensorParallel(world, 2, "localhost", TestDeadline());
  ASSERT_TRUE(layout.ok());
  auto config = LoadModelConfig(dir);
  auto weights = LoadModelWeights(*config, dir);
  ASSERT_TRUE(weights.ok());
  EngineConfig cfg;
  cfg.threads = 1;
  auto engine = Engine::Create(*config, std::move(weights).value(), cfg, &world, nullptr, layout->tp_group.get());
  EXPECT_EQ(engine.status().code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TpFixtureTest, ::testing::ValuesIn(ListFixtures()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return s;
                         });

}  // namespace
}  // namespace shoal::testing
