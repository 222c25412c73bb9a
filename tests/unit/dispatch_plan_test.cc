// The CPU exchange's pure plan (comm/dispatch_plan.h), element by element: where each (token, choice)
// row goes, the send buffer's layout, the summation order, and the expert side's layout — with
// replicas, ranks without tokens for a peer, and blocks on both sides of the large-block threshold.
#include "comm/dispatch_plan.h"

#include <gtest/gtest.h>

#include <random>

namespace shoal::comm {
namespace {

TEST(DispatchPlan, RowsGoToTheirExpertsRankInTheDocumentedLayout) {
  std::mt19937 rng(3);
  for (int R : {1, 2, 3, 4, 8}) {
    for (int E : {5, 6, 8}) {
      auto placement = Placement::Balanced(E, R);  // R = 8 > E: replicas
      ASSERT_TRUE(placement.ok());
      const BlockTable blocks = BlockTable::For(*placement);
      const int K = 2;
      const int64_t T = 37, large = 5;
      for (int rank = 0; rank < R; ++rank) {
        std::vector<int32_t> ids(T * K);
        for (int64_t t = 0; t < T; ++t) {
          ids[t * K] = static_cast<int32_t>(rng() % E);
          ids[t * K + 1] = static_cast<int32_t>((ids[t * K] + 1 + rng() % (E - 1)) % E);  // distinct
        }
        OriginPlan p;
        PlanOrigin(*placement, blocks, rank, ids.data(), T, K, large, &p);
        ASSERT_EQ(p.dest_begin.back(), T * K);
        for (int64_t t = 0; t < T; ++t) {
          for (int j = 0; j < K; ++j) {
            const int e = ids[t * K + j];
            const int dest = placement->RankFor(e, t + rank);
            const int64_t row = p.row_of[t * K + j];
            EXPECT_EQ(p.row_token[row], t);
            // The row sits in its destination's range and in its (destination, expert) block.
            EXPECT_GE(row, p.dest_begin[dest]);
            EXPECT_LT(row, p.dest_begin[dest + 1]);
            const int64_t b = blocks.slot_base[dest] + blocks.slot_on[dest][e];
            EXPECT_GE(row, p.send_start[b]);
            EXPECT_LT(row, p.send_start[b] + p.send_counts[b]);
          }
          // Ascending expert id.
          const int8_t* o = p.sum_order.data() + t * K;
          EXPECT_LT(ids[t * K + o[0]], ids[t * K + o[1]]);
        }
        for (int d = 0; d < R; ++d) {
          // Small blocks first (their rows are the coalesced message), then large, each in expert
          // order; a block's rows in token order.
          int64_t at = p.dest_begin[d], small = 0;
          for (int pass = 0; pass < 2; ++pass) {
            for (int64_t b = blocks.slot_base[d]; b < blocks.slot_base[d + 1]; ++b) {
              if ((p.send_counts[b] >= large) != (pass == 1)) continue;
              EXPECT_EQ(p.send_start[b], at);
              for (int64_t k = 1; k < p.send_counts[b]; ++k) {
                EXPECT_LT(p.row_token[at + k - 1], p.row_token[at + k]);
              }
              at += p.send_counts[b];
              if (pass == 0) small += p.send_counts[b];
            }
          }
          EXPECT_EQ(at, p.dest_begin[d + 1]);
          EXPECT_EQ(p.small_rows_to[d], small);
        }
      }
    }
  }
}

TEST(DispatchPlan, ReplicasTakeTurnsByToken) {
  auto placement = Placement::Balanced(2, 4);  // expert 0 on ranks 0 and 2, expert 1 on 1 and 3
  ASSERT_TRUE(placement.ok());
  const BlockTable blocks = BlockTable::For(*placement);
  std::vector<int32_t> ids = {0, 0, 0, 0};
  OriginPlan p;
  PlanOrigin(*placement, blocks, /*rank=*/1, ids.data(), 4, 1, 100, &p);
  std::vector<int64_t> per_dest(4);
  for (int d = 0; d < 4; ++d) per_dest[d] = p.dest_begin[d + 1] - p.dest_begin[d];
  EXPECT_EQ(per_dest, (std::vector<int64_t>{2, 0, 2, 0}));
}

TEST(DispatchPlan, ExpertSideIsExpertMajorAndStagesOnlyPeersSmallBlocks) {
  // 3 origins, 2 local experts; this rank is 1; large from 4 rows.
  const std::vector<int64_t> counts = {1, 4,   // origin 0: expert 0 small, expert 1 large
                                       2, 3,   // origin 1 (itself): never staged
                                       0, 5};  // origin 2
  ExpertPlan p;
  PlanExpertSide(counts, 3, 2, 1, 4, &p);
  EXPECT_EQ(p.expert_offsets, (std::vector<int64_t>{0, 3, 15}));
  EXPECT_EQ(p.recv_start, (std::vector<int64_t>{0, 3, 1, 7, 3, 10}));
  EXPECT_EQ(p.small_begin, (std::vector<int64_t>{0, 1, 1, 1}));
}

}  // namespace
}  // namespace shoal::comm
