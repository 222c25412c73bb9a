#include "model/tensor_parallel_weights.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

namespace shoal {

namespace {

// Columns [c0, c0 + n) of every row, copied into a buffer `w` owns (only those bytes are read).
kernels::Matrix ColumnSlice(const kernels::Matrix& m, int64_t c0, int64_t n, ModelWeights* w) {
  const size_t elem = DTypeSize(m.dtype);
  auto buf = std::make_unique<uint8_t[]>(static_cast<size_t>(m.rows * n) * elem);
  const auto* src = static_cast<const uint8_t*>(m.data);
  for (int64_t r = 0; r < m.rows; ++r) {
    std::memcpy(buf.get() + static_cast<size_t>(r * n) * elem, src + static_cast<size_t>(r * m.cols + c0) * elem,
                static_cast<size_t>(n) * elem);
  }
  kernels::Matrix out{m.dtype, buf.get(), m.rows, n};
  w->owned.push_back(std::move(buf));
  return out;
}

std::vector<float> VecSlice(const std::vector<float>& v, int64_t b, int64_t n) {
  if (v.empty()) return v;
  return std::vector<float>(v.begin() + b, v.begin() + b + n);
}

// A SiLU-gated MLP: gate/up rows and down columns of this rank's intermediate range.
void SliceFfn(TpShard shard, FfnWeights* f, ModelWeights* w) {
  if (!f->present()) return;
  const IndexRange r = SplitRange(f->gate.rows, shard);
  f->gate = f->gate.RowSlice(r.begin, r.size);
  f->up = f->up.RowSlice(r.begin, r.size);
  f->down = ColumnSlice(f->down, r.begin, r.size, w);
}

}  // namespace

IndexRange SplitRange(int64_t n, TpShard shard) {
  const int64_t chunk = (n + shard.size - 1) / shard.size;
  const int64_t b = std::min(n, shard.rank * chunk), e = std::min(n, (shard.rank + 1) * chunk);
  return {b, e - b};
}

Status CheckTensorParallel(const ModelConfig& c, int tp) {
  const std::string what = "parallel.attention_tp " + std::to_string(tp);
  if (tp < 1) return InvalidArgument(what + ": must be at least 1");
  if (tp == 1) return Status::Ok();
  if (c.fp8_weights) return Unimplemented(what + ": FP8 checkpoints are not split across tensor-parallel ranks yet");
  if (c.num_heads % tp != 0) {
    return InvalidArgument(what + " does not divide the model's " + std::to_string(c.num_heads) + " attention heads");
  }
  if (!c.mla && c.num_kv_heads % tp != 0 && tp % c.num_kv_heads != 0) {
    return InvalidArgument(what + ": the model's " + std::to_string(c.num_kv_heads) +
                           " kv heads must be a multiple or a divisor of it");
  }
  return Status::Ok();
}

ModelConfig TensorParallelAttentionConfig(const ModelConfig& c, int tp) {
  ModelConfig local = c;
  if (tp <= 1) return local;
  local.num_heads = c.num_heads / tp;
  local.num_kv_heads = std::max(1, c.num_kv_heads / tp);
  return local;
}

Status SliceForTensorParallel(const ModelConfig& c, TpShard shard, ModelWeights* w) {
  if (shard.size <= 1) return Status::Ok();
  SHOAL_RETURN_IF_ERROR(CheckTensorParallel(c, shard.size));
  const bool tied = w->lm_head.data == w->embed.data;
  const IndexRange vocab = SplitRange(c.vocab_size, shard);
  w->embed = w->embed.RowSlice(vocab.begin, vocab.size);
  w->lm_head = tied ? w->embed : w->lm_head.RowSlice(vocab.begin, vocab.size);

  const int64_t q_heads = c.num_heads / shard.size, h0 = shard.rank * q_heads;
  if (c.mla) {
    // Per head: qk = nope + rope rows of q_proj / q_b_proj, nope + v rows of kv_b_proj (W_UK, then
    // W_UV), v columns of o_proj. q_a and kv_a (shared by every head) and the latent cache stay whole.
    const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim, kvb = c.qk_nope_head_dim + c.v_head_dim;
    for (LayerWeights& L : w->layers) {
      if (!L.q.empty()) L.q = L.q.RowSlice(h0 * qk, q_heads * qk);
      if (!L.q_b.empty()) L.q_b = L.q_b.RowSlice(h0 * qk, q_heads * qk);
      L.kv_b = L.kv_b.RowSlice(h0 * kvb, q_heads * kvb);
      L.o = ColumnSlice(L.o, h0 * c.v_head_dim, q_heads * c.v_head_dim, w);
      SliceFfn(shard, &L.shared_expert, w);
      SliceFfn(shard, &L.dense_mlp, w);
    }
    return Status::Ok();
  }
  const int64_t hd = c.head_dim;
  const int64_t q0 = shard.rank * q_heads * hd, qn = q_heads * hd;
  // kv heads: kv / T each, or the one head this rank's q heads read (replicated on T / kv ranks).
  const int64_t kv_heads = std::max(1, c.num_kv_heads / shard.size);
  const int64_t kv_first = c.num_kv_heads >= shard.size ? shard.rank * kv_heads
                                                       : shard.rank / (shard.size / c.num_kv_heads);
  const int64_t k0 = kv_first * hd, kn = kv_heads * hd;
  for (LayerWeights& L : w->layers) {
    L.q = L.q.RowSlice(q0, qn);
    L.k = L.k.RowSlice(k0, kn);
    L.v = L.v.RowSlice(k0, kn);
    L.o = ColumnSlice(L.o, q0, qn, w);
    L.q_bias = VecSlice(L.q_bias, q0, qn);
    L.k_bias = VecSlice(L.k_bias, k0, kn);
    L.v_bias = VecSlice(L.v_bias, k0, kn);
    SliceFfn(shard, &L.shared_expert, w);
    SliceFfn(shard, &L.dense_mlp, w);
  }
  return Status::Ok();
}

}  // namespace shoal
