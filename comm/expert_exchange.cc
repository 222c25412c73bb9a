#include "comm/expert_exchange.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace shoal::comm {

StatusOr<ExpertExchange> ExpertExchange::Create(Group* group, const Placement* placement, int64_t hidden, int top_k) {
  if (placement->num_ranks() != group->size()) {
    return InvalidArgument("expert exchange: placement is for " + std::to_string(placement->num_ranks()) +
                           " ranks but the group has " + std::to_string(group->size()));
  }
  if (hidden < 1 || top_k < 1 || top_k > placement->num_experts() || top_k > 127) {
    return InvalidArgument("expert exchange: need hidden ≥ 1 and 1 ≤ top_k ≤ min(127, experts = " +
                           std::to_string(placement->num_experts()) + "), got hidden " + std::to_string(hidden) +
                           ", top_k " + std::to_string(top_k));
  }
  return ExpertExchange(group, placement, hidden, top_k);
}

ExpertExchange::ExpertExchange(Group* group, const Placement* placement, int64_t hidden, int top_k)
    : group_(group), placement_(placement), hidden_(hidden), top_k_(top_k) {
  const int R = group->size(), E = placement->num_experts();
  local_experts_ = placement->local_experts(group->rank());
  slot_on_.assign(R, std::vector<int>(E, -1));
  slot_base_.assign(R + 1, 0);
  for (int r = 0; r < R; ++r) {
    const std::vector<int>& held = placement->local_experts(r);
    for (size_t i = 0; i < held.size(); ++i) slot_on_[r][held[i]] = static_cast<int>(i);
    slot_base_[r + 1] = slot_base_[r] + static_cast<int64_t>(held.size());
  }
  expert_offsets_.assign(local_experts_.size() + 1, 0);
}

Status ExpertExchange::Remember(Status st) {
  if (!st.ok() && failed_.ok()) failed_ = Unavailable("expert exchange unusable after: " + st.message());
  return st;
}

Status ExpertExchange::Dispatch(const float* x, int64_t T, const int32_t* topk_ids, const float* topk_weights,
                                Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  const int R = group_->size(), me = group_->rank(), K = top_k_, E = placement_->num_experts();
  const int L = static_cast<int>(local_experts_.size());
  const int64_t H = hidden_;

  // Bad routing is an internal error, but this rank still joins the exchange (with no rows) so that
  // its peers do not stall; the error is returned afterwards.
  Status bad = Status::Ok();
  for (int64_t i = 0; i < T * K && bad.ok(); ++i) {
    if (topk_ids[i] < 0 || topk_ids[i] >= E) {
      bad = Internal("rank " + std::to_string(me) + ": token " + std::to_string(i / K) + " routed to expert " +
                     std::to_string(topk_ids[i]) + ", outside [0, " + std::to_string(E) + ")");
    }
  }
  if (!bad.ok()) T = 0;
  num_tokens_ = T;
  topk_ids_ = topk_ids;
  topk_weights_ = topk_weights;

  // 1. Route every (token, choice) to (destination rank, its local expert); count rows per block.
  std::vector<int32_t> block_of(static_cast<size_t>(T * K));
  send_counts_.assign(slot_base_[R], 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int e = topk_ids[t * K + j];
      const int dest = placement_->RankFor(e, t + me);
      const int32_t block = static_cast<int32_t>(slot_base_[dest] + slot_on_[dest][e]);
      block_of[t * K + j] = block;
      ++send_counts_[block];
    }
  }
  // Blocks in (destination, expert) order; within a block, rows in token order.
  send_start_.assign(slot_base_[R], 0);
  for (int64_t b = 1; b < slot_base_[R]; ++b) send_start_[b] = send_start_[b - 1] + send_counts_[b - 1];
  const int64_t S = T * K;
  row_of_.resize(static_cast<size_t>(S));
  row_token_.resize(static_cast<size_t>(S));
  {
    std::vector<int64_t> cursor = send_start_;
    for (int64_t t = 0; t < T; ++t) {
      for (int j = 0; j < K; ++j) {
        const int64_t r = cursor[block_of[t * K + j]]++;
        row_of_[t * K + j] = r;
        row_token_[r] = static_cast<int32_t>(t);
      }
    }
  }
  // Summation order of each token's choices: ascending expert id.
  sum_order_.resize(static_cast<size_t>(S));
  for (int64_t t = 0; t < T; ++t) {
    int8_t* o = sum_order_.data() + t * K;
    for (int j = 0; j < K; ++j) o[j] = static_cast<int8_t>(j);
    std::sort(o, o + K, [&](int8_t a, int8_t b) { return topk_ids[t * K + a] < topk_ids[t * K + b]; });
  }

  // 2. Counts first: each destination gets the counts of its own experts.
  recv_counts_.assign(static_cast<size_t>(R) * L, 0);
  {
    std::vector<int64_t> send_bytes(R), recv_bytes(R, static_cast<int64_t>(L * sizeof(int64_t)));
    for (int d = 0; d < R; ++d) send_bytes[d] = (slot_base_[d + 1] - slot_base_[d]) * static_cast<int64_t>(sizeof(int64_t));
    SHOAL_RETURN_IF_ERROR(
        Remember(group_->AllToAllV(send_counts_.data(), send_bytes, recv_counts_.data(), recv_bytes, deadline)));
  }
  for (int64_t c : recv_counts_) {
    if (c < 0 || c > (int64_t{1} << 31)) {
      return Remember(InvalidArgument("rank " + std::to_string(me) + ": a peer announced " + std::to_string(c) + " rows"));
    }
  }

  // 3. Expert-major layout: expert i's rows from origin 0, then origin 1, ...
  expert_offsets_.assign(L + 1, 0);
  recv_start_.assign(static_cast<size_t>(R) * L, 0);
  for (int i = 0; i < L; ++i) {
    int64_t n = expert_offsets_[i];
    for (int src = 0; src < R; ++src) {
      recv_start_[src * L + i] = n;
      n += recv_counts_[src * L + i];
    }
    expert_offsets_[i + 1] = n;
  }
  const int64_t M = expert_offsets_[L];
  expert_rows_.resize(static_cast<size_t>(M * H));
  expert_out_.resize(static_cast<size_t>(M * H));
  rows_.resize(static_cast<size_t>(S * H));

  // 4. Rows: one block per (peer, expert), contiguous on both sides; the send side is packed peer
  //    by peer just before that peer's blocks are posted.
  const int64_t row_bytes = H * static_cast<int64_t>(sizeof(float));
  sends_.clear();
  recvs_.clear();
  rows_to_.assign(R, 0);
  rows_from_.assign(R, 0);
  for (int d = 0; d < R; ++d) {
    for (int64_t b = slot_base_[d]; b < slot_base_[d + 1]; ++b) {
      sends_.push_back({d, rows_.data() + send_start_[b] * H, send_counts_[b] * row_bytes});
      rows_to_[d] += send_counts_[b];
    }
  }
  for (int src = 0; src < R; ++src) {
    for (int i = 0; i < L; ++i) {
      recvs_.push_back({src, expert_rows_.data() + recv_start_[src * L + i] * H, recv_counts_[src * L + i] * row_bytes});
      rows_from_[src] += recv_counts_[src * L + i];
    }
  }
  auto pack = [&](int d) {
    const int64_t begin = send_start_.empty() ? 0 : send_start_[slot_base_[d]];
    const int64_t end = slot_base_[d + 1] == slot_base_[d] ? begin
                                                            : send_start_[slot_base_[d + 1] - 1] + send_counts_[slot_base_[d + 1] - 1];
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(rows_.data() + r * H, x + static_cast<int64_t>(row_token_[r]) * H, static_cast<size_t>(row_bytes));
    }
  };
  SHOAL_RETURN_IF_ERROR(Remember(group_->SendRecv(sends_, recvs_, deadline, pack)));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.rows_sent += rows_to_[p];
    counters_.rows_received += rows_from_[p];
    counters_.bytes_sent += rows_to_[p] * row_bytes;
    counters_.bytes_received += rows_from_[p] * row_bytes;
  }
  return bad;
}

Status ExpertExchange::Combine(Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  const int R = group_->size(), me = group_->rank();
  const int L = static_cast<int>(local_experts_.size());
  const int64_t H = hidden_, row_bytes = H * static_cast<int64_t>(sizeof(float));
  // The reverse of Dispatch's blocks: outputs leave from expert-major places and land where the
  // origin packed the rows (rows_, free again now that Dispatch's sends are complete).
  sends_.clear();
  recvs_.clear();
  for (int src = 0; src < R; ++src) {
    for (int i = 0; i < L; ++i) {
      sends_.push_back({src, expert_out_.data() + recv_start_[src * L + i] * H, recv_counts_[src * L + i] * row_bytes});
    }
  }
  for (int d = 0; d < R; ++d) {
    for (int64_t b = slot_base_[d]; b < slot_base_[d + 1]; ++b) {
      recvs_.push_back({d, rows_.data() + send_start_[b] * H, send_counts_[b] * row_bytes});
    }
  }
  SHOAL_RETURN_IF_ERROR(Remember(group_->SendRecv(sends_, recvs_, deadline)));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.bytes_sent += rows_from_[p] * row_bytes;
    counters_.bytes_received += rows_to_[p] * row_bytes;
  }
  return Status::Ok();
}

void ExpertExchange::WeightedSum(float* out) const {
  const int K = top_k_;
  const int64_t H = hidden_;
  for (int64_t t = 0; t < num_tokens_; ++t) {
    float* o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int k = 0; k < K; ++k) {
      const int j = sum_order_[t * K + k];
      const float w = topk_weights_[t * K + j];
      const float* y = combined_row(t, j);
      for (int64_t i = 0; i < H; ++i) o[i] += y[i] * w;
    }
  }
}

}  // namespace shoal::comm
