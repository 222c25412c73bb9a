#include "comm/nccl/exchange_plan.h"

#include <string>

namespace shoal::comm {

namespace {

// A run of rows: [begin, begin + count).
struct Rows {
  int64_t begin = 0;
  int64_t count = 0;
};

// Ranks in rank_first, or -1 when it cannot describe any placement.
int RanksOf(std::span<const int> rank_first) {
  if (rank_first.size() < 2 || rank_first.front() != 0) return -1;
  for (size_t r = 1; r < rank_first.size(); ++r) {
    if (rank_first[r] < rank_first[r - 1]) return -1;
  }
  return static_cast<int>(rank_first.size()) - 1;
}

// The checks every plan shares: a usable rank_first, `rank` inside it, and the offsets spans sized for
// this placement (a mismatch would make the plan read past a table).
Status CheckShape(const char* what, int rank, std::span<const int> rank_first, size_t expert_offsets,
                  size_t block_offsets) {
  const int R = RanksOf(rank_first);
  const std::string who = std::string(what) + " (rank " + std::to_string(rank) + "): ";
  if (R < 1) return InvalidArgument(who + "the expert ranges do not start at 0 and increase");
  if (rank < 0 || rank >= R) return InvalidArgument(who + "rank outside a group of " + std::to_string(R));
  const size_t E = static_cast<size_t>(rank_first[R]);
  const size_t L = static_cast<size_t>(rank_first[rank + 1] - rank_first[rank]);
  if (expert_offsets != E + 1 || block_offsets != static_cast<size_t>(R) * L + 1) {
    return InvalidArgument(who + "got " + std::to_string(expert_offsets) + " expert offsets and " +
                           std::to_string(block_offsets) + " block offsets, expected " + std::to_string(E + 1) +
                           " and " + std::to_string(static_cast<size_t>(R) * L + 1));
  }
  return Status::Ok();
}

// Fills `plan` with one block per peer and direction: to peer p the rows out(p) of `src`, from peer p
// the rows in(p) into `dst`; this rank's own pair becomes a self copy.
template <class OutRows, class InRows>
Status PlanMoves(const char* what, int rank, int R, const OutRows& out, const InRows& in, const void* src, void* dst,
                 int64_t row_bytes, TransferPlan* plan) {
  plan->sends.clear();
  plan->recvs.clear();
  plan->self_copies.clear();
  plan->bytes_to_peers = 0;
  plan->bytes_from_peers = 0;
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(dst);
  for (int p = 0; p < R; ++p) {
    const Rows o = out(p), i = in(p);
    if (p == rank) {
      // Both counts come from this rank's own send counts (the self pair of the counts exchange), so
      // they differ only through a bug; copying then would run past the smaller block.
      if (o.count != i.count) {
        return Internal(std::string(what) + " (rank " + std::to_string(rank) + "): sends itself " +
                        std::to_string(o.count) + " rows but expects " + std::to_string(i.count));
      }
      if (o.count > 0) {
        plan->self_copies.push_back({d + i.begin * row_bytes, s + o.begin * row_bytes, o.count * row_bytes});
      }
      continue;
    }
    // Pointers are formed only for non-empty blocks: an empty buffer's base may be null.
    if (o.count > 0) {
      plan->sends.push_back({p, s + o.begin * row_bytes, o.count * row_bytes});
      plan->bytes_to_peers += o.count * row_bytes;
    }
    if (i.count > 0) {
      plan->recvs.push_back({p, d + i.begin * row_bytes, i.count * row_bytes});
      plan->bytes_from_peers += i.count * row_bytes;
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<int>> ContiguousExpertRanges(int num_experts, std::span<const std::vector<int>> local_experts) {
  const int R = static_cast<int>(local_experts.size());
  if (num_experts < 1 || R < 1) {
    return InvalidArgument("expert placement: need at least one expert and one rank, got " +
                           std::to_string(num_experts) + " experts and " + std::to_string(R) + " ranks");
  }
  std::vector<int> holder(static_cast<size_t>(num_experts), -1);
  for (int r = 0; r < R; ++r) {
    for (int e : local_experts[r]) {
      if (e < 0 || e >= num_experts) {
        return InvalidArgument("expert placement: rank " + std::to_string(r) + " holds expert " + std::to_string(e) +
                               ", outside [0, " + std::to_string(num_experts) + ")");
      }
      if (holder[e] != -1) {
        return Unimplemented("expert placement: expert " + std::to_string(e) + " is held by ranks " +
                             std::to_string(holder[e]) + " and " + std::to_string(r) +
                             "; the GPU expert exchange supports placements without replicas only");
      }
      holder[e] = r;
    }
  }
  for (int e = 0; e < num_experts; ++e) {
    if (holder[e] == -1) return InvalidArgument("expert placement: no rank holds expert " + std::to_string(e));
  }
  // Every expert is held once; the rows for one destination are contiguous in the expert-major order
  // only if the ranks' lists, read in rank order, count 0, 1, ..., E-1.
  std::vector<int> first(static_cast<size_t>(R) + 1, 0);
  int next = 0;
  for (int r = 0; r < R; ++r) {
    first[r] = next;
    for (int e : local_experts[r]) {
      if (e != next) {
        return Unimplemented("expert placement: rank " + std::to_string(r) + " holds expert " + std::to_string(e) +
                             " where expert " + std::to_string(next) +
                             " was due; the GPU expert exchange needs every rank's experts to be one contiguous "
                             "increasing range, the ranges in rank order (as Placement::Balanced gives them)");
      }
      ++next;
    }
  }
  first[R] = next;
  return first;
}

StatusOr<std::vector<int>> ContiguousExpertRanges(const Placement& placement) {
  std::vector<std::vector<int>> local(static_cast<size_t>(placement.num_ranks()));
  for (int r = 0; r < placement.num_ranks(); ++r) local[r] = placement.local_experts(r);
  return ContiguousExpertRanges(placement.num_experts(), local);
}

Status CheckContiguousPlacement(const Placement& placement) { return ContiguousExpertRanges(placement).status(); }

Status SendCountsFromOffsets(std::span<const int64_t> expert_offsets, std::span<const int> rank_first,
                             int64_t expected_rows, std::span<int64_t> per_expert, std::vector<int64_t>* per_dest) {
  const int R = RanksOf(rank_first);
  if (R < 1) return InvalidArgument("send counts: the expert ranges do not start at 0 and increase");
  const size_t E = static_cast<size_t>(rank_first[R]);
  if (expert_offsets.size() != E + 1 || per_expert.size() != E) {
    return InvalidArgument("send counts: " + std::to_string(expert_offsets.size()) + " offsets and " +
                           std::to_string(per_expert.size()) + " count slots for " + std::to_string(E) + " experts");
  }
  if (expert_offsets[0] != 0 || expert_offsets[E] != expected_rows) {
    return InvalidArgument("send counts: expert row offsets run from " + std::to_string(expert_offsets[0]) + " to " +
                           std::to_string(expert_offsets[E]) + ", expected 0 to " + std::to_string(expected_rows) +
                           " (an expert id outside [0, " + std::to_string(E) + ") drops its row)");
  }
  for (size_t e = 0; e < E; ++e) {
    const int64_t n = expert_offsets[e + 1] - expert_offsets[e];
    if (n < 0) {
      return InvalidArgument("send counts: expert row offsets decrease at expert " + std::to_string(e));
    }
    per_expert[e] = n;
  }
  per_dest->assign(static_cast<size_t>(R), 0);
  for (int r = 0; r < R; ++r) (*per_dest)[r] = expert_offsets[rank_first[r + 1]] - expert_offsets[rank_first[r]];
  return Status::Ok();
}

Status BuildBlockOffsets(std::span<const int64_t> recv_counts, std::vector<int64_t>* offsets) {
  offsets->assign(recv_counts.size() + 1, 0);
  for (size_t b = 0; b < recv_counts.size(); ++b) {
    if (recv_counts[b] < 0) {
      return InvalidArgument("block offsets: block " + std::to_string(b) + " has " + std::to_string(recv_counts[b]) +
                             " rows");
    }
    (*offsets)[b + 1] = (*offsets)[b] + recv_counts[b];
  }
  return Status::Ok();
}

Status PlanCountsExchange(int rank, std::span<const int> rank_first, const int64_t* send_counts, int64_t* recv_counts,
                          TransferPlan* plan) {
  const int R = RanksOf(rank_first);
  if (R < 1 || rank < 0 || rank >= R) {
    return InvalidArgument("counts exchange: rank " + std::to_string(rank) + " does not fit the expert ranges");
  }
  const int64_t L = rank_first[rank + 1] - rank_first[rank];
  // One count per expert of the peer out, one per own expert in: the counts act as rows of one int64.
  auto out = [&](int p) { return Rows{rank_first[p], rank_first[p + 1] - rank_first[p]}; };
  auto in = [&](int p) { return Rows{p * L, L}; };
  return PlanMoves("counts exchange", rank, R, out, in, send_counts, recv_counts, sizeof(int64_t), plan);
}

Status PlanDispatch(int rank, std::span<const int> rank_first, std::span<const int64_t> expert_offsets,
                    std::span<const int64_t> block_offsets, const void* send_rows, void* recv_rows, int64_t row_bytes,
                    TransferPlan* plan) {
  SHOAL_RETURN_IF_ERROR(CheckShape("dispatch", rank, rank_first, expert_offsets.size(), block_offsets.size()));
  const int R = static_cast<int>(rank_first.size()) - 1;
  const int64_t L = rank_first[rank + 1] - rank_first[rank];
  auto to = [&](int p) {
    const int64_t b = expert_offsets[rank_first[p]];
    return Rows{b, expert_offsets[rank_first[p + 1]] - b};
  };
  auto from = [&](int p) {
    const int64_t b = block_offsets[p * L];
    return Rows{b, block_offsets[(p + 1) * L] - b};
  };
  return PlanMoves("dispatch", rank, R, to, from, send_rows, recv_rows, row_bytes, plan);
}

Status PlanCombine(int rank, std::span<const int> rank_first, std::span<const int64_t> expert_offsets,
                   std::span<const int64_t> block_offsets, const void* expert_out, void* combined, int64_t row_bytes,
                   TransferPlan* plan) {
  SHOAL_RETURN_IF_ERROR(CheckShape("combine", rank, rank_first, expert_offsets.size(), block_offsets.size()));
  const int R = static_cast<int>(rank_first.size()) - 1;
  const int64_t L = rank_first[rank + 1] - rank_first[rank];
  // The dispatch's receive runs are now the send runs, and its send runs the receive runs.
  auto to = [&](int p) {
    const int64_t b = block_offsets[p * L];
    return Rows{b, block_offsets[(p + 1) * L] - b};
  };
  auto from = [&](int p) {
    const int64_t b = expert_offsets[rank_first[p]];
    return Rows{b, expert_offsets[rank_first[p + 1]] - b};
  };
  return PlanMoves("combine", rank, R, to, from, expert_out, combined, row_bytes, plan);
}

}  // namespace shoal::comm
