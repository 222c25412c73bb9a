// The pure half of the CPU expert exchange (comm/expert_exchange.h): where every (token, choice) row
// goes and where every block lands, worked out from the routing and the row counts alone. No
// communication and no row data here, so it is unit-tested element by element without MPI; the
// exchange reads as plan (PlanOrigin) → counts (one message per peer) → expert-side layout
// (PlanExpertSide) → rows.
//
// Blocks: block b = slot_base[r] + i is "rows for rank r's i-th local expert"; slot_base [R + 1] is
// the prefix sum of the ranks' expert counts (Placement::local_experts).
//
// Origin side, the send buffer: per destination, its small blocks (coalesced into one message) and
// then its large blocks (a message each), each group in ascending expert order; within a block, token
// order. A block is large when it has at least `large_block_rows` rows.
//
// Expert side, the receive buffer: expert-major — local expert i's rows from origin 0, then origin 1,
// ... — so each expert's FFN runs on one contiguous range. (The GPU exchange, comm/nccl/exchange_plan.h,
// lays its receive buffer out origin-major instead, so that each peer's rows are one NCCL message; its
// expert GEMMs take one (origin, expert) block at a time. The two layouts serve their backends'
// message models, so the plans are separate.)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "comm/placement.h"

namespace shoal::comm {

// Block numbering for a placement: slot_on[r][e] = e's index among rank r's experts, or -1.
struct BlockTable {
  std::vector<std::vector<int>> slot_on;  // [R][E]
  std::vector<int64_t> slot_base;         // [R + 1]
  static BlockTable For(const Placement& placement);
  int64_t num_blocks() const { return slot_base.back(); }
};

struct OriginPlan {
  std::vector<int64_t> send_counts;    // [blocks] rows per (destination, its local expert)
  std::vector<int64_t> send_start;     // [blocks] first row of each block in the send buffer
  std::vector<int64_t> dest_begin;     // [R + 1] first row of each destination
  std::vector<int64_t> small_rows_to;  // [R] rows in each destination's coalesced message
  std::vector<int64_t> row_of;         // [T·K] row of each (token, choice)
  std::vector<int32_t> row_token;      // [T·K] the token each row comes from
  std::vector<int8_t> sum_order;       // [T·K] each token's choices in ascending expert id
  std::vector<int32_t> block_of;       // [T·K] scratch: each (token, choice)'s block
  std::vector<int64_t> cursor;         // [blocks] scratch
};

// Routes T tokens' K choices from rank `rank`: (token t, choice j) → Placement::RankFor(expert,
// t + rank) (replicas take turns) and that rank's slot of the expert. Ids must be in [0, E) (the
// exchange checks them first). Refills `plan`, reusing its vectors.
void PlanOrigin(const Placement& placement, const BlockTable& blocks, int rank, const int32_t* topk_ids, int64_t T,
                int K, int64_t large_block_rows, OriginPlan* plan);

struct ExpertPlan {
  std::vector<int64_t> expert_offsets;  // [L + 1] each local expert's rows
  std::vector<int64_t> recv_start;      // [R·L] first row of (origin, local expert) in expert order
  std::vector<int64_t> small_begin;     // [R + 1] each origin's coalesced small blocks in staging
};

// The expert-major layout of rank `rank` from recv_counts [R·L] (origin-major: origin o's count for
// local expert i at o·L + i). Its own rows and large blocks never go through staging.
void PlanExpertSide(std::span<const int64_t> recv_counts, int R, int L, int rank, int64_t large_block_rows,
                    ExpertPlan* plan);

}  // namespace shoal::comm
