// comm::DeviceExpertExchange: the GPU version of comm::ExpertExchange for one MoE layer — token rows
// in device memory travel to the ranks holding their experts, and the expert outputs travel back.
//
// Scope: placements without replicas whose ranks own contiguous, increasing expert ranges
// (Placement::Balanced with R ≤ E); anything else is Unimplemented at Create. That restriction is what
// makes the exchange need no new kernels: MoePermutePlan's expert-major order of the (token, choice)
// pairs is then also destination-major, so the rows for each peer are one contiguous run of the
// permuted buffer (comm/nccl/exchange_plan.h has the layouts and the planning, testable on CPU).
//
// One layer, on every rank of the group, in this order (also with T = 0: the peers expect both calls):
//   Dispatch(x, T, topk_ids)  MoePermutePlan + PermuteRows into a send buffer, the per-expert counts to
//                             the host, a counts exchange (L_r int64 per peer r), then the rows: one
//                             SendRecv block per peer and direction. Afterwards recv_rows() [N, H] bf16
//                             holds this rank's rows origin-major, then local expert: block b (origin
//                             b / L, local expert b % L) is rows [block_offsets()[b], block_offsets()[b+1]).
//   (caller)                  runs the expert FFN over the blocks — e.g. Gemm::ExpertLinear with
//                             block_offsets() and BlockWeights() — and writes f32 outputs [N, H] into
//                             expert_out(), on `stream`.
//   Combine()                 the outputs go back to their origins, into combined() [T·K, H] f32 in
//                             MoePermutePlan's permuted layout, so the caller finishes with
//                             UnpermuteCombine(combined(), H, row_of(), topk_ids, topk_weights, T, K,
//                             residual, stream) — the single-GPU path's own last step and summation
//                             order, so 1 and N ranks add a token's expert outputs the same way.
//
// Streams: everything this class enqueues goes on `stream` (the caller's compute stream). An
// NcclGroup is given `stream` as its compute stream at Create (set_compute_stream), so its transfers
// wait for the work queued there on the device; with any other group each SendRecv is preceded by a
// synchronize of `stream`. An NcclGroup drains its own stream before SendRecv returns, so work
// enqueued on `stream` afterwards sees the received data. Dispatch returns with x no longer needed; topk_ids stays
// the caller's, for UnpermuteCombine. Rows a rank routes to itself never enter the group: they are
// copied on `stream` right after each SendRecv. Dispatch and Combine select the device that was
// current at Create, as NcclGroup selects its own for every call.
//
// Failures: a bad expert id (MoePermutePlan drops it, so the row total comes up short) does not stop
// this rank from taking part — it sends no rows — and Combine returns the error, as the CPU exchange
// does. Any other error, local or from the group (a timeout), is returned at once and leaves the
// exchange refusing further calls (Unavailable): this rank has skipped a collective its peers are in,
// so the call sequences no longer line up. After a failed SendRecv the buffers may still be the
// target of an aborted transfer, so they are never touched again — not even freed (the destructor
// leaks them on purpose; the group is dead by then and the process is expected to restart it).
// Not thread-safe; one thread (the engine loop) drives it, as it drives the group.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "comm/expert_exchange.h"
#include "comm/group.h"
#include "comm/nccl/exchange_plan.h"
#include "comm/placement.h"
#include "common/deadline.h"
#include "common/status.h"
#include "kernels/cuda/cuda_kernels.h"

namespace shoal::comm {

class DeviceExpertExchange {
 public:
  // `group` (an NcclGroup in practice: only SendRecv is used, with device pointers) and `placement`
  // must outlive the exchange; placement.num_ranks() == group->size(). 1 ≤ top_k ≤ min(E, 32) (the
  // limit of UnpermuteCombine). Allocates the small fixed buffers (counts, offsets, plan scratch) on
  // the current device; the row buffers grow with the steps.
  static StatusOr<std::unique_ptr<DeviceExpertExchange>> Create(Group* group, const Placement* placement,
                                                                int64_t hidden, int top_k, cudaStream_t stream);
  ~DeviceExpertExchange();
  DeviceExpertExchange(const DeviceExpertExchange&) = delete;
  DeviceExpertExchange& operator=(const DeviceExpertExchange&) = delete;

  // x [T, H] bf16, topk_ids [T, K] int32, both device memory, ids in [0, E).
  Status Dispatch(const cuda::bf16* x, int64_t num_tokens, const int32_t* topk_ids, Deadline deadline);

  // --- After Dispatch: the rows this rank runs. ---
  const cuda::bf16* recv_rows() const { return static_cast<const cuda::bf16*>(recv_rows_.ptr); }
  int64_t num_recv_rows() const { return block_offsets_.back(); }
  // Host, [num_blocks() + 1].
  std::span<const int64_t> block_offsets() const { return block_offsets_; }
  int num_blocks() const { return static_cast<int>(block_offsets_.size()) - 1; }
  // Block b < num_blocks(): its origin rank and its index into local_experts().
  int block_origin(int b) const { return b / num_local_; }
  int block_local_expert(int b) const { return b % num_local_; }
  // Global ids of this rank's experts, ascending.
  const std::vector<int>& local_experts() const { return local_experts_; }
  // Gemm::ExpertLinear's weights per block: local_weights[i] (one device pointer per local expert) for
  // every block of local expert i, null for an empty block (ExpertLinear accepts null only there).
  // InvalidArgument unless local_weights has one entry per local expert.
  Status BlockWeights(std::span<const cuda::bf16* const> local_weights, std::vector<const cuda::bf16*>* out) const;
  // [num_recv_rows(), H] f32, device: where the caller writes the expert outputs.
  float* expert_out() { return static_cast<float*>(expert_out_.ptr); }

  Status Combine(Deadline deadline);

  // --- After Combine (device, valid until the next Dispatch): input of UnpermuteCombine. ---
  // [T·K, H] f32: the output for the permuted row r of this rank's last Dispatch.
  const float* combined() const { return static_cast<const float*>(combined_.ptr); }
  // [T·K] int32: the permuted row of each (token, choice), MoePermutePlan's row_of.
  const int32_t* row_of() const { return static_cast<const int32_t*>(row_of_.ptr); }
  // Host, [E + 1]: the permuted layout's row range per expert (this rank as origin).
  std::span<const int64_t> expert_offsets() const { return {host_offsets_, static_cast<size_t>(num_experts_) + 1}; }

  // Rows of the last Dispatch sent to / received from each rank (self included), for benchmarks.
  std::span<const int64_t> rows_to() const { return rows_to_; }
  std::span<const int64_t> rows_from() const { return rows_from_; }
  const ExchangeCounters& counters() const { return counters_; }

 private:
  // One owned device allocation; `bytes` is its capacity.
  struct Buffer {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  DeviceExpertExchange(Group* group, const Placement* placement, std::vector<int> rank_first, int64_t hidden,
                       int top_k, cudaStream_t stream);
  Status Allocate();
  // Makes `b` hold at least `bytes`, dropping its contents.
  Status Grow(Buffer* b, size_t bytes);
  Status DispatchSteps(const cuda::bf16* x, int64_t T, const int32_t* topk_ids, Deadline deadline);
  Status CombineSteps(Deadline deadline);
  // Runs one planned SendRecv and then the plan's self copies (on stream_).
  Status Transfer(const TransferPlan& plan, Deadline deadline);
  // Any error leaves the exchange unusable (see the header comment); returns `st`.
  Status Remember(Status st);
  std::string Prefix() const;

  Group* group_;
  std::vector<int> rank_first_;  // [R + 1]: rank r holds experts [rank_first_[r], rank_first_[r + 1])
  int64_t hidden_;
  int top_k_;
  cudaStream_t stream_;
  // The group is an NcclGroup whose compute stream is stream_ (Create sets it): its transfers wait for
  // stream_ on the device, so Transfer need not synchronize stream_ first.
  bool group_follows_stream_ = false;
  int device_ = 0;
  int rank_ = 0, num_ranks_ = 1, num_experts_ = 1, num_local_ = 0;
  std::vector<int> local_experts_;

  // Fixed size, allocated by Create.
  int64_t* host_offsets_ = nullptr;      // pinned [E + 1]: the permuted layout's expert offsets
  int64_t* host_send_counts_ = nullptr;  // pinned [E]: rows per expert (destination-major already)
  int64_t* host_recv_counts_ = nullptr;  // pinned [R * L]: rows per (origin, local expert)
  Buffer offsets_dev_, plan_scratch_, send_counts_dev_, recv_counts_dev_;
  // Grown on demand.
  Buffer row_of_, row_token_, send_rows_, combined_;  // origin side, [T·K] / [T·K, H]
  Buffer recv_rows_, expert_out_;                     // expert side, [N, H]

  std::vector<int64_t> block_offsets_{0};  // [R * L + 1], host
  std::vector<int64_t> rows_to_, rows_from_;
  TransferPlan plan_;  // reused by every transfer
  ExchangeCounters counters_;
  bool dispatched_ = false;             // a Dispatch awaits its Combine
  bool transfer_failed_ = false;        // a SendRecv failed: buffers may still be in use, never free them
  Status failed_ = Status::Ok();
  Status routing_error_ = Status::Ok();  // bad expert ids in the last Dispatch, reported by Combine
};

}  // namespace shoal::comm
