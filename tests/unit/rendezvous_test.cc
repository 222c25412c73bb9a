// The rendezvous of groups launched without MPI: the coordinator's bookkeeping (coordinator/
// rendezvous.h) and the whole exchange over real sockets — an in-process coordinator and worker ranks
// on threads using the client the worker uses (control/rendezvous_client.h).
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "control/rendezvous_client.h"
#include "coordinator/coordinator.h"
#include "coordinator/rendezvous.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/live_coordinator.h"
#include "tests/unit/test_files.h"

namespace shoal {
namespace {

using coord::RendezvousTable;
using testing::LiveCoordinator;
using testing::MessageHas;

using Clock = RendezvousTable::Clock;
using std::chrono::seconds;

TEST(RendezvousTable, EveryRankGetsRankZerosIdOnce) {
  RendezvousTable t(seconds(60));
  const Clock::time_point now = Clock::now();
  auto early = t.Take("g", 1, 3, now);
  ASSERT_TRUE(early.ok());
  EXPECT_FALSE(early->has_value()) << "nothing posted yet: wait";
  ASSERT_TRUE(t.Post("g", 3, "id-1", now).ok());
  EXPECT_EQ(t.Take("g", 2, 3, now)->value(), "id-1");
  // A rank that already has this id restarted: it must wait for rank 0's next post.
  EXPECT_FALSE(t.Take("g", 2, 3, now)->has_value());
  EXPECT_EQ(t.Take("g", 1, 3, now)->value(), "id-1");
  EXPECT_FALSE(t.Take("g", 1, 3, now)->has_value());
  // An answer that never reached its rank is given back, and only for the id it was.
  t.GiveBack("g", 1, "another-id");
  EXPECT_FALSE(t.Take("g", 1, 3, now)->has_value());
  t.GiveBack("g", 1, "id-1");
  EXPECT_EQ(t.Take("g", 1, 3, now)->value(), "id-1");
}

TEST(RendezvousTable, ANewPostReplacesTheOldIdAndWhoTookIt) {
  RendezvousTable t(seconds(60));
  const Clock::time_point now = Clock::now();
  ASSERT_TRUE(t.Post("g", 2, "old", now).ok());
  ASSERT_TRUE(t.Post("g", 2, "new", now).ok());
  EXPECT_EQ(t.Take("g", 1, 2, now)->value(), "new");
  ASSERT_TRUE(t.Post("g", 2, "newer", now).ok());
  EXPECT_EQ(t.Take("g", 1, 2, now)->value(), "newer") << "the restarted group's rank 1 takes the new id";
}

TEST(RendezvousTable, AnIdIsForgottenAfterItsTimeToLive) {
  RendezvousTable t(seconds(60));
  const Clock::time_point t0 = Clock::now();
  ASSERT_TRUE(t.Post("g", 3, "id", t0).ok());
  EXPECT_EQ(t.Take("g", 1, 3, t0 + seconds(59))->value(), "id");
  // Rank 2 never came in time: a later launch's rank 2 must not be handed the dead id.
  EXPECT_FALSE(t.Take("g", 2, 3, t0 + seconds(60))->has_value());
  EXPECT_EQ(t.pending(), 0u);
  // Expired ids do not count against the limit.
  for (size_t i = 0; i < RendezvousTable::kMaxPending; ++i) ASSERT_TRUE(t.Post("g" + std::to_string(i), 2, "x", t0).ok());
  EXPECT_TRUE(MessageHas(t.Post("one-too-many", 2, "x", t0), "already waiting"));
  EXPECT_TRUE(t.Post("one-too-many", 2, "x", t0 + seconds(61)).ok());
}

TEST(RendezvousTable, BadRequestsAreRefused) {
  RendezvousTable t(seconds(60));
  const Clock::time_point now = Clock::now();
  EXPECT_TRUE(MessageHas(t.Post("g", 0, "x", now), "at least one rank"));
  EXPECT_TRUE(MessageHas(t.Post("g", 2, "", now), "empty id"));
  ASSERT_TRUE(t.Post("g", 4, "x", now).ok());
  EXPECT_TRUE(MessageHas(t.Take("g", 1, 2, now).status(), "rank 0 started a group of 4 ranks, this worker says 2"));
  EXPECT_TRUE(MessageHas(t.Take("g", 0, 4, now).status(), "rank 0 cannot take"));
  EXPECT_TRUE(MessageHas(t.Take("g", 4, 4, now).status(), "rank 4 cannot take"));
  ASSERT_TRUE(t.Post("solo", 1, "x", now).ok());
  EXPECT_EQ(t.pending(), 1u) << "a group of one keeps nothing";
}

control::Rendezvous Ask(const LiveCoordinator& c, const std::string& group, uint32_t rank, uint32_t size,
                        const std::string& id = "", const std::string& token = "") {
  return control::Rendezvous{group, rank, size, c.model(), token, id};
}

StatusOr<std::string> Share(const LiveCoordinator& c, const control::Rendezvous& r, int64_t wait_ms = 10000) {
  return control::ShareGroupId("127.0.0.1", c.port(), r, 5000, wait_ms);
}

TEST(Rendezvous, RanksThatAskBeforeRankZeroGetItsIdWhenItPosts) {
  LiveCoordinator c;
  const std::string id(128, '\x5a');
  auto r1 = std::async(std::launch::async, [&] { return Share(c, Ask(c, "g0", 1, 3)); });
  auto r2 = std::async(std::launch::async, [&] { return Share(c, Ask(c, "g0", 2, 3)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both parked at the coordinator
  auto r0 = Share(c, Ask(c, "g0", 0, 3, id));
  ASSERT_TRUE(r0.ok()) << r0.status().ToString();
  EXPECT_EQ(*r0, id);
  for (auto* f : {&r1, &r2}) {
    auto got = f->get();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, id);
  }
  EXPECT_EQ(control::IdFingerprint(id), control::IdFingerprint(*r0));
  EXPECT_NE(control::IdFingerprint(id), control::IdFingerprint(std::string(128, '\x5b')));
  // The id was handed to every rank: a rank asking again (a restart) waits for a new post.
  auto again = Share(c, Ask(c, "g0", 1, 3), 300);
  EXPECT_EQ(again.status().code(), StatusCode::kDeadlineExceeded) << again.status().ToString();
  EXPECT_TRUE(MessageHas(again.status(), "has rank 0 started?"));
  // A rank that comes after the post gets it at once; groups do not see each other's ids.
  ASSERT_TRUE(Share(c, Ask(c, "g1", 0, 2, "other")).ok());
  EXPECT_EQ(*Share(c, Ask(c, "g1", 1, 2)), "other");
}

TEST(Rendezvous, TheCoordinatorRefusesWhatDoesNotMatch) {
  LiveCoordinator c("s3cret");
  // No token, a wrong token, a wrong model: refused with the reason, before anything is posted.
  EXPECT_TRUE(MessageHas(Share(c, Ask(c, "g0", 0, 2, "id")).status(), "wrong or missing control token"));
  EXPECT_TRUE(MessageHas(Share(c, Ask(c, "g0", 0, 2, "id", "nope")).status(), "wrong or missing control token"));
  control::Rendezvous wrong_model = Ask(c, "g0", 0, 2, "id", "s3cret");
  wrong_model.model = "another-model";
  EXPECT_TRUE(MessageHas(Share(c, wrong_model).status(), "the coordinator serves"));
  // Ranks that disagree with rank 0 about the group's size.
  ASSERT_TRUE(Share(c, Ask(c, "g0", 0, 4, "id", "s3cret")).ok());
  EXPECT_TRUE(MessageHas(Share(c, Ask(c, "g0", 1, 2, "", "s3cret")).status(), "rank 0 started a group of 4 ranks"));
}

TEST(Rendezvous, AParkedRankIsRefusedWhenTheCoordinatorStops) {
  auto c = std::make_unique<LiveCoordinator>();
  auto r1 = std::async(std::launch::async, [&] { return Share(*c, Ask(*c, "g0", 1, 2)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  c.reset();  // Stop()
  auto got = r1.get();
  EXPECT_TRUE(MessageHas(got.status(), "refused the rendezvous: the coordinator is shutting down"));
}

TEST(Rendezvous, ARankThatLeftWhileParkedDoesNotTakeItsSuccessorsId) {
  LiveCoordinator c;
  // Rank 1 parks, gives up (its client times out and closes), and is relaunched; then rank 0 posts.
  auto gave_up = Share(c, Ask(c, "g0", 1, 2), 200);
  EXPECT_EQ(gave_up.status().code(), StatusCode::kDeadlineExceeded) << gave_up.status().ToString();
  auto relaunched = std::async(std::launch::async, [&] { return Share(c, Ask(c, "g0", 1, 2)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(Share(c, Ask(c, "g0", 0, 2, "fresh")).ok());
  auto got = relaunched.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "fresh");
}

}  // namespace
}  // namespace shoal
