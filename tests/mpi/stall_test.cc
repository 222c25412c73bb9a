// A stalled rank must not hang the others: they get DeadlineExceeded within the deadline, naming the
// rank they waited for, and the broken group refuses further use at once. Runs at N = 3: the last
// rank stalls (sleeps through the deadline) before joining.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "comm/expert_exchange.h"
#include "comm/placement.h"
#include "tests/mpi/mpi_test_main.h"

namespace shoal::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDeadlineMs = 400;
// The stalled rank joins this long after the others gave up.
constexpr int kStallMs = 3 * kDeadlineMs;
// How far past the deadline a call may return: polling interval plus scheduling on 2 shared cores.
constexpr int kSlackMs = 400;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

TEST(Stall, AllToAllTimesOutOnTheWaitingRanks) {
  auto g = NewWorldGroup();
  ASSERT_TRUE(g);
  ASSERT_GE(g->size(), 2) << "run with mpirun -np 2 or more";
  const int staller = g->size() - 1;
  std::vector<int64_t> bytes(g->size(), 64);
  std::vector<uint8_t> send(64 * g->size(), 1), recv(send.size());
  if (g->rank() == staller) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kStallMs));
    // Late: whatever this returns, it must return (its own deadline bounds it).
    const auto t0 = Clock::now();
    (void)g->AllToAllV(send.data(), bytes, recv.data(), bytes, Deadline::AfterMs(kDeadlineMs));
    EXPECT_LT(MsSince(t0), kDeadlineMs + kSlackMs);
    return;
  }
  const auto t0 = Clock::now();
  Status st = g->AllToAllV(send.data(), bytes, recv.data(), bytes, Deadline::AfterMs(kDeadlineMs));
  const double ms = MsSince(t0);
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_NE(st.message().find("ranks " + std::to_string(staller)), std::string::npos) << st.ToString();
  EXPECT_GE(ms, kDeadlineMs - 5);
  EXPECT_LT(ms, kDeadlineMs + kSlackMs);
  // The group is now unusable, and says so immediately.
  const auto t1 = Clock::now();
  std::vector<int64_t> v = {1};
  Status again = g->AllReduceSum(v, Deadline::AfterMs(kDeadlineMs));
  EXPECT_EQ(again.code(), StatusCode::kUnavailable) << again.ToString();
  EXPECT_LT(MsSince(t1), 50.0);
}

TEST(Stall, BarrierAndAllReduceTimeOut) {
  for (int which = 0; which < 3; ++which) {
    auto g = NewWorldGroup();
    ASSERT_TRUE(g);
    const int staller = g->size() - 1;
    std::vector<int64_t> v = {1};
    std::vector<float> activations(1000, 1.0f);  // which == 2: the tensor-parallel all-reduce
    auto call = [&] {
      if (which == 2) return g->AllReduceSumF32(activations, Deadline::AfterMs(kDeadlineMs));
      return which == 0 ? g->Barrier(Deadline::AfterMs(kDeadlineMs)) : g->AllReduceSum(v, Deadline::AfterMs(kDeadlineMs));
    };
    if (g->rank() == staller) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kStallMs));
      (void)call();
      continue;
    }
    const auto t0 = Clock::now();
    Status st = call();
    EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
    EXPECT_NE(st.message().find("ranks " + std::to_string(staller)), std::string::npos) << st.ToString();
    EXPECT_LT(MsSince(t0), kDeadlineMs + kSlackMs);
  }
}

// The same through the expert exchange, as the engine uses it: the dispatch of the ranks that are on
// time fails within the deadline.
TEST(Stall, DispatchTimesOut) {
  auto g = NewWorldGroup();
  ASSERT_TRUE(g);
  auto placement = Placement::Balanced(4, g->size());
  auto ex = comm::ExpertExchange::Create(g.get(), &*placement, 8, 2);
  ASSERT_TRUE(ex.ok());
  std::vector<float> x(8, 1.0f), w = {0.5f, 0.5f};
  std::vector<int32_t> ids = {0, 3};
  if (g->rank() == g->size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(kStallMs));
  const auto t0 = Clock::now();
  Status st = ex->Dispatch(x.data(), 1, ids.data(), w.data(), Deadline::AfterMs(kDeadlineMs));
  if (g->rank() == g->size() - 1) return;
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_LT(MsSince(t0), kDeadlineMs + kSlackMs);
  // The exchange refuses further steps at once.
  Status again = ex->Dispatch(x.data(), 1, ids.data(), w.data(), Deadline::AfterMs(kDeadlineMs));
  EXPECT_EQ(again.code(), StatusCode::kUnavailable) << again.ToString();
}

// Through the shared window: its syncs are the group's barrier, with the same deadline.
TEST(Stall, SharedMemoryDispatchTimesOut) {
  auto g = NewWorldGroup();
  ASSERT_TRUE(g);
  auto placement = Placement::Balanced(4, g->size());
  auto ex = comm::ExpertExchange::Create(g.get(), &*placement, 8, 2, {.shared_memory = true, .shared_rows = 64});
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  std::vector<float> x(8, 1.0f), w = {0.5f, 0.5f};
  std::vector<int32_t> ids = {0, 3};
  if (g->rank() == g->size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(kStallMs));
  const auto t0 = Clock::now();
  Status st = ex->Dispatch(x.data(), 1, ids.data(), w.data(), Deadline::AfterMs(kDeadlineMs));
  if (g->rank() == g->size() - 1) {
    // The late rank's group may look whole to it, and freeing a window is collective: the peers that
    // gave up will never join, so its window is left to the process's end, as a failed worker's is.
    new comm::ExpertExchange(std::move(*ex));
    g.release();
    return;
  }
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_LT(MsSince(t0), kDeadlineMs + kSlackMs);
  EXPECT_EQ(ex->Dispatch(x.data(), 1, ids.data(), w.data(), Deadline::AfterMs(kDeadlineMs)).code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace shoal::testing
