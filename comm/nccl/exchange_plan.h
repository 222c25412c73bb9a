// Host-side planning of the GPU expert exchange (comm/nccl/device_expert_exchange.h): which blocks of
// which buffers go to which rank, worked out from row counts alone. No CUDA here: pointers are only
// offset, never dereferenced, so these functions run (and are unit-tested) on machines without a GPU.
//
// Layouts, for a placement in which every rank owns one contiguous, increasing range of experts
// (rank r owns [rank_first[r], rank_first[r + 1]), L_r = their count):
//   origin side    the T·K (token, choice) rows in MoePermutePlan's expert-major order; expert_offsets
//                  [E + 1] bounds each expert's rows. Because the ranges are contiguous and increasing,
//                  the rows for destination r are one contiguous run:
//                  [expert_offsets[rank_first[r]], expert_offsets[rank_first[r + 1]]).
//   expert side    the rows this rank received, origin-major then local expert: block b = o·L + i holds
//                  the rows origin o sent for local expert i; block_offsets [R·L + 1] bounds them. Every
//                  origin's rows are again one contiguous run, [block_offsets[o·L], block_offsets[(o+1)·L]).
// So each (rank, peer) pair moves at most one block per direction in every step: one message, no
// staging copy, and both sides derive its size from the exchanged counts.
//
// Blocks a rank addresses to itself are not in the send/receive lists but in self_copies: the
// exchange copies them on its own stream, so the lists stay valid for any Group (the one-rank self
// group included, whose SendRecv would copy device pointers with memcpy).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "comm/group.h"
#include "comm/placement.h"
#include "common/status.h"

namespace shoal::comm {

// rank_first [R + 1] of a placement whose every expert is held by exactly one rank, the ranks' experts
// forming consecutive increasing ranges in rank order (what Placement::Balanced gives when R ≤ E).
// Replicas, or ranges out of order or with gaps, are Unimplemented (naming the expert or rank); an
// expert id out of range or held by no rank is InvalidArgument. Ranks holding no expert are allowed.
StatusOr<std::vector<int>> ContiguousExpertRanges(int num_experts, std::span<const std::vector<int>> local_experts);
StatusOr<std::vector<int>> ContiguousExpertRanges(const Placement& placement);
Status CheckContiguousPlacement(const Placement& placement);

// The counts this rank sends in the counts exchange, from the permuted layout's expert_offsets [E + 1]:
// per_expert [E] (rows per expert; destination r's L_r counts are per_expert[rank_first[r] ...], so the
// send buffer needs no reordering) and per_dest [R] (rows per destination). InvalidArgument when the
// offsets do not start at 0, decrease, or do not end at expected_rows (T·K): MoePermutePlan drops ids
// outside [0, E), so a short total is how a bad expert id shows up on the host.
Status SendCountsFromOffsets(std::span<const int64_t> expert_offsets, std::span<const int> rank_first,
                             int64_t expected_rows, std::span<int64_t> per_expert, std::vector<int64_t>* per_dest);

// Exclusive prefix sums of the received counts (origin-major, then local expert): offsets [n + 1].
// InvalidArgument on a negative count (they come from peers).
Status BuildBlockOffsets(std::span<const int64_t> recv_counts, std::vector<int64_t>* offsets);

// A copy the exchange makes itself, on its stream (a block from this rank to this rank).
struct SelfCopy {
  void* dst;
  const void* src;
  int64_t bytes;
};

// One Group::SendRecv call plus the self copies beside it. Zero-byte blocks are left out (SendRecv
// skips them anyway; leaving them out keeps null base pointers of empty buffers out of the lists).
// Blocks are listed in ascending peer order, at most one per peer and direction. The Plan* functions
// below refill a plan (reusing its vectors) and return InvalidArgument when the spans do not fit
// together (rank_first [R + 1], expert_offsets [E + 1], block_offsets [R·L_rank + 1]), Internal when
// what this rank sends itself differs from what it expects from itself.
struct TransferPlan {
  std::vector<Group::SendBlock> sends;
  std::vector<Group::RecvBlock> recvs;
  std::vector<SelfCopy> self_copies;
  int64_t bytes_to_peers = 0;  // self copies not included
  int64_t bytes_from_peers = 0;
};

// Counts exchange: to each peer r its L_r int64 counts send_counts[rank_first[r] ...] (send_counts
// [E]); from each origin o its L_rank counts into recv_counts[o·L_rank ...] (recv_counts [R·L_rank]).
// Sizes depend on the placement only, so a rank with no tokens still sends and receives them.
Status PlanCountsExchange(int rank, std::span<const int> rank_first, const int64_t* send_counts, int64_t* recv_counts,
                        TransferPlan* plan);

// Dispatch payload: to each destination r the rows [expert_offsets[rank_first[r]], expert_offsets[
// rank_first[r + 1]]) of send_rows; from each origin o its rows into recv_rows at block_offsets[o·L].
// row_bytes: bytes of one row (H · sizeof(element)).
Status PlanDispatch(int rank, std::span<const int> rank_first, std::span<const int64_t> expert_offsets,
                  std::span<const int64_t> block_offsets, const void* send_rows, void* recv_rows, int64_t row_bytes,
                  TransferPlan* plan);

// Combine payload, the dispatch reversed: to each origin o its output rows [block_offsets[o·L],
// block_offsets[(o+1)·L]) of expert_out; from each destination r its outputs into combined at
// expert_offsets[rank_first[r]], so `combined` ends up in the origin's permuted (dispatch) layout.
Status PlanCombine(int rank, std::span<const int> rank_first, std::span<const int64_t> expert_offsets,
                 std::span<const int64_t> block_offsets, const void* expert_out, void* combined, int64_t row_bytes,
                 TransferPlan* plan);

}  // namespace shoal::comm
