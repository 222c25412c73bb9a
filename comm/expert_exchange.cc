#include "comm/expert_exchange.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace shoal::comm {

StatusOr<ExpertExchange> ExpertExchange::Create(Group* group, const Placement* placement, int64_t hidden, int top_k,
                                                ExchangeOptions options) {
  if (placement->num_ranks() != group->size()) {
    return InvalidArgument("expert exchange: placement is for " + std::to_string(placement->num_ranks()) +
                           " ranks but the group has " + std::to_string(group->size()));
  }
  if (hidden < 1 || top_k < 1 || top_k > placement->num_experts() || top_k > 127) {
    return InvalidArgument("expert exchange: need hidden ≥ 1 and 1 ≤ top_k ≤ min(127, experts = " +
                           std::to_string(placement->num_experts()) + "), got hidden " + std::to_string(hidden) +
                           ", top_k " + std::to_string(top_k));
  }
  ExpertExchange ex(group, placement, hidden, top_k, options);
  if (options.shared_memory && group->size() > 1 && options.shared_rows > 0) {
    // Any placement's blocks (at most every expert on every rank), so that Use never outgrows it.
    const int64_t max_blocks = int64_t{placement->num_experts()} * group->size();
    ex.shm_header_bytes_ = (max_blocks * static_cast<int64_t>(sizeof(int64_t)) + 63) / 64 * 64;
    StatusOr<std::unique_ptr<SharedSegments>> s = group->AllocateShared(
        ex.shm_header_bytes_ + options.shared_rows * hidden * static_cast<int64_t>(sizeof(float)),
        Deadline::AfterMs(options.startup_timeout_ms));
    if (s.ok()) {
      ex.shm_ = std::move(*s);
      ex.shm_capacity_rows_ = options.shared_rows;
    } else if (s.status().code() != StatusCode::kUnimplemented) {  // a group across hosts: messages
      return s.status().WithContext("expert exchange");
    }
  }
  return ex;
}

ExpertExchange::ExpertExchange(Group* group, const Placement* placement, int64_t hidden, int top_k,
                               ExchangeOptions options)
    : group_(group),
      own_layout_(std::make_shared<const ExchangeLayout>(*placement)),
      layout_(own_layout_.get()),
      hidden_(hidden),
      top_k_(top_k),
      large_block_rows_((kLargeBlockBytes + hidden * static_cast<int64_t>(sizeof(float)) - 1) /
                        (hidden * static_cast<int64_t>(sizeof(float)))),
      options_(options) {
  expert_.expert_offsets.assign(local_experts().size() + 1, 0);
}

Status ExpertExchange::Use(const ExchangeLayout* layout) {
  if (layout == nullptr) layout = own_layout_.get();
  if (layout == layout_) return Status::Ok();
  if (layout->placement.num_ranks() != group_->size() ||
      layout->placement.num_experts() != own_layout_->placement.num_experts()) {
    return InvalidArgument("expert exchange: a layout for " + std::to_string(layout->placement.num_experts()) +
                           " experts over " + std::to_string(layout->placement.num_ranks()) + " ranks, but this one has " +
                           std::to_string(own_layout_->placement.num_experts()) + " over " +
                           std::to_string(group_->size()));
  }
  layout_ = layout;
  expert_.expert_offsets.assign(local_experts().size() + 1, 0);
  return Status::Ok();
}

Status ExpertExchange::Remember(Status st) {
  if (!st.ok() && failed_.ok()) failed_ = Unavailable("expert exchange unusable after: " + st.message());
  return st;
}

Status ExpertExchange::Dispatch(const float* x, int64_t T, const int32_t* topk_ids, const float* topk_weights,
                                Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  const int R = group_->size(), me = group_->rank(), K = top_k_, E = layout_->placement.num_experts();
  const int L = num_local();
  const int64_t H = hidden_;

  // Bad routing is an internal error, but this rank still takes part in the dispatch and the combine
  // (with no rows) so that its peers do not stall; Combine returns the error.
  Status bad = Status::Ok();
  for (int64_t i = 0; i < T * K && bad.ok(); ++i) {
    if (topk_ids[i] < 0 || topk_ids[i] >= E) {
      bad = Internal("rank " + std::to_string(me) + ": token " + std::to_string(i / K) + " routed to expert " +
                     std::to_string(topk_ids[i]) + ", outside [0, " + std::to_string(E) + ")");
    }
  }
  if (!bad.ok()) T = 0;
  routing_error_ = bad;
  num_tokens_ = T;
  topk_ids_ = topk_ids;
  topk_weights_ = topk_weights;

  // 1. The plan: every (token, choice) row's destination, block and place in the send buffer.
  PlanOrigin(layout_->placement, layout_->blocks, me, topk_ids, T, K, large_block_rows_, &origin_);
  const int64_t row_bytes = H * static_cast<int64_t>(sizeof(float));
  const int64_t S = T * K;
  last_shared_ = false;
  if (shm_ != nullptr) {
    bool fits = false;
    SHOAL_RETURN_IF_ERROR(DispatchShared(x, &fits, deadline));
    if (fits) return Status::Ok();  // else this step goes by messages (every rank decided so)
  }

  // 2. Counts first. Every peer gets one message: the counts of its own experts, followed — when
  //    the rows for it total at most kEagerBytes — by those rows, so that decode-sized steps need no
  //    separate round trip for the counts. The receiver posts a receive of the largest size such a
  //    message can have and reads the counts from its head.
  rows_to_.assign(R, 0);
  for (int d = 0; d < R; ++d) rows_to_[d] = origin_.dest_begin[d + 1] - origin_.dest_begin[d];
  const int64_t eager_words = (kEagerBytes + 7) / 8;
  std::vector<int64_t>& head_send = head_send_;  // word offsets of each peer's message in eager_send_
  head_send.assign(R + 1, 0);
  for (int d = 0; d < R; ++d) {
    const int64_t L_d = layout_->blocks.slot_base[d + 1] - layout_->blocks.slot_base[d];
    head_send[d + 1] = head_send[d] + (d == me ? 0 : L_d + (IsEager(rows_to_[d]) ? (rows_to_[d] * H + 1) / 2 : 0));
  }
  eager_send_.resize(static_cast<size_t>(head_send[R]));
  eager_recv_.resize(static_cast<size_t>(R * (L + eager_words)));
  eager_received_.assign(R, 0);
  sends_.clear();
  recvs_.clear();
  for (int d = 0; d < R; ++d) {
    if (d == me) continue;
    const int64_t L_d = layout_->blocks.slot_base[d + 1] - layout_->blocks.slot_base[d];
    std::copy_n(origin_.send_counts.data() + layout_->blocks.slot_base[d], L_d, eager_send_.data() + head_send[d]);
    sends_.push_back({d, eager_send_.data() + head_send[d], (head_send[d + 1] - head_send[d]) * 8});
    recvs_.push_back({d, eager_recv_.data() + d * (L + eager_words), (L + eager_words) * 8, &eager_received_[d]});
  }
  auto pack_eager = [&](int d) {
    if (d == me || !IsEager(rows_to_[d])) return;
    float* dst = reinterpret_cast<float*>(eager_send_.data() + head_send[d] + (layout_->blocks.slot_base[d + 1] - layout_->blocks.slot_base[d]));
    for (int64_t r = origin_.dest_begin[d]; r < origin_.dest_begin[d + 1]; ++r) {
      std::memcpy(dst + (r - origin_.dest_begin[d]) * H, x + static_cast<int64_t>(origin_.row_token[r]) * H,
                  static_cast<size_t>(row_bytes));
    }
  };
  SHOAL_RETURN_IF_ERROR(Remember(group_->SendRecv(sends_, recvs_, deadline, pack_eager)));
  recv_counts_.assign(static_cast<size_t>(R) * L, 0);
  rows_from_.assign(R, 0);
  for (int src = 0; src < R; ++src) {
    const int64_t* counts =
        src == me ? origin_.send_counts.data() + layout_->blocks.slot_base[me] : eager_recv_.data() + src * (L + eager_words);
    for (int i = 0; i < L; ++i) {
      const int64_t c = counts[i];
      if (c < 0 || c > (int64_t{1} << 31)) {
        return Remember(InvalidArgument("rank " + std::to_string(me) + ": rank " + std::to_string(src) +
                                        " announced " + std::to_string(c) + " rows"));
      }
      recv_counts_[src * L + i] = c;
      rows_from_[src] += c;
    }
    if (src == me) continue;
    const int64_t want = 8 * L + (IsEager(rows_from_[src]) ? rows_from_[src] * row_bytes : 0);
    if (eager_received_[src] != want && eager_received_[src] != (want + 7) / 8 * 8) {
      return Remember(InvalidArgument("rank " + std::to_string(me) + ": rank " + std::to_string(src) + " sent " +
                                      std::to_string(eager_received_[src]) + " bytes where its counts imply " +
                                      std::to_string(want)));
    }
  }

  // 3. Expert-major layout: expert i's rows from origin 0, then origin 1, ...; small blocks from each
  //    origin travel as one message through a staging area, in expert order (for origins whose rows
  //    came with the counts, only on the way back).
  PlanExpertSide(recv_counts_, R, L, me, large_block_rows_, &expert_);
  const int64_t M = expert_.expert_offsets[L];
  expert_rows_.resize(static_cast<size_t>(M * H));
  expert_rows_at_ = expert_rows_.data();
  rows_.resize(static_cast<size_t>(S * H));
  staging_.resize(static_cast<size_t>(expert_.small_begin[R] * H));

  // 4. The remaining rows. Per peer: the coalesced small blocks, then each large block landing in
  //    place. The send side is packed peer by peer just before that peer's messages are posted. Rows
  //    for this rank itself skip the packing: they go from x straight to their expert-major place.
  //    Every rank makes this call, also when all its rows went with the counts.
  sends_.clear();
  recvs_.clear();
  for (int d = 0; d < R; ++d) {
    if (d == me || IsEager(rows_to_[d])) continue;
    sends_.push_back({d, rows_.data() + origin_.dest_begin[d] * H, origin_.small_rows_to[d] * row_bytes});
    for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
      if (IsLarge(origin_.send_counts[b])) sends_.push_back({d, rows_.data() + origin_.send_start[b] * H, origin_.send_counts[b] * row_bytes});
    }
  }
  for (int src = 0; src < R; ++src) {
    if (src == me || IsEager(rows_from_[src])) continue;
    recvs_.push_back({src, staging_.data() + expert_.small_begin[src] * H, (expert_.small_begin[src + 1] - expert_.small_begin[src]) * row_bytes});
    for (int i = 0; i < L; ++i) {
      const int64_t n = recv_counts_[src * L + i];
      if (IsLarge(n)) recvs_.push_back({src, expert_rows_.data() + expert_.recv_start[src * L + i] * H, n * row_bytes});
    }
  }
  auto pack = [&](int d) {
    if (d == me) {
      for (int i = 0; i < L; ++i) {
        const int64_t b = layout_->blocks.slot_base[me] + i;
        float* dst = expert_rows_.data() + expert_.recv_start[me * L + i] * H;
        for (int64_t k = 0; k < origin_.send_counts[b]; ++k) {
          std::memcpy(dst + k * H, x + static_cast<int64_t>(origin_.row_token[origin_.send_start[b] + k]) * H,
                      static_cast<size_t>(row_bytes));
        }
      }
      return;
    }
    if (IsEager(rows_to_[d])) return;
    for (int64_t r = origin_.dest_begin[d]; r < origin_.dest_begin[d + 1]; ++r) {
      std::memcpy(rows_.data() + r * H, x + static_cast<int64_t>(origin_.row_token[r]) * H, static_cast<size_t>(row_bytes));
    }
  };
  SHOAL_RETURN_IF_ERROR(Remember(group_->SendRecv(sends_, recvs_, deadline, pack)));
  MoveSmallBlocks(/*to_experts=*/true);
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.rows_sent += rows_to_[p];
    counters_.rows_received += rows_from_[p];
    counters_.bytes_sent += rows_to_[p] * row_bytes;
    counters_.bytes_received += rows_from_[p] * row_bytes;
  }
  return Status::Ok();
}

Status ExpertExchange::Combine(Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(failed_);
  if (last_shared_) return CombineShared(deadline);
  const int R = group_->size(), me = group_->rank();
  const int L = num_local();
  const int64_t H = hidden_, row_bytes = H * static_cast<int64_t>(sizeof(float));
  // The reverse of Dispatch's blocks: outputs leave from expert-major places and land where the
  // origin packed the rows (rows_, free again now that Dispatch's sends are complete).
  MoveSmallBlocks(/*to_experts=*/false);
  // This rank's own rows: expert-major place → where the origin side expects them.
  for (int i = 0; i < L; ++i) {
    const int64_t b = layout_->blocks.slot_base[me] + i;
    std::memcpy(rows_.data() + origin_.send_start[b] * H, expert_rows_.data() + expert_.recv_start[me * L + i] * H,
                static_cast<size_t>(origin_.send_counts[b] * row_bytes));
  }
  sends_.clear();
  recvs_.clear();
  for (int src = 0; src < R; ++src) {
    if (src == me) continue;
    sends_.push_back({src, staging_.data() + expert_.small_begin[src] * H, (expert_.small_begin[src + 1] - expert_.small_begin[src]) * row_bytes});
    for (int i = 0; i < L; ++i) {
      const int64_t n = recv_counts_[src * L + i];
      if (IsLarge(n)) sends_.push_back({src, expert_rows_.data() + expert_.recv_start[src * L + i] * H, n * row_bytes});
    }
  }
  for (int d = 0; d < R; ++d) {
    if (d == me) continue;
    recvs_.push_back({d, rows_.data() + origin_.dest_begin[d] * H, origin_.small_rows_to[d] * row_bytes});
    for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
      if (IsLarge(origin_.send_counts[b])) recvs_.push_back({d, rows_.data() + origin_.send_start[b] * H, origin_.send_counts[b] * row_bytes});
    }
  }
  SHOAL_RETURN_IF_ERROR(Remember(group_->SendRecv(sends_, recvs_, deadline)));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.bytes_sent += rows_from_[p] * row_bytes;
    counters_.bytes_received += rows_to_[p] * row_bytes;
  }
  return routing_error_;
}

Status ExpertExchange::DispatchShared(const float* x, bool* fits, Deadline deadline) {
  const int R = group_->size(), me = group_->rank();
  const int L = num_local();
  const int64_t H = hidden_, blocks = layout_->blocks.num_blocks();
  const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);
  // 1. This rank's counts for every (rank, local expert) into its header; then everyone's.
  std::copy_n(origin_.send_counts.data(), blocks, reinterpret_cast<int64_t*>(shm_->segment(me)));
  SHOAL_RETURN_IF_ERROR(Remember(shm_->Sync(deadline)));
  shm_counts_.resize(static_cast<size_t>(R * blocks));
  for (int src = 0; src < R; ++src) {
    std::copy_n(reinterpret_cast<const int64_t*>(shm_->segment(src)), blocks, shm_counts_.data() + src * blocks);
  }
  // 2. Every rank's incoming rows against that rank's own segment (sizes may differ between ranks): a
  //    step one segment cannot hold goes by messages, which every rank decides alike.
  bool all_fit = true;
  for (int d = 0; d < R; ++d) {
    int64_t m = 0;
    for (int src = 0; src < R; ++src) {
      for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
        const int64_t c = shm_counts_[src * blocks + b];
        if (c < 0 || c > (int64_t{1} << 31)) {
          return Remember(InvalidArgument("rank " + std::to_string(me) + ": rank " + std::to_string(src) +
                                          " announced " + std::to_string(c) + " rows"));
        }
        m += c;
      }
    }
    const int64_t room = (shm_->bytes(d) - shm_header_bytes_) / (H * static_cast<int64_t>(sizeof(float)));
    all_fit = all_fit && m <= room;
  }
  *fits = all_fit;
  if (!*fits) return Status::Ok();
  last_shared_ = true;
  // 3. Where each of this rank's blocks lands: destination d's rows are expert-major, each local
  //    expert's rows by origin (the layout PlanExpertSide gives the receiver).
  shm_start_.assign(static_cast<size_t>(blocks), 0);
  for (int d = 0; d < R; ++d) {
    int64_t at = 0;
    for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
      for (int src = 0; src < R; ++src) {
        if (src == me) shm_start_[static_cast<size_t>(b)] = at;
        at += shm_counts_[src * blocks + b];
      }
    }
  }
  // 4. Each row once, into its place.
  for (int d = 0; d < R; ++d) {
    float* rows = SharedRows(d);
    for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
      float* dst = rows + shm_start_[static_cast<size_t>(b)] * H;
      const int64_t first = origin_.send_start[b];
      for (int64_t k = 0; k < origin_.send_counts[b]; ++k) {
        std::memcpy(dst + k * H, x + static_cast<int64_t>(origin_.row_token[first + k]) * H, row_bytes);
      }
    }
  }
  SHOAL_RETURN_IF_ERROR(Remember(shm_->Sync(deadline)));
  // 5. This rank's experts run on its own segment.
  recv_counts_.assign(static_cast<size_t>(R) * L, 0);
  rows_to_.assign(R, 0);
  rows_from_.assign(R, 0);
  for (int d = 0; d < R; ++d) rows_to_[d] = origin_.dest_begin[d + 1] - origin_.dest_begin[d];
  for (int src = 0; src < R; ++src) {
    for (int i = 0; i < L; ++i) {
      recv_counts_[src * L + i] = shm_counts_[src * blocks + layout_->blocks.slot_base[me] + i];
      rows_from_[src] += recv_counts_[src * L + i];
    }
  }
  PlanExpertSide(recv_counts_, R, L, me, large_block_rows_, &expert_);
  expert_rows_at_ = SharedRows(me);
  rows_.resize(static_cast<size_t>(origin_.dest_begin[R] * H));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.rows_sent += rows_to_[p];
    counters_.rows_received += rows_from_[p];
    counters_.bytes_sent += rows_to_[p] * static_cast<int64_t>(row_bytes);
    counters_.bytes_received += rows_from_[p] * static_cast<int64_t>(row_bytes);
  }
  return Status::Ok();
}

Status ExpertExchange::CombineShared(Deadline deadline) {
  const int R = group_->size(), me = group_->rank();
  const int64_t H = hidden_;
  // Every rank's experts have written their outputs over their rows; each block comes back whole.
  SHOAL_RETURN_IF_ERROR(Remember(shm_->Sync(deadline)));
  for (int d = 0; d < R; ++d) {
    const float* rows = SharedRows(d);
    for (int64_t b = layout_->blocks.slot_base[d]; b < layout_->blocks.slot_base[d + 1]; ++b) {
      std::memcpy(rows_.data() + origin_.send_start[b] * H, rows + shm_start_[static_cast<size_t>(b)] * H,
                  static_cast<size_t>(origin_.send_counts[b] * H) * sizeof(float));
    }
  }
  const int64_t row_bytes = H * static_cast<int64_t>(sizeof(float));
  for (int p = 0; p < R; ++p) {
    if (p == me) continue;
    counters_.bytes_sent += rows_from_[p] * row_bytes;
    counters_.bytes_received += rows_to_[p] * row_bytes;
  }
  return routing_error_;
}

void ExpertExchange::MoveSmallBlocks(bool to_experts) {
  const int R = group_->size(), L = num_local();
  const size_t H = static_cast<size_t>(hidden_);
  const int64_t eager_words = (kEagerBytes + 7) / 8;
  for (int src = 0; src < R; ++src) {
    if (src == group_->rank()) continue;  // own rows never go through staging
    int64_t at = expert_.small_begin[src];
    // Rows that came with the counts sit in that message, right after its L counts.
    const bool eager = to_experts && IsEager(rows_from_[src]);
    const float* from = eager ? reinterpret_cast<const float*>(eager_recv_.data() + src * (L + eager_words) + L)
                              : staging_.data() + at * H;
    const int64_t from_at = at;
    for (int i = 0; i < L; ++i) {
      const int64_t n = recv_counts_[src * L + i];
      if (n == 0 || IsLarge(n)) continue;
      if (to_experts) {
        std::memcpy(expert_rows_.data() + expert_.recv_start[src * L + i] * H, from + (at - from_at) * H, n * H * sizeof(float));
      } else {
        std::memcpy(staging_.data() + at * H, expert_rows_.data() + expert_.recv_start[src * L + i] * H, n * H * sizeof(float));
      }
      at += n;
    }
  }
}

void ExpertExchange::WeightedSum(float* out) const {
  const int K = top_k_;
  const int64_t H = hidden_;
  for (int64_t t = 0; t < num_tokens_; ++t) {
    float* o = out + t * H;
    std::fill(o, o + H, 0.0f);
    for (int k = 0; k < K; ++k) {
      const int j = origin_.sum_order[t * K + k];
      const float w = topk_weights_[t * K + j];
      const float* y = combined_row(t, j);
      for (int64_t i = 0; i < H; ++i) o[i] += y[i] * w;
    }
  }
}

}  // namespace shoal::comm
