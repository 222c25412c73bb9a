// Tensor-parallel replicas (comm/tensor_parallel.h): which ranks form a replica, from the hosts they
// run on. The collectives over the replicas run in tests/mpi/comm_test.cc.
#include "comm/tensor_parallel.h"

#include <gtest/gtest.h>

#include "model/tensor_parallel_weights.h"
#include "tests/unit/test_files.h"

namespace shoal::comm {
namespace {

std::vector<std::pair<int, int>> Slots(const std::vector<std::string>& hosts, int tp, bool* cross) {
  auto s = AssignReplicas(hosts, tp, cross);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  std::vector<std::pair<int, int>> out;
  for (const ReplicaSlot& x : *s) out.emplace_back(x.replica, x.tp_rank);
  return out;
}

TEST(TensorParallel, ReplicasStayOnTheirNode) {
  bool cross = true;
  using V = std::vector<std::pair<int, int>>;
  EXPECT_EQ(Slots({"a", "a", "b", "b"}, 2, &cross), (V{{0, 0}, {0, 1}, {1, 0}, {1, 1}}));
  EXPECT_FALSE(cross);
  // Ranks interleaved over the hosts (a launcher's round robin): still grouped by host.
  EXPECT_EQ(Slots({"a", "b", "a", "b"}, 2, &cross), (V{{0, 0}, {1, 0}, {0, 1}, {1, 1}}));
  EXPECT_FALSE(cross);
  // 3 ranks on one host, 1 on another: one replica must span both, and says so.
  EXPECT_EQ(Slots({"a", "a", "a", "b"}, 2, &cross), (V{{0, 0}, {0, 1}, {1, 0}, {1, 1}}));
  EXPECT_TRUE(cross);
  // T = 1: every rank its own replica (today's data-parallel attention); T = N: one replica.
  EXPECT_EQ(Slots({"a", "b", "c"}, 1, &cross), (V{{0, 0}, {1, 0}, {2, 0}}));
  EXPECT_FALSE(cross);
  EXPECT_EQ(Slots({"a", "a", "a", "a"}, 4, &cross), (V{{0, 0}, {0, 1}, {0, 2}, {0, 3}}));
}

TEST(TensorParallel, TpMustDivideTheGroup) {
  bool cross = false;
  const std::vector<std::string> hosts = {"a", "a", "a", "a"};
  for (int tp : {0, 3, 8}) {
    auto s = AssignReplicas(hosts, tp, &cross);
    ASSERT_FALSE(s.ok()) << tp;
    EXPECT_TRUE(testing::MessageHas(s.status(), "does not divide the group's 4 ranks")) << s.status().ToString();
  }
}

TEST(TensorParallelWeights, SplitRangeCoversEveryIndexOnce) {
  for (int64_t n : {0, 1, 7, 320, 424}) {
    for (int t : {1, 2, 3, 4, 8}) {
      int64_t next = 0;
      for (int r = 0; r < t; ++r) {
        const IndexRange x = SplitRange(n, {r, t});
        EXPECT_EQ(x.begin, next) << n << " / " << t;
        EXPECT_LE(x.size, (n + t - 1) / t);
        next = x.begin + x.size;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(TensorParallelWeights, RefusesWhatCannotBeSplit) {
  ModelConfig c;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  EXPECT_TRUE(CheckTensorParallel(c, 2).ok());
  EXPECT_TRUE(CheckTensorParallel(c, 4).ok());  // kv heads replicated on 2 ranks each
  EXPECT_TRUE(CheckTensorParallel(c, 8).ok());
  EXPECT_EQ(CheckTensorParallel(c, 3).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTensorParallel(c, 0).code(), StatusCode::kInvalidArgument);
  c.num_kv_heads = 3;
  c.num_heads = 12;
  EXPECT_EQ(CheckTensorParallel(c, 4).code(), StatusCode::kInvalidArgument);  // 3 kv heads over 4 ranks
  c.fp8_weights = true;
  EXPECT_EQ(CheckTensorParallel(c, 2).code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(CheckTensorParallel(c, 1).ok());
  const ModelConfig local = TensorParallelAttentionConfig(ModelConfig{.num_heads = 8, .num_kv_heads = 2}, 4);
  EXPECT_EQ(local.num_heads, 2);
  EXPECT_EQ(local.num_kv_heads, 1);
}

// The slices put back together are the whole: q and k/v rows by heads, o and down columns, vocabulary rows.
TEST(TensorParallelWeights, SlicesReassembleTheWholeTensors) {
  ModelConfig c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.num_layers = 1;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 2;
  c.intermediate_size = 6;
  c.layer_is_moe = {false};
  const ModelWeights whole = MakeSyntheticWeights(c, DType::kF32, 7);
  auto at = [](const kernels::Matrix& m, int64_t r, int64_t col) {
    return static_cast<const float*>(m.data)[r * m.cols + col];
  };
  for (int t : {2, 4}) {
    for (int r = 0; r < t; ++r) {
      ModelWeights w = MakeSyntheticWeights(c, DType::kF32, 7);
      ASSERT_TRUE(SliceForTensorParallel(c, {r, t}, &w).ok());
      const LayerWeights &L = w.layers[0], &W = whole.layers[0];
      const int64_t qn = c.q_dim() / t;
      ASSERT_EQ(L.q.rows, qn);
      ASSERT_EQ(L.o.cols, qn);
      for (int64_t i = 0; i < qn; ++i) {
        EXPECT_EQ(at(L.q, i, 3), at(W.q, r * qn + i, 3));
        EXPECT_EQ(at(L.o, 5, i), at(W.o, 5, r * qn + i));
      }
      // kv: at T = 4 two ranks share each of the 2 kv heads (q heads 0,1 read kv head 0).
      const int64_t kv_head = t == 2 ? r : r / 2;
      ASSERT_EQ(L.k.rows, c.head_dim);
      EXPECT_EQ(at(L.k, 1, 0), at(W.k, kv_head * c.head_dim + 1, 0));
      EXPECT_EQ(at(L.v, 0, 2), at(W.v, kv_head * c.head_dim, 2));
      const IndexRange inter = SplitRange(6, {r, t}), vocab = SplitRange(11, {r, t});
      ASSERT_EQ(L.dense_mlp.gate.rows, inter.size);
      ASSERT_EQ(L.dense_mlp.down.cols, inter.size);
      for (int64_t i = 0; i < inter.size; ++i) {
        EXPECT_EQ(at(L.dense_mlp.up, i, 1), at(W.dense_mlp.up, inter.begin + i, 1));
        EXPECT_EQ(at(L.dense_mlp.down, 7, i), at(W.dense_mlp.down, 7, inter.begin + i));
      }
      ASSERT_EQ(w.embed.rows, vocab.size);
      if (vocab.size > 0) EXPECT_EQ(at(w.lm_head, vocab.size - 1, 0), at(whole.lm_head, vocab.end() - 1, 0));
    }
  }
}

}  // namespace
}  // namespace shoal::comm
