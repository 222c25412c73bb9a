// kv_cache.memory_fraction's arithmetic (worker/memory_budget.h): the KV cache gets the fraction of
// the rank's memory that its weights leave, and a fraction that leaves no room is an error that
// names every number an operator needs.
#include "worker/memory_budget.h"

#include <gtest/gtest.h>

#include "tests/unit/test_files.h"

namespace shoal::testing {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(MemoryBudget, KvGetsTheFractionLessWhatTheRankHolds) {
  auto kv = KvBytesForFraction(0.9, 80 * kGiB, 20 * kGiB, 1 << 20, "GPU 0");
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  EXPECT_EQ(*kv, static_cast<int64_t>(0.9 * 80 * kGiB) - 20 * kGiB);
  auto all = KvBytesForFraction(1.0, 10 * kGiB, 0, 1, "RAM / 1 rank(s) on this node");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, 10 * kGiB);
}

TEST(MemoryBudget, NoRoomNamesTheNumbers) {
  auto r = KvBytesForFraction(0.25, 16 * kGiB, 5 * kGiB, 1 << 20, "GPU 3");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  for (const char* part : {"kv_cache.memory_fraction 0.25", "GPU 3", "16.00 GiB", "4.00 GiB", "5.00 GiB", "1048576 bytes"}) {
    EXPECT_TRUE(MessageHas(r.status(), part)) << part << " in " << r.status().ToString();
  }
  // Room for less than one block is no room either.
  EXPECT_FALSE(KvBytesForFraction(0.5, 4 * kGiB, 2 * kGiB - 100, 4096, "x").ok());
  EXPECT_TRUE(KvBytesForFraction(0.5, 4 * kGiB, 2 * kGiB - 4096, 4096, "x").ok());
}

TEST(MemoryBudget, RejectsBadFractionsAndUnknownMemory) {
  for (double f : {0.0, -0.1, 1.01}) EXPECT_FALSE(KvBytesForFraction(f, kGiB, 0, 1, "x").ok()) << f;
  auto unknown = KvBytesForFraction(0.5, 0, 0, 1, "RAM");
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(MessageHas(unknown.status(), "kv_cache.memory_mib")) << unknown.status().ToString();
}

TEST(MemoryBudget, HostMemoryIsKnownHere) {
  // Linux always reports physical memory; a cgroup limit can only lower it.
  EXPECT_GT(HostMemoryBytes(), int64_t{64} << 20);
}

}  // namespace
}  // namespace shoal::testing
