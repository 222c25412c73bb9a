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
  if (hidden < 1 || top_k < 1 || top_k > placement->num_experts()) {
    return InvalidArgument("expert exchange: need hidden ≥ 1 and 1 ≤ top_k ≤ " +
                           std::to_string(placement->num_experts()) + ", got hidden " + std::to_string(hidden) +
                           ", top_k " + std::to_string(top_k));
  }
  return ExpertExchange(group, placement, hidden, top_k);
}

ExpertExchange::ExpertExchange(Group* group, const Placement* placement, int64_t hidden, int top_k)
    : group_(group), placement_(placement), hidden_(hidden), top_k_(top_k) {
  local_experts_ = placement->local_experts(group->rank());
  local_index_.assign(placement->num_experts(), -1);
  for (size_t i = 0; i < local_experts_.size(); ++i) local_index_[local_experts_[i]] = static_cast<int>(i);
  expert_offsets_.assign(local_experts_.size() + 1, 0);
}

Status ExpertExchange::Dispatch(const float* x, int64_t T, const int32_t* topk_ids, const float* topk_weights,
                                Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  const int R = group_->size(), me = group_->rank(), K = top_k_, E = placement_->num_experts();
  const int64_t H = hidden_, F = record_floats();
  num_tokens_ = T;

  // 1. Route: per token, its choices in ascending expert order, each to the rank serving that expert
  //    for this token. Consecutive choices on one rank share a record (a rank's experts are
  //    contiguous, so a token's choices on one rank are consecutive in this order).
  std::vector<std::pair<int32_t, float>> choices(static_cast<size_t>(K));
  std::vector<int> choice_rank(static_cast<size_t>(T * K));
  std::vector<int32_t> sorted_ids(static_cast<size_t>(T * K));
  std::vector<float> sorted_weights(static_cast<size_t>(T * K));
  send_counts_.assign(R, 0);
  Status bad = Status::Ok();
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int32_t e = topk_ids[t * K + j];
      if (e < 0 || e >= E) {
        // Still take part in the exchange below with an empty share, so the peers do not stall.
        if (bad.ok()) bad = Internal("rank " + std::to_string(me) + ": token " + std::to_string(t) + " routed to expert " +
                                     std::to_string(e) + ", outside [0, " + std::to_string(E) + ")");
        choices[j] = {0, 0.0f};
      } else {
        choices[j] = {e, topk_weights[t * K + j]};
      }
    }
    std::sort(choices.begin(), choices.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    int prev = -1;
    for (int j = 0; j < K; ++j) {
      sorted_ids[t * K + j] = choices[j].first;
      sorted_weights[t * K + j] = choices[j].second;
      const int r = placement_->RankFor(choices[j].first, t + me);
      choice_rank[t * K + j] = r;
      if (r != prev) ++send_counts_[r];
      prev = r;
    }
  }
  if (!bad.ok()) {
    T = 0;
    num_tokens_ = 0;
    send_counts_.assign(R, 0);
  }

  // 2. Pack records in peer order; remember where each token's records sit for Combine.
  std::vector<int64_t> cursor(R + 1, 0);
  for (int p = 0; p < R; ++p) cursor[p + 1] = cursor[p] + send_counts_[p];
  send_buf_.resize(static_cast<size_t>(cursor[R] * F));
  token_records_.assign(static_cast<size_t>(T * K), -1);
  for (int64_t t = 0; t < T; ++t) {
    int prev = -1, n = 0;
    float* rec = nullptr;
    int slot = 0;
    for (int j = 0; j < K; ++j) {
      const int r = choice_rank[t * K + j];
      if (r != prev) {
        const int64_t pos = cursor[r]++;
        token_records_[t * K + n++] = pos;
        rec = send_buf_.data() + pos * F;
        std::memcpy(rec, x + t * H, static_cast<size_t>(H) * sizeof(float));
        for (int s = 0; s < K; ++s) {
          const int32_t none = -1;
          std::memcpy(rec + H + s, &none, sizeof(int32_t));
          rec[H + K + s] = 0.0f;
        }
        slot = 0;
        prev = r;
      }
      std::memcpy(rec + H + slot, &sorted_ids[t * K + j], sizeof(int32_t));
      rec[H + K + slot] = sorted_weights[t * K + j];
      ++slot;
    }
  }

  // 3. Counts first, rows second.
  recv_counts_.assign(R, 0);
  send_bytes_.assign(R, static_cast<int64_t>(sizeof(int64_t)));
  recv_bytes_.assign(R, static_cast<int64_t>(sizeof(int64_t)));
  SHOAL_RETURN_IF_ERROR(Remember(
      group_->AllToAllV(send_counts_.data(), send_bytes_, recv_counts_.data(), recv_bytes_, deadline)));
  int64_t M = 0;
  for (int p = 0; p < R; ++p) {
    if (recv_counts_[p] < 0) {
      return InvalidArgument("rank " + std::to_string(me) + ": rank " + std::to_string(p) + " announced " +
                             std::to_string(recv_counts_[p]) + " rows");
    }
    M += recv_counts_[p];
  }
  for (int p = 0; p < R; ++p) {
    send_bytes_[p] = send_counts_[p] * F * static_cast<int64_t>(sizeof(float));
    recv_bytes_[p] = recv_counts_[p] * F * static_cast<int64_t>(sizeof(float));
  }
  recv_buf_.resize(static_cast<size_t>(M * F));
  SHOAL_RETURN_IF_ERROR(Remember(group_->AllToAllV(send_buf_.data(), send_bytes_, recv_buf_.data(), recv_bytes_, deadline)));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.rows_sent += send_counts_[p];
    counters_.rows_received += recv_counts_[p];
    counters_.bytes_sent += send_bytes_[p];
    counters_.bytes_received += recv_bytes_[p];
  }
  SHOAL_RETURN_IF_ERROR(bad);

  // 4. Expert side: group the received (record, expert) pairs by local expert (counting sort; within
  //    an expert, rows keep their arrival order: origin rank, then token).
  const int L = static_cast<int>(local_experts_.size());
  expert_offsets_.assign(L + 1, 0);
  record_rows_.assign(static_cast<size_t>(M * K), -1);
  record_weights_.assign(static_cast<size_t>(M * K), 0.0f);
  std::vector<int32_t> slot_local(static_cast<size_t>(M * K), -1);
  int origin = 0;
  int64_t origin_end = recv_counts_.empty() ? 0 : recv_counts_[0];
  for (int64_t m = 0; m < M; ++m) {
    while (m >= origin_end) origin_end += recv_counts_[++origin];
    const float* rec = recv_buf_.data() + m * F;
    for (int s = 0; s < K; ++s) {
      int32_t e;
      std::memcpy(&e, rec + H + s, sizeof(int32_t));
      if (e == -1) break;
      if (e < 0 || e >= E || local_index_[e] < 0) {
        return InvalidArgument("rank " + std::to_string(me) + ": rank " + std::to_string(origin) +
                               " sent a row for expert " + std::to_string(e) + ", which this rank does not hold");
      }
      slot_local[m * K + s] = local_index_[e];
      ++expert_offsets_[local_index_[e] + 1];
    }
  }
  for (int i = 0; i < L; ++i) expert_offsets_[i + 1] += expert_offsets_[i];
  const int64_t rows = expert_offsets_[L];
  expert_rows_.resize(static_cast<size_t>(rows * H));
  expert_out_.resize(static_cast<size_t>(rows * H));
  std::vector<int64_t> fill(expert_offsets_.begin(), expert_offsets_.end() - 1);
  for (int64_t m = 0; m < M; ++m) {
    const float* rec = recv_buf_.data() + m * F;
    for (int s = 0; s < K && slot_local[m * K + s] >= 0; ++s) {
      const int64_t row = fill[slot_local[m * K + s]]++;
      record_rows_[m * K + s] = row;
      record_weights_[m * K + s] = rec[H + K + s];
      std::memcpy(expert_rows_.data() + row * H, rec, static_cast<size_t>(H) * sizeof(float));
    }
  }
  return Status::Ok();
}

Status ExpertExchange::Remember(Status st) {
  if (!st.ok() && failed_.ok()) failed_ = Unavailable("expert exchange unusable after: " + st.message());
  return st;
}

Status ExpertExchange::Combine(float* out, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  const int R = group_->size(), K = top_k_;
  const int64_t H = hidden_;
  int64_t M = 0, S = 0;
  for (int p = 0; p < R; ++p) {
    M += recv_counts_[p];
    S += send_counts_[p];
  }
  // Expert side: one partial sum per received record, Σ over its slots (ascending expert) of w·y.
  combine_send_.assign(static_cast<size_t>(M * H), 0.0f);
  for (int64_t m = 0; m < M; ++m) {
    float* o = combine_send_.data() + m * H;
    for (int s = 0; s < K && record_rows_[m * K + s] >= 0; ++s) {
      const float w = record_weights_[m * K + s];
      const float* y = expert_out_.data() + record_rows_[m * K + s] * H;
      for (int64_t i = 0; i < H; ++i) o[i] += w * y[i];
    }
  }
  for (int p = 0; p < R; ++p) {
    send_bytes_[p] = recv_counts_[p] * H * static_cast<int64_t>(sizeof(float));
    recv_bytes_[p] = send_counts_[p] * H * static_cast<int64_t>(sizeof(float));
  }
  combine_recv_.resize(static_cast<size_t>(S * H));
  SHOAL_RETURN_IF_ERROR(
      Remember(group_->AllToAllV(combine_send_.data(), send_bytes_, combine_recv_.data(), recv_bytes_, deadline)));
  for (int p = 0; p < R; ++p) {
    if (p == group_->rank()) continue;
    counters_.bytes_sent += send_bytes_[p];
    counters_.bytes_received += recv_bytes_[p];
  }
  // Origin side: the partial sums of each token in the order they were formed (ascending experts).
  std::fill(out, out + num_tokens_ * H, 0.0f);
  for (int64_t t = 0; t < num_tokens_; ++t) {
    float* o = out + t * H;
    for (int j = 0; j < K && token_records_[t * K + j] >= 0; ++j) {
      const float* part = combine_recv_.data() + token_records_[t * K + j] * H;
      for (int64_t i = 0; i < H; ++i) o[i] += part[i];
    }
  }
  return Status::Ok();
}

}  // namespace shoal::comm
