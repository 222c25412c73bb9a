#include "comm/nccl/device_expert_exchange.h"

#include <algorithm>
#include <string>
#include <utility>

#include "comm/nccl/nccl_group.h"
#include "kernels/cuda/cuda_check.h"

namespace shoal::comm {

StatusOr<std::unique_ptr<DeviceExpertExchange>> DeviceExpertExchange::Create(Group* group, const Placement* placement,
                                                                             int64_t hidden, int top_k,
                                                                             cudaStream_t stream) {
  if (group == nullptr || placement == nullptr) {
    return InvalidArgument("device expert exchange: needs a group and a placement");
  }
  if (placement->num_ranks() != group->size()) {
    return InvalidArgument("device expert exchange: placement is for " + std::to_string(placement->num_ranks()) +
                           " ranks but the group has " + std::to_string(group->size()));
  }
  const int E = placement->num_experts();
  if (hidden < 1 || top_k < 1 || top_k > E || top_k > 32) {
    return InvalidArgument("device expert exchange: need hidden ≥ 1 and 1 ≤ top_k ≤ min(32, experts = " +
                           std::to_string(E) + "), got hidden " + std::to_string(hidden) + ", top_k " +
                           std::to_string(top_k));
  }
  auto ranges = ContiguousExpertRanges(*placement);
  if (!ranges.ok()) return ranges.status().WithContext("device expert exchange");
  std::unique_ptr<DeviceExpertExchange> ex(
      new DeviceExpertExchange(group, placement, std::move(ranges).value(), hidden, top_k, stream));
  // An NCCL group told about this stream orders its transfers after the work queued on it (an event,
  // no host wait); any other group gets a finished stream before each transfer instead.
  if (auto* nccl = dynamic_cast<NcclGroup*>(group)) {
    nccl->set_compute_stream(stream);
    ex->group_follows_stream_ = true;
  }
  // On failure the destructor frees what was allocated (nothing has been transferred yet).
  SHOAL_RETURN_IF_ERROR(ex->Allocate());
  return ex;
}

DeviceExpertExchange::DeviceExpertExchange(Group* group, const Placement* placement, std::vector<int> rank_first,
                                           int64_t hidden, int top_k, cudaStream_t stream)
    : group_(group),
      rank_first_(std::move(rank_first)),
      hidden_(hidden),
      top_k_(top_k),
      stream_(stream),
      rank_(group->rank()),
      num_ranks_(group->size()),
      num_experts_(placement->num_experts()),
      num_local_(rank_first_[group->rank() + 1] - rank_first_[group->rank()]),
      local_experts_(placement->local_experts(group->rank())) {
  block_offsets_.assign(static_cast<size_t>(num_ranks_) * num_local_ + 1, 0);
  rows_to_.assign(num_ranks_, 0);
  rows_from_.assign(num_ranks_, 0);
}

std::string DeviceExpertExchange::Prefix() const {
  return "device expert exchange (rank " + std::to_string(rank_) + " of " + std::to_string(num_ranks_) + ")";
}

Status DeviceExpertExchange::Allocate() {
  SHOAL_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device_));
  const size_t E = static_cast<size_t>(num_experts_);
  // At least one element each, so that every pointer is a real allocation (R·L is 0 on a rank
  // without experts).
  const size_t RL = std::max<size_t>(static_cast<size_t>(num_ranks_) * num_local_, 1);
  // Pinned: a device-to-host copy into pageable memory would not be asynchronous, and the counts
  // cross the bus every layer.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_offsets_), (E + 1) * sizeof(int64_t)));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_send_counts_), E * sizeof(int64_t)));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_recv_counts_), RL * sizeof(int64_t)));
  std::fill(host_offsets_, host_offsets_ + E + 1, 0);
  SHOAL_RETURN_IF_ERROR(Grow(&offsets_dev_, (E + 1) * sizeof(int64_t)));
  SHOAL_RETURN_IF_ERROR(Grow(&plan_scratch_, static_cast<size_t>(std::max<int64_t>(
                                                 cuda::MoePlanScratchBytes(num_experts_), 1))));
  SHOAL_RETURN_IF_ERROR(Grow(&send_counts_dev_, E * sizeof(int64_t)));
  SHOAL_RETURN_IF_ERROR(Grow(&recv_counts_dev_, RL * sizeof(int64_t)));
  return Status::Ok();
}

DeviceExpertExchange::~DeviceExpertExchange() {
  // After a failed transfer an aborted NCCL operation may still reach these buffers: leaking them is
  // the only safe choice (the header comment). Errors are ignored: there is no one to report them to.
  if (transfer_failed_) return;
  (void)cudaSetDevice(device_);
  for (Buffer* b : {&offsets_dev_, &plan_scratch_, &send_counts_dev_, &recv_counts_dev_, &row_of_, &row_token_,
                    &send_rows_, &combined_, &recv_rows_, &expert_out_}) {
    if (b->ptr != nullptr) (void)cudaFree(b->ptr);
  }
  for (int64_t* p : {host_offsets_, host_send_counts_, host_recv_counts_}) {
    if (p != nullptr) (void)cudaFreeHost(p);
  }
}

Status DeviceExpertExchange::Grow(Buffer* b, size_t bytes) {
  if (b->bytes >= bytes) return Status::Ok();
  // Half as much again as before, so a slowly growing step size does not reallocate every layer.
  const size_t want = std::max(bytes, b->bytes + b->bytes / 2);
  if (b->ptr != nullptr) {
    // Work queued earlier (the previous layer's FFN or UnpermuteCombine) may still read the old
    // buffer. Freed before the new one is taken, so the peak is not old + new.
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    SHOAL_CUDA_RETURN_IF_ERROR(cudaFree(b->ptr));
    b->ptr = nullptr;
    b->bytes = 0;
  }
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&b->ptr, want));
  b->bytes = want;
  return Status::Ok();
}

Status DeviceExpertExchange::Remember(Status st) {
  if (!st.ok() && failed_.ok()) {
    failed_ = Unavailable(Prefix() + ": unusable after an earlier failure: " + st.message());
  }
  return st;
}

Status DeviceExpertExchange::BlockWeights(std::span<const cuda::bf16* const> local_weights,
                                          std::vector<const cuda::bf16*>* out) const {
  if (local_weights.size() != static_cast<size_t>(num_local_)) {
    return InvalidArgument(Prefix() + ": " + std::to_string(local_weights.size()) + " expert weights for " +
                           std::to_string(num_local_) + " local experts");
  }
  out->assign(static_cast<size_t>(num_blocks()), nullptr);
  for (int b = 0; b < num_blocks(); ++b) {
    if (block_offsets_[b + 1] > block_offsets_[b]) (*out)[b] = local_weights[block_local_expert(b)];
  }
  return Status::Ok();
}

Status DeviceExpertExchange::Transfer(const TransferPlan& plan, Deadline deadline) {
  // An NCCL group whose compute stream is stream_ orders its transfers after everything queued here;
  // any other group may read the buffers from the host or another stream, so stream_ must be done.
  if (!group_follows_stream_) SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  const Status st = group_->SendRecv(plan.sends, plan.recvs, deadline);
  if (!st.ok()) {
    transfer_failed_ = true;
    return st.WithContext(Prefix());
  }
  // After the SendRecv, so they overlap whatever the caller enqueues next rather than delay the
  // transfers; later work on stream_ is ordered after them.
  for (const SelfCopy& c : plan.self_copies) {
    SHOAL_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(c.dst, c.src, static_cast<size_t>(c.bytes), cudaMemcpyDeviceToDevice, stream_));
  }
  return Status::Ok();
}

Status DeviceExpertExchange::Dispatch(const cuda::bf16* x, int64_t num_tokens, const int32_t* topk_ids,
                                      Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  if (dispatched_) {
    return Remember(Internal(Prefix() + ": Dispatch called again before the previous layer's Combine"));
  }
  return Remember(DispatchSteps(x, num_tokens, topk_ids, deadline));
}

Status DeviceExpertExchange::DispatchSteps(const cuda::bf16* x, int64_t T, const int32_t* topk_ids,
                                           Deadline deadline) {
  const int R = num_ranks_, E = num_experts_, K = top_k_, L = num_local_;
  const int64_t H = hidden_;
  const int64_t S = T * K;  // (token, choice) rows this rank sends
  if (T < 0 || S > INT32_MAX || (T > 0 && (x == nullptr || topk_ids == nullptr))) {
    return InvalidArgument(Prefix() + ": Dispatch of " + std::to_string(T) + " tokens" +
                           (T > 0 && (x == nullptr || topk_ids == nullptr) ? " without rows or ids" : ""));
  }
  SHOAL_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));

  // 1. Expert-major order of this rank's rows, which is destination-major too (contiguous ranges).
  const size_t s = static_cast<size_t>(S), h = static_cast<size_t>(H);
  SHOAL_RETURN_IF_ERROR(Grow(&row_of_, s * sizeof(int32_t)));
  SHOAL_RETURN_IF_ERROR(Grow(&row_token_, s * sizeof(int32_t)));
  SHOAL_RETURN_IF_ERROR(Grow(&send_rows_, s * h * sizeof(cuda::bf16)));
  // Sized now so that Combine never allocates between the two transfers.
  SHOAL_RETURN_IF_ERROR(Grow(&combined_, s * h * sizeof(float)));
  auto* offsets_dev = static_cast<int64_t*>(offsets_dev_.ptr);
  SHOAL_RETURN_IF_ERROR(cuda::MoePermutePlan(topk_ids, T, K, E, offsets_dev, static_cast<int32_t*>(row_of_.ptr),
                                             static_cast<int32_t*>(row_token_.ptr), plan_scratch_.ptr, stream_));
  // 2. The offsets to the host: the block sizes of both transfers are decided there.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_offsets_, offsets_dev, (static_cast<size_t>(E) + 1) * sizeof(int64_t),
                                             cudaMemcpyDeviceToHost, stream_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  const std::span<const int64_t> offsets(host_offsets_, static_cast<size_t>(E) + 1);
  const std::span<int64_t> send_counts(host_send_counts_, static_cast<size_t>(E));
  routing_error_ = SendCountsFromOffsets(offsets, rank_first_, S, send_counts, &rows_to_);
  if (!routing_error_.ok()) {
    // A bad id: this rank still takes part, with no rows, so that its peers do not stall; Combine
    // reports the error. (row_of is garbage then; the caller must not run UnpermuteCombine.)
    routing_error_ = Internal(Prefix() + ": routing of " + std::to_string(T) + " tokens: " + routing_error_.message());
    std::fill(host_offsets_, host_offsets_ + E + 1, 0);
    SHOAL_RETURN_IF_ERROR(SendCountsFromOffsets(offsets, rank_first_, 0, send_counts, &rows_to_));
  } else {
    // Only once the ids are known to be good: a dropped pair leaves its row_token entry unwritten,
    // and gathering from such a token index could fault the whole context. Completed by the sync
    // before the counts transfer, so x is free once Dispatch returns.
    SHOAL_RETURN_IF_ERROR(cuda::PermuteRows(x, H, static_cast<const int32_t*>(row_token_.ptr), S,
                                            static_cast<cuda::bf16*>(send_rows_.ptr), stream_));
  }

  // 3. Counts: L_r per peer r out, L per origin in.
  auto* send_counts_dev = static_cast<int64_t*>(send_counts_dev_.ptr);
  auto* recv_counts_dev = static_cast<int64_t*>(recv_counts_dev_.ptr);
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(send_counts_dev, host_send_counts_,
                                             static_cast<size_t>(E) * sizeof(int64_t), cudaMemcpyHostToDevice, stream_));
  SHOAL_RETURN_IF_ERROR(PlanCountsExchange(rank_, rank_first_, send_counts_dev, recv_counts_dev, &plan_));
  SHOAL_RETURN_IF_ERROR(Transfer(plan_, deadline));
  const size_t RL = static_cast<size_t>(R) * L;
  if (RL > 0) {
    SHOAL_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host_recv_counts_, recv_counts_dev, RL * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  }
  // A negative count can only come from a corrupted peer; this rank then skips the row transfer and
  // its peers time out, which is the right outcome for a group that no longer agrees on anything.
  SHOAL_RETURN_IF_ERROR(
      BuildBlockOffsets(std::span<const int64_t>(host_recv_counts_, RL), &block_offsets_).WithContext(Prefix()));

  // 4. Rows: one block per peer each way, straight into the origin-major receive layout.
  const size_t N = static_cast<size_t>(block_offsets_.back());
  SHOAL_RETURN_IF_ERROR(Grow(&recv_rows_, N * h * sizeof(cuda::bf16)));
  SHOAL_RETURN_IF_ERROR(Grow(&expert_out_, N * h * sizeof(float)));
  SHOAL_RETURN_IF_ERROR(PlanDispatch(rank_, rank_first_, offsets, block_offsets_, send_rows_.ptr, recv_rows_.ptr,
                                     H * static_cast<int64_t>(sizeof(cuda::bf16)), &plan_));
  SHOAL_RETURN_IF_ERROR(Transfer(plan_, deadline));

  for (int o = 0; o < R; ++o) {
    rows_from_[o] = block_offsets_[static_cast<size_t>(o + 1) * L] - block_offsets_[static_cast<size_t>(o) * L];
    if (o == rank_) continue;
    counters_.rows_sent += rows_to_[o];
    counters_.rows_received += rows_from_[o];
  }
  counters_.bytes_sent += plan_.bytes_to_peers;
  counters_.bytes_received += plan_.bytes_from_peers;
  dispatched_ = true;
  return Status::Ok();
}

Status DeviceExpertExchange::Combine(Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  if (!dispatched_) return Remember(Internal(Prefix() + ": Combine without a Dispatch before it"));
  dispatched_ = false;
  SHOAL_RETURN_IF_ERROR(Remember(CombineSteps(deadline)));
  return routing_error_;
}

Status DeviceExpertExchange::CombineSteps(Deadline deadline) {
  SHOAL_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const std::span<const int64_t> offsets(host_offsets_, static_cast<size_t>(num_experts_) + 1);
  // Every output row goes back to where its input came from: to origin o its run of blocks, from
  // destination r into combined at r's run of the permuted layout.
  SHOAL_RETURN_IF_ERROR(PlanCombine(rank_, rank_first_, offsets, block_offsets_, expert_out_.ptr, combined_.ptr,
                                    hidden_ * static_cast<int64_t>(sizeof(float)), &plan_));
  // Transfer orders the sends after the caller's FFN, which has just written expert_out on stream_.
  SHOAL_RETURN_IF_ERROR(Transfer(plan_, deadline));
  counters_.bytes_sent += plan_.bytes_to_peers;
  counters_.bytes_received += plan_.bytes_from_peers;
  return Status::Ok();
}

}  // namespace shoal::comm
