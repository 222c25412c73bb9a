// comm::ExpertExchange: moves token rows to the ranks holding their experts and the results back.
//
// One MoE layer on every rank of a group:
//   Dispatch(x, topk)  origin side: the row of token t goes to the rank serving each of its top-k
//                      experts (Placement::RankFor(expert, t + rank): replicas take turns), once per
//                      (token, expert). The per-(rank, local expert) row counts travel first, one
//                      message per peer — carrying the rows too when they total at most 64 KiB
//                      (decode sizes: one round trip, not two) — and the remaining rows second, each
//                      large (origin, expert) block landing directly in its place: afterwards this
//                      rank's rows are grouped by local expert —
//                      expert_rows() [num_expert_rows(), H], local expert i owning rows
//                      [expert_offsets()[i], expert_offsets()[i + 1]), ordered by origin rank then
//                      token.
//   (caller)           runs each local expert on its rows and writes the outputs over them, in place
//                      (expert_out() is expert_rows(): one buffer less to keep hot).
//   Combine()          every block of outputs goes back to its origin; combined_row(t, j) is then
//                      the output of token t's j-th chosen expert.
//   WeightedSum(out)   out[t] = Σ_j w_tj · combined_row(t, j), added in ascending expert order — the
//                      order a single process uses, so 1 and N ranks give bit-identical results.
//
// Layout costs: the origin packs its rows per destination (one copy, done peer by peer while earlier
// peers' blocks are already moving); a block of at least 64 KiB is received and sent back in place,
// with no copy beyond the transfer, because it is contiguous on both sides; smaller blocks between
// two ranks share one message through a staging copy (cheap at their size, and one rendezvous
// instead of many). A row that goes to k experts on one rank travels k times; deduplicating per rank (as DeepEP's normal kernels do) would save bytes when a rank holds
// many of a token's experts, at the price of an expanding copy on the receiver.
//
// Shared memory (ExchangeOptions::shared_memory, ranks on one host): every rank owns a segment of one
// shared window — a header with its row counts for every (rank, local expert), then the rows its
// experts receive, expert-major. Dispatch: each rank writes its counts, syncs, reads everyone's
// counts, and writes each of its rows once, straight into its place in the receiving rank's segment
// (no packing, no second copy by MPI); after a second sync a rank's experts run on its own segment in
// place. Combine: after a sync, each rank copies its rows' outputs back out of the segments, block by
// block (one copy each way; the next Dispatch's first sync keeps segments from being overwritten
// while read). The layout and the summation order are the same as the message path's, so results
// are bit-identical to it. The window is allocated once, by Create (collective, at start-up: no
// blocking collective happens while serving), for shared_rows received rows per rank; a step that
// needs more on some rank — every rank sees the same counts, so all decide alike — goes by messages.
// A group that cannot share memory (ranks on several hosts) uses messages.
//
// Every rank of the group must call Dispatch and Combine for every MoE layer, also with T = 0.
//
// Placements per layer: an exchange starts under the placement given to Create and can run each
// layer under another (Use, before that layer's Dispatch, the same on every rank) — the layouts a
// rebalance installs (worker/expert_rebalance.h). The shared window's header has room for every
// (rank, expert) pair, so any placement of the same experts over the same ranks fits it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "comm/dispatch_plan.h"
#include "comm/group.h"
#include "comm/placement.h"
#include "common/deadline.h"
#include "common/status.h"

namespace shoal::comm {

struct ExchangeCounters {
  int64_t rows_sent = 0;      // (token, expert) rows this rank dispatched to other ranks
  int64_t rows_received = 0;  // rows other ranks dispatched to this rank
  int64_t bytes_sent = 0;     // dispatch + combine payload to other ranks
  int64_t bytes_received = 0;
};

struct ExchangeOptions {
  bool shared_memory = false;  // ranks on one host exchange through a shared window (above)
  int64_t shared_rows = 0;     // rows each rank's segment receives at most (hidden floats each)
  int64_t startup_timeout_ms = 600000;  // the window's allocation waits this long for every rank
};

// A placement and its block numbering, worked out once (an exchange switches between them per layer).
struct ExchangeLayout {
  explicit ExchangeLayout(Placement p) : placement(std::move(p)), blocks(BlockTable::For(placement)) {}
  Placement placement;
  BlockTable blocks;
};

class ExpertExchange {
 public:
  // `group` must outlive the exchange; `placement` is copied; placement.num_ranks() == group->size().
  static StatusOr<ExpertExchange> Create(Group* group, const Placement* placement, int64_t hidden, int top_k,
                                         ExchangeOptions options = {});
  // The layout the next Dispatch/Combine pair runs under (not between a Dispatch and its Combine);
  // null: the placement given to Create. `layout` must outlive its use and place the same number of
  // experts over the same ranks; every rank must use the same layout for the same layer.
  Status Use(const ExchangeLayout* layout);
  const Placement& placement() const { return layout_->placement; }
  // Whether the last Dispatch went through shared memory; whether the exchange has a window at all.
  bool used_shared_memory() const { return last_shared_; }
  bool has_shared_window() const { return shm_ != nullptr; }

  // x [T, H]; topk_ids, topk_weights [T, K], a token's ids distinct and in [0, num_experts).
  // x must stay valid until Dispatch returns; ids and weights until WeightedSum. An id out of range
  // makes this rank take part with no rows, and Combine returns the error (so peers never stall).
  Status Dispatch(const float* x, int64_t num_tokens, const int32_t* topk_ids, const float* topk_weights,
                  Deadline deadline);

  // After Dispatch: rows this rank must run, grouped by local expert.
  const std::vector<int>& local_experts() const { return layout_->placement.local_experts(group_->rank()); }
  std::span<const int64_t> expert_offsets() const { return expert_.expert_offsets; }
  int64_t num_expert_rows() const { return expert_.expert_offsets.back(); }
  const float* expert_rows() const { return expert_rows_at_; }
  // The same buffer as expert_rows(), for writing each row's output over it.
  float* expert_out() { return expert_rows_at_; }

  Status Combine(Deadline deadline);
  // After Combine: [H] output of token t's j-th choice (topk_ids[t * K + j]).
  const float* combined_row(int64_t t, int j) const { return rows_.data() + origin_.row_of[t * top_k_ + j] * hidden_; }
  // out [T, H], T of the last Dispatch.
  void WeightedSum(float* out) const;

  // Rows of the last Dispatch sent to / received from each rank (self included), for benchmarks.
  std::span<const int64_t> rows_to() const { return rows_to_; }
  std::span<const int64_t> rows_from() const { return rows_from_; }
  const ExchangeCounters& counters() const { return counters_; }

 private:
  ExpertExchange(Group* group, const Placement* placement, int64_t hidden, int top_k, ExchangeOptions options);
  int num_local() const { return static_cast<int>(local_experts().size()); }
  // Through the shared window; *fits false (and nothing moved) when some rank's rows exceed it.
  Status DispatchShared(const float* x, bool* fits, Deadline deadline);
  Status CombineShared(Deadline deadline);
  float* SharedRows(int rank) { return reinterpret_cast<float*>(shm_->segment(rank) + shm_header_bytes_); }
  // Blocks of at least kLargeBlockBytes travel as their own message, straight into place; smaller
  // blocks between two ranks are coalesced into one message (and copied in and out of staging_),
  // since a message per block costs a rendezvous each. Both sides decide from the exchanged counts.
  static constexpr int64_t kLargeBlockBytes = 64 * 1024;
  bool IsLarge(int64_t rows) const { return rows >= large_block_rows_; }
  // Rows between two ranks totalling at most kEagerBytes travel in the counts message itself. Below
  // kLargeBlockBytes, so every block of such a pair is small.
  static constexpr int64_t kEagerBytes = kLargeBlockBytes - 1;
  bool IsEager(int64_t rows) const { return rows * hidden_ * static_cast<int64_t>(sizeof(float)) <= kEagerBytes; }
  // Staging ⇄ expert-major rows for the small blocks: after dispatch into expert_rows_, before
  // combine out of the outputs.
  void MoveSmallBlocks(bool to_experts);
  // Records a failed group call: from then on the exchange refuses to run and leaves its buffers
  // untouched, since an abandoned send may still read them (comm/mpi/mpi_group.h).
  Status Remember(Status st);

  Group* group_;
  std::shared_ptr<const ExchangeLayout> own_layout_;  // Create's placement (on the heap: survives moves)
  const ExchangeLayout* layout_;                      // the one in use: own_layout_ or Use's
  int64_t hidden_;
  int top_k_;
  int64_t large_block_rows_;  // rows of a block of kLargeBlockBytes

  // The step in flight (comm/dispatch_plan.h): the origin side's routing and send layout, and the
  // expert side's layout of what arrived.
  int64_t num_tokens_ = 0;
  const int32_t* topk_ids_ = nullptr;
  const float* topk_weights_ = nullptr;
  OriginPlan origin_;
  ExpertPlan expert_;
  std::vector<float> rows_;           // dispatch send buffer, then combine receive buffer
  std::vector<int64_t> recv_counts_;  // [R, L] rows per (origin, local expert)
  std::vector<float> expert_rows_;    // rows in, then (in place) outputs out
  std::vector<float> staging_;
  std::vector<int64_t> eager_send_, eager_recv_;  // counts messages (+ rows when eager), per peer
  std::vector<int64_t> eager_received_;           // [R] bytes that arrived in each

  std::vector<int64_t> rows_to_, rows_from_;
  std::vector<int64_t> head_send_;  // Dispatch scratch, kept so the per-layer path does not allocate
  std::vector<Group::SendBlock> sends_;
  std::vector<Group::RecvBlock> recvs_;
  ExchangeCounters counters_;
  Status failed_ = Status::Ok();
  float* expert_rows_at_ = nullptr;  // expert_rows_ or this rank's shared segment
  ExchangeOptions options_;
  std::unique_ptr<SharedSegments> shm_;  // null: messages only
  bool last_shared_ = false;       // the step in flight went through shm_
  int64_t shm_header_bytes_ = 0;   // room for every (rank, expert) count, rounded to 64 bytes
  int64_t shm_capacity_rows_ = 0;  // rows each segment holds after its header
  std::vector<int64_t> shm_counts_;  // [R][blocks] everyone's counts, read from the headers
  std::vector<int64_t> shm_start_;   // [blocks] where this rank's block b starts in its destination's rows
  Status routing_error_ = Status::Ok();  // bad expert ids in the last Dispatch, reported by Combine
};

}  // namespace shoal::comm
