// comm::ExpertExchange: moves token rows to the ranks holding their experts and the results back.
//
// One MoE layer on every rank of a group:
//   Dispatch(x, topk)   origin side: each token's row goes once to every rank that holds at least one
//                       of its top-k experts (not once per expert: with several chosen experts on one
//                       rank the row travels once), with the ids and weights of the experts there.
//                       The per-peer record counts travel first (a small all-to-all), the rows second.
//                       Afterwards this rank's received rows are grouped by local expert:
//                       expert_rows() [num_expert_rows(), H], local expert i owning rows
//                       [expert_offsets()[i], expert_offsets()[i + 1]).
//   (caller)            runs each local expert on its rows and writes expert_out() in the same layout.
//   Combine(out)        expert side: per received row, the weighted sum of its local experts' outputs
//                       (ascending expert id) goes back to its origin — one row per (token, rank), as
//                       DeepEP's combine does; origin side: out[t] = the sum of those partial sums,
//                       taken in ascending order of the experts they cover.
// Numerics: a single process (the group of one) adds a token's K weighted outputs in ascending expert
// order. N ranks add the same terms in the same order but grouped by rank — (a + b) + (c) rather than
// (a + b) + c is the same, a + (b + c) is not — so results agree bit for bit when K ≤ 2 and to float
// rounding (~1e-6 relative) when K ≥ 3. Reducing on the expert side is what halves combine traffic
// when a token's experts share a rank; returning K unreduced rows would make N ranks bit-identical
// to one at up to K× the combine bytes.
//
// Every rank of the group must call Dispatch and Combine for every MoE layer, also with T = 0.
// Replicas: a token's expert is served by Placement::RankFor(expert, key) with key = token + rank,
// which spreads the tokens of every rank over the replicas.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "comm/group.h"
#include "comm/placement.h"
#include "common/deadline.h"
#include "common/status.h"

namespace shoal::comm {

struct ExchangeCounters {
  int64_t rows_sent = 0;      // records this rank dispatched to others (self excluded)
  int64_t rows_received = 0;  // records other ranks dispatched to this rank
  int64_t bytes_sent = 0;     // dispatch + combine payload to other ranks
  int64_t bytes_received = 0;
};

class ExpertExchange {
 public:
  // `group` and `placement` must outlive the exchange; placement.num_ranks() == group->size().
  static StatusOr<ExpertExchange> Create(Group* group, const Placement* placement, int64_t hidden, int top_k);

  // x [T, H]; topk_ids, topk_weights [T, K]. Expert ids must lie in [0, num_experts).
  Status Dispatch(const float* x, int64_t num_tokens, const int32_t* topk_ids, const float* topk_weights,
                  Deadline deadline);

  // After Dispatch: rows this rank must run, grouped by local expert.
  const std::vector<int>& local_experts() const { return local_experts_; }
  std::span<const int64_t> expert_offsets() const { return expert_offsets_; }
  int64_t num_expert_rows() const { return expert_offsets_.back(); }
  const float* expert_rows() const { return expert_rows_.data(); }
  float* expert_out() { return expert_out_.data(); }

  // out [T, H] (T of the last Dispatch) = each token's weighted sum of its top-k experts' outputs.
  Status Combine(float* out, Deadline deadline);

  const ExchangeCounters& counters() const { return counters_; }
  Group& group() const { return *group_; }

 private:
  ExpertExchange(Group* group, const Placement* placement, int64_t hidden, int top_k);
  int64_t record_floats() const { return hidden_ + 2 * top_k_; }
  // Records a failed group call: from then on the exchange refuses to run and leaves its buffers
  // untouched, since an abandoned send may still read them (comm/mpi/mpi_group.h).
  Status Remember(Status st);

  Group* group_;
  const Placement* placement_;
  int64_t hidden_;
  int top_k_;
  std::vector<int> local_experts_;
  std::vector<int> local_index_;  // [E] global expert → index in local_experts_, or -1

  // Origin side of the step in flight.
  int64_t num_tokens_ = 0;
  std::vector<int64_t> send_counts_, recv_counts_;  // records per peer
  std::vector<float> send_buf_, recv_buf_;          // records: H floats, K expert ids, K weights
  std::vector<int64_t> token_records_;              // [T, K] record positions of a token in sum order, -1 pad

  // Expert side.
  std::vector<int64_t> expert_offsets_{0};
  std::vector<float> expert_rows_, expert_out_;
  std::vector<int64_t> record_rows_;     // [M, K] grouped row of each expert slot of a received record
  std::vector<float> record_weights_;    // [M, K]
  std::vector<float> combine_send_, combine_recv_;

  std::vector<int64_t> send_bytes_, recv_bytes_;
  ExchangeCounters counters_;
  Status failed_ = Status::Ok();
};

}  // namespace shoal::comm
