// Tensor-parallel replicas (comm/tensor_parallel.h): which ranks form a replica, from the hosts they
// run on. The collectives over the replicas run in tests/mpi/comm_test.cc.
#include "comm/tensor_parallel.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace shoal::comm
