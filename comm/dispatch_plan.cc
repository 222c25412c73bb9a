#include "comm/dispatch_plan.h"

#include <algorithm>

namespace shoal::comm {

BlockTable BlockTable::For(const Placement& placement) {
  const int R = placement.num_ranks(), E = placement.num_experts();
  BlockTable t;
  t.slot_on.assign(R, std::vector<int>(E, -1));
  t.slot_base.assign(R + 1, 0);
  for (int r = 0; r < R; ++r) {
    const std::vector<int>& held = placement.local_experts(r);
    for (size_t i = 0; i < held.size(); ++i) t.slot_on[r][held[i]] = static_cast<int>(i);
    t.slot_base[r + 1] = t.slot_base[r] + static_cast<int64_t>(held.size());
  }
  return t;
}

void PlanOrigin(const Placement& placement, const BlockTable& blocks, int rank, const int32_t* topk_ids, int64_t T,
                int K, int64_t large_block_rows, OriginPlan* p) {
  const int R = placement.num_ranks();
  const int64_t S = T * K;
  // Route every (token, choice) to its block; count rows per block.
  p->block_of.resize(static_cast<size_t>(S));
  p->send_counts.assign(blocks.num_blocks(), 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int e = topk_ids[t * K + j];
      const int dest = placement.RankFor(e, t + rank);
      const auto b = static_cast<int32_t>(blocks.slot_base[dest] + blocks.slot_on[dest][e]);
      p->block_of[t * K + j] = b;
      ++p->send_counts[b];
    }
  }
  // Per destination: small blocks, then large ones, each in expert order.
  p->send_start.assign(blocks.num_blocks(), 0);
  p->dest_begin.assign(R + 1, 0);
  p->small_rows_to.assign(R, 0);
  int64_t n = 0;
  for (int d = 0; d < R; ++d) {
    p->dest_begin[d] = n;
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t b = blocks.slot_base[d]; b < blocks.slot_base[d + 1]; ++b) {
        if ((p->send_counts[b] >= large_block_rows) != (pass == 1)) continue;
        p->send_start[b] = n;
        n += p->send_counts[b];
        if (pass == 0) p->small_rows_to[d] += p->send_counts[b];
      }
    }
  }
  p->dest_begin[R] = n;
  // Rows in token order within each block.
  p->row_of.resize(static_cast<size_t>(S));
  p->row_token.resize(static_cast<size_t>(S));
  p->cursor.assign(p->send_start.begin(), p->send_start.end());
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int64_t r = p->cursor[p->block_of[t * K + j]]++;
      p->row_of[t * K + j] = r;
      p->row_token[r] = static_cast<int32_t>(t);
    }
  }
  // A token's outputs are added in ascending expert id, the single-process order.
  p->sum_order.resize(static_cast<size_t>(S));
  for (int64_t t = 0; t < T; ++t) {
    int8_t* o = p->sum_order.data() + t * K;
    for (int j = 0; j < K; ++j) o[j] = static_cast<int8_t>(j);
    std::sort(o, o + K, [&](int8_t a, int8_t b) { return topk_ids[t * K + a] < topk_ids[t * K + b]; });
  }
}

void PlanExpertSide(std::span<const int64_t> recv_counts, int R, int L, int rank, int64_t large_block_rows,
                    ExpertPlan* p) {
  p->expert_offsets.assign(L + 1, 0);
  p->recv_start.assign(static_cast<size_t>(R) * L, 0);
  for (int i = 0; i < L; ++i) {
    int64_t n = p->expert_offsets[i];
    for (int src = 0; src < R; ++src) {
      p->recv_start[src * L + i] = n;
      n += recv_counts[src * L + i];
    }
    p->expert_offsets[i + 1] = n;
  }
  p->small_begin.assign(R + 1, 0);
  for (int src = 0; src < R; ++src) {
    int64_t n = 0;
    for (int i = 0; i < L && src != rank; ++i) {
      const int64_t c = recv_counts[src * L + i];
      n += c >= large_block_rows ? 0 : c;
    }
    p->small_begin[src + 1] = p->small_begin[src] + n;
  }
}

}  // namespace shoal::comm
