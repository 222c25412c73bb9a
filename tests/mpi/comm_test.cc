// comm::Group (MPI backend) and comm::ExpertExchange at any rank count (ctest runs N = 1..4).
//
// Routing is checked exactly: every payload row encodes its origin rank and token index, every rank
// derives the whole group's routing from shared seeds, and each rank checks that it received exactly
// the rows placement says it serves, grouped by expert in (origin rank, token) order, that combine
// brings every (token, choice) output home, and that the weighted sum adds them up. Values are small integers and powers of two, so the sums are
// exact and compared with ==.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <tuple>

#include "comm/expert_exchange.h"
#include "comm/placement.h"
#include "comm/tensor_parallel.h"
#include "tests/mpi/mpi_test_main.h"

namespace shoal::testing {
namespace {

TEST(MpiGroup, AllReduceAndBarrier) {
  comm::Group& g = World();
  std::vector<int64_t> v = {g.rank(), 1, -g.rank()};
  ASSERT_TRUE(g.AllReduceSum(v, TestDeadline()).ok());
  const int64_t n = g.size();
  EXPECT_EQ(v, (std::vector<int64_t>{n * (n - 1) / 2, n, -n * (n - 1) / 2}));
  std::vector<int64_t> m = {g.rank(), -g.rank()};
  ASSERT_TRUE(g.AllReduceMax(m, TestDeadline()).ok());
  EXPECT_EQ(m, (std::vector<int64_t>{n - 1, 0}));
  EXPECT_TRUE(g.Barrier(TestDeadline()).ok());
  std::vector<int64_t> empty;
  EXPECT_TRUE(g.AllReduceSum(empty, TestDeadline()).ok());
}

// Rank r sends (r + p) % 3 int32 values to peer p (zero for some pairs), each encoding (r, p, i).
TEST(MpiGroup, AllToAllVWithUnevenAndEmptySizes) {
  comm::Group& g = World();
  const int R = g.size(), me = g.rank();
  auto count = [](int from, int to) { return (from + to) % 3; };
  std::vector<int64_t> send_bytes(R), recv_bytes(R);
  std::vector<int32_t> send, recv;
  for (int p = 0; p < R; ++p) {
    for (int i = 0; i < count(me, p); ++i) send.push_back(me * 10000 + p * 100 + i);
    send_bytes[p] = count(me, p) * 4;
    recv_bytes[p] = count(p, me) * 4;
  }
  recv.resize(std::accumulate(recv_bytes.begin(), recv_bytes.end(), int64_t{0}) / 4);
  ASSERT_TRUE(g.AllToAllV(send.data(), send_bytes, recv.data(), recv_bytes, TestDeadline()).ok());
  size_t k = 0;
  for (int p = 0; p < R; ++p) {
    for (int i = 0; i < count(p, me); ++i) EXPECT_EQ(recv[k++], p * 10000 + me * 100 + i) << "from rank " << p;
  }
  // Mismatched self sizes are rejected before anything is sent (on every rank alike).
  recv_bytes[me] += 4;
  EXPECT_EQ(g.AllToAllV(send.data(), send_bytes, recv.data(), recv_bytes, TestDeadline()).code(),
            StatusCode::kInvalidArgument);
}

// Sends of 128 KiB or more to a peer are paced pairwise (MpiGroup::Exchange); a mix of paced peers,
// unpaced ones and an empty one must still pair every block with its receive.
TEST(MpiGroup, AllToAllVWithPacedLargeSends) {
  comm::Group& g = World();
  const int R = g.size(), me = g.rank();
  auto words = [](int from, int to) -> int64_t {
    const int k = (from + 2 * to) % 3;
    return k == 0 ? 0 : k == 1 ? 1000 : 80000;  // 0, 4 KB, 320 KB
  };
  std::vector<int64_t> send_bytes(R), recv_bytes(R);
  std::vector<int32_t> send, recv;
  for (int p = 0; p < R; ++p) {
    for (int64_t i = 0; i < words(me, p); ++i) send.push_back(static_cast<int32_t>(me * 1000003 + p * 100003 + i));
    send_bytes[p] = words(me, p) * 4;
    recv_bytes[p] = words(p, me) * 4;
  }
  recv.resize(static_cast<size_t>(std::accumulate(recv_bytes.begin(), recv_bytes.end(), int64_t{0}) / 4));
  for (int round = 0; round < 3; ++round) {
    std::fill(recv.begin(), recv.end(), -1);
    ASSERT_TRUE(g.AllToAllV(send.data(), send_bytes, recv.data(), recv_bytes, TestDeadline()).ok());
    size_t k = 0;
    for (int p = 0; p < R; ++p) {
      for (int64_t i = 0; i < words(p, me); ++i, ++k) {
        ASSERT_EQ(recv[k], static_cast<int32_t>(p * 1000003 + me * 100003 + i)) << "from rank " << p << " word " << i;
      }
    }
  }
}

// A receive of unknown size: capacity given, the size that arrived reported (self included).
TEST(MpiGroup, SendRecvReportsTheSizeOfCapacityReceives) {
  comm::Group& g = World();
  const int R = g.size(), me = g.rank();
  std::vector<std::vector<int32_t>> out(R), in(R, std::vector<int32_t>(16, -1));
  std::vector<int64_t> got(R, -1);
  std::vector<comm::Group::SendBlock> sends;
  std::vector<comm::Group::RecvBlock> recvs;
  for (int p = 0; p < R; ++p) {
    for (int i = 0; i <= (me + 2 * p) % 5; ++i) out[p].push_back(me * 100 + i);  // 1..5 values
    sends.push_back({p, out[p].data(), static_cast<int64_t>(out[p].size() * 4)});
    recvs.push_back({p, in[p].data(), 64, &got[p]});
  }
  Status st = g.SendRecv(sends, recvs, TestDeadline());
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (int p = 0; p < R; ++p) {
    const int n = (p + 2 * me) % 5 + 1;
    EXPECT_EQ(got[p], n * 4) << "from rank " << p;
    for (int i = 0; i < n; ++i) EXPECT_EQ(in[p][i], p * 100 + i);
    EXPECT_EQ(in[p][n], -1) << "wrote past the message";
  }
}

TEST(MpiGroup, SplitMakesSubGroups) {
  comm::Group& g = World();
  auto sub = g.Split(g.rank() % 2, g.rank(), TestDeadline());
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  EXPECT_EQ((*sub)->size(), (g.size() + 1 - g.rank() % 2) / 2);
  EXPECT_EQ((*sub)->rank(), g.rank() / 2);
  std::vector<int64_t> v = {g.rank()};
  ASSERT_TRUE((*sub)->AllReduceSum(v, TestDeadline()).ok());
  int64_t want = 0;
  for (int r = g.rank() % 2; r < g.size(); r += 2) want += r;
  EXPECT_EQ(v[0], want);
}

// --- Activation collectives and tensor-parallel replicas ---------------------------------------------

// Rank r's i-th value: not exactly representable sums in general, so the order of additions shows.
float Value(int r, size_t i) { return 0.1f * static_cast<float>(r + 1) + 1e-3f * static_cast<float>(i) - 0.37f * (r % 2); }

// The sum in rank order, as every rank must get it (bit for bit).
float RankOrderSum(int ranks, size_t i) {
  float s = Value(0, i);
  for (int r = 1; r < ranks; ++r) s += Value(r, i);
  return s;
}

TEST(MpiGroup, ActivationCollectivesSumInRankOrder) {
  comm::Group& g = World();
  const int R = g.size();
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{4096 + 3}}) {
    SCOPED_TRACE(n);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = Value(g.rank(), i);
    ASSERT_TRUE(g.AllReduceSumF32(v, TestDeadline()).ok());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], RankOrderSum(R, i)) << "element " << i;

    // Reduce-scatter: rank r gets the sums of chunk r.
    std::vector<float> in(n * R), out(n);
    for (int c = 0; c < R; ++c) {
      for (size_t i = 0; i < n; ++i) in[c * n + i] = Value(g.rank(), c * n + i);
    }
    ASSERT_TRUE(g.ReduceScatterSumF32(in, out, TestDeadline()).ok());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], RankOrderSum(R, g.rank() * n + i));

    // All-gather: every rank's bytes in rank order.
    std::vector<float> mine(n, static_cast<float>(g.rank())), all(n * R, -1.0f);
    ASSERT_TRUE(g.AllGather(std::as_bytes(std::span<const float>(mine)), std::as_writable_bytes(std::span<float>(all)),
                            TestDeadline())
                    .ok());
    for (int r = 0; r < R; ++r) {
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(all[r * n + i], static_cast<float>(r));
    }
  }
  // Sizes that do not fit together are refused before anything moves (so no peer is left waiting
  // when every rank makes the same mistake).
  std::vector<float> in(3), out(2);
  EXPECT_EQ(g.ReduceScatterSumF32(in, out, TestDeadline()).code(), StatusCode::kInvalidArgument);
}

// The world as replicas of T tensor-parallel ranks, for every T that divides it: each replica's
// collectives see its own ranks only.
TEST(MpiGroup, TensorParallelReplicas) {
  comm::Group& g = World();
  for (int tp = 1; tp <= g.size(); ++tp) {
    if (g.size() % tp != 0) continue;
    SCOPED_TRACE(tp);
    // Two pretend hosts of interleaved ranks (even / odd) when they split evenly, so replicas group by host.
    const bool two_hosts = g.size() % 2 == 0 && (g.size() / 2) % tp == 0;
    const std::string host = two_hosts ? (g.rank() % 2 == 0 ? "even" : "odd") : "one";
    auto layout = comm::SplitTensorParallel(g, tp, host, TestDeadline());
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    EXPECT_EQ(layout->replicas, g.size() / tp);
    EXPECT_EQ(layout->tp_group->size(), tp);
    EXPECT_FALSE(layout->cross_node);
    // Every member of the replica reports its host and world rank; all must share this host.
    std::vector<float> ranks = {static_cast<float>(g.rank())};
    std::vector<float> members(static_cast<size_t>(tp));
    ASSERT_TRUE(layout->tp_group
                    ->AllGather(std::as_bytes(std::span<const float>(ranks)), std::as_writable_bytes(std::span<float>(members)),
                                TestDeadline())
                    .ok());
    for (float m : members) {
      const int r = static_cast<int>(m);
      if (two_hosts) {
        EXPECT_EQ(r % 2, g.rank() % 2) << "replica member " << r << " is on another host";
      }
    }
    std::vector<float> one = {1.0f};
    ASSERT_TRUE(layout->tp_group->AllReduceSumF32(one, TestDeadline()).ok());
    EXPECT_EQ(one[0], static_cast<float>(tp));
  }
  auto bad = comm::SplitTensorParallel(g, g.size() + 1, "h", TestDeadline());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// --- ExpertExchange -------------------------------------------------------------------------------

struct Routing {
  int64_t tokens = 0;
  std::vector<int32_t> ids;    // [T, K]
  std::vector<float> weights;  // [T, K]
};

enum class Pattern { kRandom, kAllToOneExpert };

// The routing of origin rank `o`, reproducible on every rank.
Routing MakeRouting(int o, int R, int E, int K, int64_t tokens_per_rank, Pattern pattern, uint64_t seed) {
  std::mt19937_64 rng(seed * 1000 + o);
  Routing r;
  // Some ranks get no tokens, and counts differ between ranks.
  r.tokens = (o % 3 == 2) ? 0 : tokens_per_rank + o;
  const float kWeights[] = {1.0f, 0.5f, 0.25f, 0.125f};
  std::vector<int32_t> experts(E);
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t t = 0; t < r.tokens; ++t) {
    std::shuffle(experts.begin(), experts.end(), rng);
    if (pattern == Pattern::kAllToOneExpert) {
      // Expert E-1 first for every token: one expert (and its rank) gets every token.
      std::iter_swap(experts.begin(), std::find(experts.begin(), experts.end(), E - 1));
    }
    for (int j = 0; j < K; ++j) {
      r.ids.push_back(experts[j]);
      r.weights.push_back(kWeights[rng() % 4]);
    }
  }
  (void)R;
  return r;
}

float Payload(int origin, int64_t token, int64_t i) { return static_cast<float>(origin * 4096 + token * 8 + i % 8); }

// One dispatch/combine round on `ex`, checked element by element.
void CheckRound(comm::ExpertExchange* ex, const Placement* placement, int E, int K, int64_t H, int64_t tokens_per_rank,
                Pattern pattern, uint64_t seed) {
  comm::Group& g = World();
  const int R = g.size(), me = g.rank();

  std::vector<Routing> all;
  for (int o = 0; o < R; ++o) all.push_back(MakeRouting(o, R, E, K, tokens_per_rank, pattern, seed));
  const Routing& mine = all[me];
  std::vector<float> x(static_cast<size_t>(mine.tokens * H));
  for (int64_t t = 0; t < mine.tokens; ++t) {
    for (int64_t i = 0; i < H; ++i) x[t * H + i] = Payload(me, t, i);
  }
  ASSERT_TRUE(ex->Dispatch(x.data(), mine.tokens, mine.ids.data(), mine.weights.data(), TestDeadline()).ok());

  // Expected rows per local expert: (origin, token) in origin-rank then token order.
  const std::vector<int>& local = placement->local_experts(me);
  ASSERT_EQ(ex->local_experts(), local);
  for (size_t li = 0; li < local.size(); ++li) {
    std::vector<std::pair<int, int64_t>> want;
    for (int o = 0; o < R; ++o) {
      for (int64_t t = 0; t < all[o].tokens; ++t) {
        for (int j = 0; j < K; ++j) {
          if (all[o].ids[t * K + j] == local[li] && placement->RankFor(local[li], t + o) == me) want.push_back({o, t});
        }
      }
    }
    const int64_t b = ex->expert_offsets()[li], n = ex->expert_offsets()[li + 1] - b;
    ASSERT_EQ(n, static_cast<int64_t>(want.size())) << "rows for expert " << local[li];
    for (int64_t r = 0; r < n; ++r) {
      const float* row = ex->expert_rows() + (b + r) * H;
      for (int64_t i = 0; i < H; ++i) {
        ASSERT_EQ(row[i], Payload(want[r].first, want[r].second, i))
            << "expert " << local[li] << " row " << r << " element " << i;
      }
    }
  }
  // Expert e's output: (e + 1) × its input.
  for (size_t li = 0; li < local.size(); ++li) {
    for (int64_t r = ex->expert_offsets()[li]; r < ex->expert_offsets()[li + 1]; ++r) {
      for (int64_t i = 0; i < H; ++i) ex->expert_out()[r * H + i] = (local[li] + 1) * ex->expert_rows()[r * H + i];
    }
  }
  ASSERT_TRUE(ex->Combine(TestDeadline()).ok());
  for (int64_t t = 0; t < mine.tokens; ++t) {
    for (int j = 0; j < K; ++j) {
      const float* row = ex->combined_row(t, j);
      for (int64_t i = 0; i < H; ++i) {
        ASSERT_EQ(row[i], (mine.ids[t * K + j] + 1) * Payload(me, t, i)) << "token " << t << " choice " << j;
      }
    }
  }
  std::vector<float> out(static_cast<size_t>(mine.tokens * H), -1.0f);
  ex->WeightedSum(out.data());
  for (int64_t t = 0; t < mine.tokens; ++t) {
    for (int64_t i = 0; i < H; ++i) {
      float want = 0.0f;
      for (int j = 0; j < K; ++j) want += mine.weights[t * K + j] * (mine.ids[t * K + j] + 1) * Payload(me, t, i);
      ASSERT_EQ(out[t * H + i], want) << "token " << t << " element " << i;
    }
  }
}

// Rounds on one exchange, by messages and through shared memory (the later rounds of one object reuse
// and grow its buffers).
void CheckExchange(int E, int K, int64_t H, int64_t tokens_per_rank, Pattern pattern, uint64_t seed) {
  comm::Group& g = World();
  auto placement = Placement::Balanced(E, g.size());
  ASSERT_TRUE(placement.ok());
  for (bool shared : {false, true}) {
    SCOPED_TRACE(std::string(shared ? "shared memory" : "messages") + " E=" + std::to_string(E) + " K=" +
                 std::to_string(K) + " H=" + std::to_string(H) + " T=" + std::to_string(tokens_per_rank) +
                 " seed=" + std::to_string(seed));
    // Room for every row of the first two rounds on one rank; the third (5T tokens) goes by messages
    // where some rank then receives more (all-to-one routing), checked the same way.
    const int64_t room = shared ? 2 * tokens_per_rank * K * g.size() : 0;
    auto ex = comm::ExpertExchange::Create(&g, &*placement, H, K, {.shared_memory = shared, .shared_rows = room});
    ASSERT_TRUE(ex.ok()) << ex.status().ToString();
    for (int round = 0; round < 3; ++round) {
      CheckRound(&*ex, &*placement, E, K, H, tokens_per_rank * (round == 2 ? 5 : round + 1), pattern, seed + round);
      if (::testing::Test::HasFatalFailure()) return;
      if (round == 0) {
        EXPECT_EQ(ex->used_shared_memory(), shared && g.size() > 1 && tokens_per_rank > 0);
      }
    }
  }
}

TEST(ExpertExchange, RandomTopKAtManyShapes) {
  // Expert counts below, equal to and above the rank count (replicas when below), dividing it or not.
  for (int E : {1, 2, 3, 5, 8, 16}) {
    for (int K : {1, 2, 4}) {
      if (K > E) continue;
      for (int64_t T : {0, 1, 7, 33}) CheckExchange(E, K, /*H=*/5, T, Pattern::kRandom, E * 100 + K * 10 + T);
    }
  }
}

TEST(ExpertExchange, AllTokensToOneExpert) {
  for (int E : {3, 8}) CheckExchange(E, 2, 16, 40, Pattern::kAllToOneExpert, 7);
}

TEST(ExpertExchange, WideRows) { CheckExchange(8, 2, 2048, 9, Pattern::kRandom, 3); }

// Blocks of ≥ 64 KiB travel as their own messages straight into place; smaller ones are coalesced per
// peer. 16 KiB rows and ~5 rows per (origin, expert) give a mix of both in one exchange.
TEST(ExpertExchange, LargeAndSmallBlocksMixed) {
  for (uint64_t seed : {1, 2}) CheckExchange(8, 2, 4096, 20, Pattern::kRandom, seed);
  CheckExchange(4, 2, 2048, 40, Pattern::kAllToOneExpert, 5);
}

// A window too small for a step: every rank sees the same counts and sends that step by messages.
TEST(ExpertExchange, AStepTheSharedWindowCannotHoldGoesByMessages) {
  comm::Group& g = World();
  if (g.size() == 1) GTEST_SKIP() << "one rank exchanges nothing";
  auto placement = Placement::Balanced(4, g.size());
  // Rows of 8 KiB, room for 3 (a segment may be rounded up to a page: still far from 40 rows).
  auto ex = comm::ExpertExchange::Create(&g, &*placement, 2048, 2, {.shared_memory = true, .shared_rows = 3});
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  CheckRound(&*ex, &*placement, 4, 2, 2048, 1, Pattern::kRandom, 11);  // ≤ 2·R rows on a rank: may not fit
  CheckRound(&*ex, &*placement, 4, 2, 2048, 20, Pattern::kAllToOneExpert, 12);
  EXPECT_FALSE(ex->used_shared_memory());
  CheckRound(&*ex, &*placement, 4, 2, 2048, 0, Pattern::kRandom, 13);
  EXPECT_TRUE(ex->used_shared_memory());  // nothing to move fits
}

TEST(ExpertExchange, EveryRankEmpty) {
  comm::Group& g = World();
  auto placement = Placement::Balanced(4, g.size());
  auto ex = comm::ExpertExchange::Create(&g, &*placement, 8, 2);
  ASSERT_TRUE(ex.ok());
  ASSERT_TRUE(ex->Dispatch(nullptr, 0, nullptr, nullptr, TestDeadline()).ok());
  EXPECT_EQ(ex->num_expert_rows(), 0);
  ASSERT_TRUE(ex->Combine(TestDeadline()).ok());
  ex->WeightedSum(nullptr);
}

// An expert id out of range on rank 0: every rank completes both phases; rank 0's Combine reports it.
TEST(ExpertExchange, BadExpertIdIsReportedWithoutStallingPeers) {
  comm::Group& g = World();
  auto placement = Placement::Balanced(4, g.size());
  auto ex = comm::ExpertExchange::Create(&g, &*placement, 4, 1);
  ASSERT_TRUE(ex.ok());
  std::vector<int32_t> ids = {g.rank() == 0 ? 9 : 1};
  std::vector<float> w = {1.0f}, x(4, 1.0f), out(4, 0.0f);
  ASSERT_TRUE(ex->Dispatch(x.data(), 1, ids.data(), w.data(), TestDeadline()).ok());
  // Identity experts: outputs are written over the rows in place, so nothing to do.
  Status st = ex->Combine(TestDeadline());
  if (g.rank() == 0) {
    EXPECT_EQ(st.code(), StatusCode::kInternal) << st.ToString();
    EXPECT_NE(st.message().find("expert 9"), std::string::npos) << st.ToString();
  } else {
    ASSERT_TRUE(st.ok()) << st.ToString();
    ex->WeightedSum(out.data());
    EXPECT_EQ(out, x);
  }
}

TEST(ExpertExchange, CountersCountOnlyOtherRanks) {
  comm::Group& g = World();
  const int R = g.size();
  auto placement = Placement::Balanced(R, R);  // expert r on rank r
  auto ex = comm::ExpertExchange::Create(&g, &*placement, 4, 1);
  ASSERT_TRUE(ex.ok());
  // One token per expert, so each rank sends one row to every other rank.
  std::vector<int32_t> ids(R);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> w(R, 1.0f), x(static_cast<size_t>(R) * 4, 1.0f), out(x.size());
  ASSERT_TRUE(ex->Dispatch(x.data(), R, ids.data(), w.data(), TestDeadline()).ok());
  std::fill(ex->expert_out(), ex->expert_out() + ex->num_expert_rows() * 4, 2.0f);
  ASSERT_TRUE(ex->Combine(TestDeadline()).ok());
  ex->WeightedSum(out.data());
  EXPECT_EQ(ex->counters().rows_sent, R - 1);
  EXPECT_EQ(ex->counters().rows_received, R - 1);
  EXPECT_EQ(out, std::vector<float>(x.size(), 2.0f));
}

}  // namespace
}  // namespace shoal::testing
