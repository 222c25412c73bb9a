// Host-side planning of the GPU expert exchange (comm/nccl/exchange_plan.h), on CPU: placement checks,
// counts and offsets, and the SendRecv block lists of every rank of a simulated group — paired across
// ranks the way NCCL pairs them and then actually moved with memcpy, so a whole dispatch → expert →
// combine round trip is checked row by row without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "comm/nccl/exchange_plan.h"
#include "comm/placement.h"

namespace shoal::comm {
namespace {

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// --- placements ---

TEST(ExchangePlacement, BalancedWithoutReplicasIsAccepted) {
  auto p82 = Placement::Balanced(8, 2);
  ASSERT_TRUE(p82.ok());
  auto r82 = ContiguousExpertRanges(*p82);
  ASSERT_TRUE(r82.ok()) << r82.status().ToString();
  EXPECT_EQ(*r82, (std::vector<int>{0, 4, 8}));
  EXPECT_TRUE(CheckContiguousPlacement(*p82).ok());

  auto p103 = Placement::Balanced(10, 3);
  ASSERT_TRUE(p103.ok());
  auto r103 = ContiguousExpertRanges(*p103);
  ASSERT_TRUE(r103.ok()) << r103.status().ToString();
  EXPECT_EQ(*r103, (std::vector<int>{0, 3, 6, 10}));

  for (int experts : {1, 7, 60, 128}) {
    for (int ranks = 1; ranks <= experts && ranks <= 16; ++ranks) {
      auto p = Placement::Balanced(experts, ranks);
      ASSERT_TRUE(p.ok());
      EXPECT_TRUE(CheckContiguousPlacement(*p).ok()) << experts << " experts on " << ranks << " ranks";
    }
  }
}

TEST(ExchangePlacement, ReplicasAreUnimplemented) {
  for (auto [experts, ranks] : {std::pair{2, 4}, std::pair{4, 6}, std::pair{1, 2}}) {
    auto p = Placement::Balanced(experts, ranks);
    ASSERT_TRUE(p.ok());
    const Status st = CheckContiguousPlacement(*p);
    EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "replicas")) << st.message();
  }
  // The same expert on two ranks, in an otherwise contiguous layout.
  const std::vector<std::vector<int>> dup = {{0, 1}, {1, 2, 3}};
  const auto r = ContiguousExpertRanges(4, dup);
  EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Contains(r.status().message(), "expert 1")) << r.status().message();
}

TEST(ExchangePlacement, NonContiguousRangesAreUnimplemented) {
  const std::vector<std::vector<std::vector<int>>> layouts = {
      {{0, 2}, {1, 3}},  // interleaved
      {{2, 3}, {0, 1}},  // contiguous, but the ranges in decreasing rank order
      {{1, 0}, {2, 3}},  // a rank's own list out of order
  };
  for (const auto& local : layouts) {
    const auto r = ContiguousExpertRanges(4, local);
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), "contiguous")) << r.status().message();
  }
}

TEST(ExchangePlacement, InvalidLayoutsAndEmptyRanks) {
  const std::vector<std::vector<int>> missing = {{0}, {2}};
  EXPECT_EQ(ContiguousExpertRanges(3, missing).status().code(), StatusCode::kInvalidArgument);
  const std::vector<std::vector<int>> outside = {{0}, {1, 5}};
  EXPECT_EQ(ContiguousExpertRanges(2, outside).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ContiguousExpertRanges(0, std::vector<std::vector<int>>{}).status().code(), StatusCode::kInvalidArgument);
  // A rank without experts breaks nothing: its range is empty.
  const std::vector<std::vector<int>> empty_rank = {{0, 1}, {}, {2}};
  const auto r = ContiguousExpertRanges(3, empty_rank);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, (std::vector<int>{0, 2, 2, 3}));
}

// --- counts and offsets ---

TEST(ExchangeCounts, SendCountsFollowTheOffsets) {
  const std::vector<int> first = {0, 3, 6, 10};
  // Expert e gets e % 3 rows: 0 1 2 0 1 2 0 1 2 0 → 9 rows.
  std::vector<int64_t> offsets = {0};
  for (int e = 0; e < 10; ++e) offsets.push_back(offsets.back() + e % 3);
  std::vector<int64_t> per_expert(10, -1), per_dest;
  ASSERT_TRUE(SendCountsFromOffsets(offsets, first, 9, per_expert, &per_dest).ok());
  EXPECT_EQ(per_expert, (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0}));
  EXPECT_EQ(per_dest, (std::vector<int64_t>{3, 3, 3}));

  // A row dropped by a bad id: the total comes up short.
  const Status short_total = SendCountsFromOffsets(offsets, first, 10, per_expert, &per_dest);
  EXPECT_EQ(short_total.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(short_total.message(), "expected 0 to 10")) << short_total.message();
  std::vector<int64_t> decreasing = offsets;
  decreasing[4] = decreasing[3] - 1;
  EXPECT_FALSE(SendCountsFromOffsets(decreasing, first, 9, per_expert, &per_dest).ok());
  std::vector<int64_t> late_start = offsets;
  late_start[0] = 1;
  EXPECT_FALSE(SendCountsFromOffsets(late_start, first, 9, per_expert, &per_dest).ok());
  std::vector<int64_t> too_few(9);
  EXPECT_EQ(SendCountsFromOffsets(offsets, first, 9, too_few, &per_dest).code(), StatusCode::kInvalidArgument);

  // T = 0: every count zero.
  std::vector<int64_t> zeros(11, 0);
  ASSERT_TRUE(SendCountsFromOffsets(zeros, first, 0, per_expert, &per_dest).ok());
  EXPECT_EQ(per_expert, std::vector<int64_t>(10, 0));
  EXPECT_EQ(per_dest, std::vector<int64_t>(3, 0));
}

TEST(ExchangeCounts, BlockOffsetsArePrefixSums) {
  std::vector<int64_t> offsets;
  ASSERT_TRUE(BuildBlockOffsets(std::vector<int64_t>{2, 0, 3, 0}, &offsets).ok());
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 2, 2, 5, 5}));
  ASSERT_TRUE(BuildBlockOffsets(std::vector<int64_t>{}, &offsets).ok());
  EXPECT_EQ(offsets, (std::vector<int64_t>{0}));
  EXPECT_EQ(BuildBlockOffsets(std::vector<int64_t>{1, -1}, &offsets).code(), StatusCode::kInvalidArgument);
}

// --- a simulated group ---

constexpr int kK = 2;   // top_k
constexpr int kH = 3;   // hidden
using Row16 = uint16_t;  // the dispatch rows' element: 2 bytes, as bf16

// MoePermutePlan's contract on the host: pairs (t, j) ordered by expert, stably (so by token).
struct Permutation {
  std::vector<int64_t> offsets;  // [E + 1]
  std::vector<int32_t> row_of;   // [T·K]
  std::vector<int32_t> row_token;
};

Permutation PermutePlan(const std::vector<int32_t>& ids, int num_experts) {
  Permutation p;
  std::vector<int32_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  p.row_of.resize(ids.size());
  p.row_token.resize(ids.size());
  for (size_t r = 0; r < order.size(); ++r) {
    p.row_of[order[r]] = static_cast<int32_t>(r);
    p.row_token[r] = order[r] / kK;
  }
  p.offsets.assign(static_cast<size_t>(num_experts) + 1, 0);
  for (int32_t e : ids) ++p.offsets[e + 1];
  for (int e = 0; e < num_experts; ++e) p.offsets[e + 1] += p.offsets[e];
  return p;
}

// One SendRecv over all ranks' plans, as NCCL would run it: the i-th block rank a sends b lands in the
// i-th block b receives from a, so both lists must agree in count and bytes, pair by pair; then the
// bytes are copied, self copies included. Also checks what NcclGroup's PlanSendRecv would reject.
void Deliver(const std::vector<TransferPlan>& plans) {
  const int R = static_cast<int>(plans.size());
  for (int a = 0; a < R; ++a) {
    int64_t sent = 0, received = 0;
    for (const auto& s : plans[a].sends) {
      EXPECT_NE(s.peer, a) << "rank " << a << " lists a send to itself";
      EXPECT_GT(s.bytes, 0) << "rank " << a << " lists an empty send";
      EXPECT_NE(s.data, nullptr);
      sent += s.bytes;
    }
    for (const auto& r : plans[a].recvs) {
      EXPECT_NE(r.peer, a) << "rank " << a << " lists a receive from itself";
      EXPECT_GT(r.bytes, 0) << "rank " << a << " lists an empty receive";
      EXPECT_NE(r.data, nullptr);
      EXPECT_EQ(r.received, nullptr) << "NCCL cannot serve capacity receives";
      received += r.bytes;
    }
    EXPECT_EQ(sent, plans[a].bytes_to_peers);
    EXPECT_EQ(received, plans[a].bytes_from_peers);
  }
  for (int a = 0; a < R; ++a) {
    for (int b = 0; b < R; ++b) {
      if (a == b) continue;
      std::vector<Group::SendBlock> out;
      std::vector<Group::RecvBlock> in;
      for (const auto& s : plans[a].sends) if (s.peer == b) out.push_back(s);
      for (const auto& r : plans[b].recvs) if (r.peer == a) in.push_back(r);
      ASSERT_EQ(out.size(), in.size()) << "rank " << a << " sends rank " << b << " " << out.size()
                                       << " blocks, which expects " << in.size();
      EXPECT_LE(out.size(), 1u) << "one block per pair and direction";
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_EQ(out[i].bytes, in[i].bytes) << "block " << i << " from rank " << a << " to rank " << b;
        std::memcpy(in[i].data, out[i].data, static_cast<size_t>(out[i].bytes));
      }
    }
    EXPECT_LE(plans[a].self_copies.size(), 1u);
    for (const auto& c : plans[a].self_copies) {
      EXPECT_GT(c.bytes, 0);
      std::memcpy(c.dst, c.src, static_cast<size_t>(c.bytes));
    }
  }
}

// Everything one rank holds during a step, host vectors standing in for its device buffers.
struct SimRank {
  int64_t T = 0;
  std::vector<int32_t> ids;  // [T·K]
  std::vector<Row16> x;      // [T, H]
  Permutation perm;
  std::vector<Row16> send_rows;
  std::vector<int64_t> send_counts, per_dest, recv_counts, block_offsets;
  std::vector<Row16> recv_rows;
  std::vector<float> expert_out, combined;
  TransferPlan counts_plan, dispatch_plan, combine_plan;
};

// Token t of rank o carries o·1000 + t·10 + h in column h: every received row names its source.
Row16 Value(int origin, int64_t t, int h) { return static_cast<Row16>(origin * 1000 + t * 10 + h); }
// The "expert": the row plus a quarter of the expert id (exact in f32).
float ExpertOf(float v, int expert) { return v + 0.25f * static_cast<float>(expert); }

// Runs dispatch, the experts and combine over `ids_per_rank` and checks every step's layout.
// (void, with an out parameter, so that ASSERTs can stop it; callers check HasFatalFailure.)
void RunGroup(const std::vector<int>& first, const std::vector<std::vector<int32_t>>& ids_per_rank,
              std::vector<SimRank>* out) {
  const int R = static_cast<int>(first.size()) - 1, E = first[R];
  std::vector<SimRank>& ranks = *out;
  ranks.assign(R, SimRank{});
  for (int r = 0; r < R; ++r) {
    SimRank& s = ranks[r];
    s.ids = ids_per_rank[r];
    s.T = static_cast<int64_t>(s.ids.size()) / kK;
    for (int64_t t = 0; t < s.T; ++t) {
      for (int h = 0; h < kH; ++h) s.x.push_back(Value(r, t, h));
    }
    s.perm = PermutePlan(s.ids, E);
    for (int32_t tok : s.perm.row_token) s.send_rows.insert(s.send_rows.end(), &s.x[tok * kH], &s.x[tok * kH] + kH);
    s.send_counts.assign(E, -1);
    EXPECT_TRUE(SendCountsFromOffsets(s.perm.offsets, first, s.T * kK, s.send_counts, &s.per_dest).ok());
    s.recv_counts.assign(static_cast<size_t>(R) * (first[r + 1] - first[r]), -1);
    EXPECT_TRUE(PlanCountsExchange(r, first, s.send_counts.data(), s.recv_counts.data(), &s.counts_plan).ok());
  }
  std::vector<TransferPlan> plans;
  for (auto& s : ranks) plans.push_back(s.counts_plan);
  Deliver(plans);
  if (::testing::Test::HasFatalFailure()) return;

  plans.clear();
  for (int r = 0; r < R; ++r) {
    SimRank& s = ranks[r];
    const int L = first[r + 1] - first[r];
    // recv_counts[o·L + i] is what origin o counted for expert first[r] + i.
    for (int o = 0; o < R; ++o) {
      for (int i = 0; i < L; ++i) {
        EXPECT_EQ(s.recv_counts[o * L + i], ranks[o].send_counts[first[r] + i]) << "rank " << r << " origin " << o;
      }
    }
    EXPECT_TRUE(BuildBlockOffsets(s.recv_counts, &s.block_offsets).ok());
    s.recv_rows.assign(static_cast<size_t>(s.block_offsets.back()) * kH, 0xffff);
    EXPECT_TRUE(PlanDispatch(r, first, s.perm.offsets, s.block_offsets, s.send_rows.data(), s.recv_rows.data(),
                             kH * sizeof(Row16), &s.dispatch_plan)
                    .ok());
    plans.push_back(s.dispatch_plan);
  }
  Deliver(plans);
  if (::testing::Test::HasFatalFailure()) return;

  plans.clear();
  for (int r = 0; r < R; ++r) {
    SimRank& s = ranks[r];
    const int L = first[r + 1] - first[r];
    s.expert_out.resize(s.recv_rows.size());
    for (int b = 0; b < R * L; ++b) {
      const int origin = b / L, expert = first[r] + b % L;
      // The block holds, in token order, the rows of origin's tokens that chose this expert.
      std::vector<int64_t> tokens;
      for (int64_t t = 0; t < ranks[origin].T; ++t) {
        for (int j = 0; j < kK; ++j) {
          if (ranks[origin].ids[t * kK + j] == expert) tokens.push_back(t);
        }
      }
      ASSERT_EQ(s.block_offsets[b + 1] - s.block_offsets[b], static_cast<int64_t>(tokens.size()))
          << "rank " << r << " block " << b;
      for (size_t k = 0; k < tokens.size(); ++k) {
        const int64_t row = s.block_offsets[b] + static_cast<int64_t>(k);
        for (int h = 0; h < kH; ++h) {
          ASSERT_EQ(s.recv_rows[row * kH + h], Value(origin, tokens[k], h))
              << "rank " << r << " block " << b << " row " << k << " column " << h;
          s.expert_out[row * kH + h] = ExpertOf(s.recv_rows[row * kH + h], expert);
        }
      }
    }
    s.combined.assign(s.send_rows.size(), -1.0f);
    EXPECT_TRUE(PlanCombine(r, first, s.perm.offsets, s.block_offsets, s.expert_out.data(), s.combined.data(),
                            kH * sizeof(float), &s.combine_plan)
                    .ok());
    plans.push_back(s.combine_plan);
  }
  Deliver(plans);
  if (::testing::Test::HasFatalFailure()) return;

  // combined is in the permuted layout: row_of finds each choice's output, as UnpermuteCombine does.
  for (int r = 0; r < R; ++r) {
    const SimRank& s = ranks[r];
    for (int64_t t = 0; t < s.T; ++t) {
      for (int j = 0; j < kK; ++j) {
        const int64_t row = s.perm.row_of[t * kK + j];
        for (int h = 0; h < kH; ++h) {
          EXPECT_EQ(s.combined[row * kH + h], ExpertOf(Value(r, t, h), s.ids[t * kK + j]))
              << "rank " << r << " token " << t << " choice " << j;
        }
      }
    }
  }
}

// Balanced(8, 3): rank 0 holds experts 0-1, rank 1 holds 2-4, rank 2 holds 5-7.
std::vector<int> ThreeRanks() {
  auto p = Placement::Balanced(8, 3);
  EXPECT_TRUE(p.ok());
  auto first = ContiguousExpertRanges(*p);
  EXPECT_TRUE(first.ok());
  EXPECT_EQ(*first, (std::vector<int>{0, 2, 5, 8}));
  return *first;
}

TEST(ExchangeGroup, ThreeRanksRoundTrip) {
  const std::vector<int> first = ThreeRanks();
  // Rank 0 never picks rank 1's experts (2-4), so that pair moves nothing; rank 1 has no tokens;
  // rank 2 picks from everyone. Expert 6 gets no rows at all.
  const std::vector<std::vector<int32_t>> ids = {
      {0, 5, 7, 1, 1, 0, 5, 7, 0, 7},  // 5 tokens
      {},                              // T = 0
      {4, 2, 0, 7, 3, 5, 1, 2},        // 4 tokens
  };
  std::vector<SimRank> ranks;
  RunGroup(first, ids, &ranks);
  ASSERT_FALSE(HasFatalFailure());

  // Rows per destination and the blocks that carry them.
  EXPECT_EQ(ranks[0].per_dest, (std::vector<int64_t>{5, 0, 5}));
  EXPECT_EQ(ranks[2].per_dest, (std::vector<int64_t>{2, 4, 2}));
  // Rank 1's blocks: origin 0 (none), origin 1 (none), origin 2: experts 2, 3, 4 → 2, 1, 1 rows.
  EXPECT_EQ(ranks[1].block_offsets, (std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 2, 3, 4}));

  auto peers = [](const auto& blocks) {
    std::vector<int> p;
    for (const auto& b : blocks) p.push_back(b.peer);
    return p;
  };
  // Zero-row pairs are skipped on both sides: 0 → 1 and everything from rank 1.
  EXPECT_EQ(peers(ranks[0].dispatch_plan.sends), (std::vector<int>{2}));
  EXPECT_EQ(peers(ranks[1].dispatch_plan.recvs), (std::vector<int>{2}));
  EXPECT_TRUE(ranks[1].dispatch_plan.sends.empty());
  EXPECT_EQ(peers(ranks[0].dispatch_plan.recvs), (std::vector<int>{2}));
  EXPECT_EQ(peers(ranks[2].dispatch_plan.sends), (std::vector<int>{0, 1}));
  EXPECT_EQ(peers(ranks[2].dispatch_plan.recvs), (std::vector<int>{0}));
  // Combine is the mirror image.
  for (const SimRank& s : ranks) {
    EXPECT_EQ(peers(s.combine_plan.sends), peers(s.dispatch_plan.recvs));
    EXPECT_EQ(peers(s.combine_plan.recvs), peers(s.dispatch_plan.sends));
  }
  // Own rows travel as self copies: rank 0 keeps 5, rank 2 keeps 2, rank 1 has none.
  ASSERT_EQ(ranks[0].dispatch_plan.self_copies.size(), 1u);
  EXPECT_EQ(ranks[0].dispatch_plan.self_copies[0].bytes, 5 * kH * static_cast<int64_t>(sizeof(Row16)));
  EXPECT_TRUE(ranks[1].dispatch_plan.self_copies.empty());
  ASSERT_EQ(ranks[2].combine_plan.self_copies.size(), 1u);
  EXPECT_EQ(ranks[2].combine_plan.self_copies[0].bytes, 2 * kH * static_cast<int64_t>(sizeof(float)));
  // Bytes: rank 2 sends 2 rows to 0 and 4 to 1.
  EXPECT_EQ(ranks[2].dispatch_plan.bytes_to_peers, 6 * kH * static_cast<int64_t>(sizeof(Row16)));
  EXPECT_EQ(ranks[2].combine_plan.bytes_from_peers, 6 * kH * static_cast<int64_t>(sizeof(float)));
}

TEST(ExchangeGroup, EveryRankPairsUpWithEveryOther) {
  // Dense routing over 4 ranks of Balanced(10, 4) (sizes 2, 3, 2, 3), every rank with tokens.
  auto p = Placement::Balanced(10, 4);
  ASSERT_TRUE(p.ok());
  auto first = ContiguousExpertRanges(*p);
  ASSERT_TRUE(first.ok());
  std::vector<std::vector<int32_t>> ids(4);
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < 6 + r; ++t) {
      const int a = (3 * t + r) % 10, b = (a + 1 + (t + r) % 9) % 10;  // distinct
      ids[r].push_back(a);
      ids[r].push_back(b);
    }
  }
  std::vector<SimRank> ranks;
  RunGroup(*first, ids, &ranks);
  ASSERT_FALSE(HasFatalFailure());
  int64_t total = 0;
  for (const SimRank& s : ranks) total += s.block_offsets.back();
  EXPECT_EQ(total, 2 * (6 + 7 + 8 + 9));
}

TEST(ExchangeGroup, NoTokensAnywhereStillExchangesCounts) {
  const std::vector<int> first = ThreeRanks();
  std::vector<SimRank> ranks;
  RunGroup(first, {{}, {}, {}}, &ranks);
  ASSERT_FALSE(HasFatalFailure());
  for (int r = 0; r < 3; ++r) {
    const SimRank& s = ranks[r];
    // The counts messages have fixed sizes, so every rank still meets every peer there...
    ASSERT_EQ(s.counts_plan.sends.size(), 2u) << "rank " << r;
    ASSERT_EQ(s.counts_plan.recvs.size(), 2u) << "rank " << r;
    for (const auto& b : s.counts_plan.sends) {
      EXPECT_EQ(b.bytes, (first[b.peer + 1] - first[b.peer]) * static_cast<int64_t>(sizeof(int64_t)));
    }
    for (const auto& b : s.counts_plan.recvs) {
      EXPECT_EQ(b.bytes, (first[r + 1] - first[r]) * static_cast<int64_t>(sizeof(int64_t)));
    }
    EXPECT_EQ(s.counts_plan.self_copies.size(), 1u);
    // ... while the row transfers are empty calls (SendRecv with empty lists).
    EXPECT_TRUE(s.dispatch_plan.sends.empty() && s.dispatch_plan.recvs.empty());
    EXPECT_TRUE(s.dispatch_plan.self_copies.empty());
    EXPECT_TRUE(s.combine_plan.sends.empty() && s.combine_plan.recvs.empty());
    EXPECT_TRUE(s.combine_plan.self_copies.empty());
    EXPECT_EQ(s.block_offsets, std::vector<int64_t>(static_cast<size_t>(3) * (first[r + 1] - first[r]) + 1, 0));
  }
}

TEST(ExchangeGroup, OneRankCopiesOnly) {
  const std::vector<int> first = {0, 4};
  std::vector<SimRank> ranks;
  RunGroup(first, {{0, 3, 2, 1, 3, 0}}, &ranks);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_TRUE(ranks[0].dispatch_plan.sends.empty() && ranks[0].dispatch_plan.recvs.empty());
  EXPECT_EQ(ranks[0].dispatch_plan.self_copies.size(), 1u);
  EXPECT_TRUE(ranks[0].counts_plan.sends.empty() && ranks[0].counts_plan.recvs.empty());
}

TEST(ExchangeGroup, PlansRejectMismatchedTables) {
  const std::vector<int> first = {0, 2, 5, 8};
  const std::vector<int64_t> offsets(9, 0), blocks(3 * 3 + 1, 0);
  char buf[64];
  TransferPlan plan;
  // Rank 1 holds 3 experts: 10 block offsets, not 7.
  EXPECT_EQ(PlanDispatch(1, first, offsets, std::vector<int64_t>(7, 0), buf, buf, 4, &plan).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanCombine(1, first, std::vector<int64_t>(8, 0), blocks, buf, buf, 4, &plan).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanDispatch(3, first, offsets, blocks, buf, buf, 4, &plan).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanCountsExchange(-1, first, nullptr, nullptr, &plan).code(), StatusCode::kInvalidArgument);
  // What rank 1 sends itself (1 row for expert 2) must be what it expects from itself (0 rows).
  std::vector<int64_t> one_row(9, 0);
  for (int e = 3; e <= 8; ++e) one_row[e] = 1;
  EXPECT_EQ(PlanDispatch(1, first, one_row, blocks, buf, buf, 4, &plan).code(), StatusCode::kInternal);
  ASSERT_TRUE(PlanDispatch(1, first, offsets, blocks, buf, buf, 4, &plan).ok());
  EXPECT_TRUE(plan.sends.empty() && plan.recvs.empty() && plan.self_copies.empty());
}

}  // namespace
}  // namespace shoal::comm
