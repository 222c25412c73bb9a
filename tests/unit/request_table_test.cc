// The coordinator's state machines without sockets or threads: Cluster (joins, failures, routing)
// and RequestTable (admission, tokens, ends, counts), driven by hand through recording ranks and a
// recording Delivery.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/cluster.h"
#include "coordinator/request_table.h"

namespace shoal::coord {
namespace {

constexpr int32_t kVocab = 320;
constexpr int64_t kContext = 256;

// A rank's connection that keeps what it was sent.
class RecordingChannel : public RankChannel {
 public:
  void Send(const control::Message& m) override { sent.push_back(m); }
  void Close() override { closed = true; }
  template <class T>
  std::vector<T> Sent() const {
    std::vector<T> out;
    for (const auto& m : sent) {
      if (const T* t = std::get_if<T>(&m)) out.push_back(*t);
    }
    return out;
  }
  std::vector<control::Message> sent;
  bool closed = false;
};

struct Sink : RequestSink {
  std::vector<RequestEvent> events;
};

class RecordingDelivery : public Delivery {
 public:
  void Deliver(const std::shared_ptr<RequestSink>& sink, RequestEvent e) override {
    static_cast<Sink&>(*sink).events.push_back(std::move(e));
    ++pending;
  }
  void Flush() override {
    flushes += pending > 0 ? 1 : 0;
    pending = 0;
  }
  int pending = 0, flushes = 0;
};

control::Hello MakeHello(const std::string& group, uint32_t rank, uint32_t size) {
  control::Hello h;
  h.group = group;
  h.rank = rank;
  h.size = size;
  h.model = "m";
  h.vocab_size = kVocab;
  h.max_context = kContext;
  h.max_num_seqs = 4;
  h.block_size = 16;
  h.kv_blocks = 8;  // 128 tokens of KV
  h.kv_tokens = 128;
  h.host = "h";
  return h;
}

class CoordinatorState : public ::testing::Test {
 protected:
  explicit CoordinatorState(int migration_timeout_s = 0)
      : cluster({"m", kVocab, "", 1, 2}, metrics),
        table({kContext, kVocab, {2}, migration_timeout_s}, cluster, delivery, metrics) {}

  // Joins every rank of a group; returns its ranks and their channels.
  std::vector<std::shared_ptr<Rank>> JoinGroup(const std::string& group, uint32_t size) {
    std::vector<std::shared_ptr<Rank>> ranks;
    for (uint32_t r = 0; r < size; ++r) {
      auto ch = std::make_shared<RecordingChannel>();
      auto joined = cluster.Join(MakeHello(group, r, size), ch, Clock::now(), false);
      EXPECT_TRUE(joined.ok()) << joined.status().ToString();
      channels[(*joined).get()] = ch;
      ranks.push_back(*joined);
    }
    return ranks;
  }
  RecordingChannel& Channel(const std::shared_ptr<Rank>& r) { return *channels.at(r.get()); }

  struct Started {
    uint64_t id = 0;
    std::shared_ptr<Sink> sink;
  };
  std::variant<RequestTable::Admitted, api::ApiError> Admit(std::shared_ptr<Sink> sink, int64_t max_tokens,
                                                            size_t prompt_len = 3) {
    prompt.assign(prompt_len, 7);
    RequestTable::Admission a;
    a.prompt = &prompt;
    a.max_tokens = max_tokens;
    a.stop_ids = {9};
    a.sink = std::move(sink);
    a.arrival = Clock::now();
    return table.Admit(std::move(a), false);
  }
  Started Start(int64_t max_tokens = 10) {
    auto sink = std::make_shared<Sink>();
    auto r = Admit(sink, max_tokens);
    EXPECT_TRUE(std::holds_alternative<RequestTable::Admitted>(r));
    return {std::get<RequestTable::Admitted>(r).id, sink};
  }
  static control::Tokens Tokens(std::vector<control::TokenEvent> events) {
    control::Tokens t;
    t.events = std::move(events);
    return t;
  }

  Metrics metrics;
  RecordingDelivery delivery;
  Cluster cluster;
  RequestTable table;
  std::map<const Rank*, std::shared_ptr<RecordingChannel>> channels;
  std::vector<int32_t> prompt;
};

// Joins a group of 4 ranks as 2 attention-TP replicas of 2.
void JoinTpGroup(Cluster& cluster, const std::string& name, std::vector<std::shared_ptr<Rank>>* ranks) {
  for (uint32_t r = 0; r < 4; ++r) {
    control::Hello h = MakeHello(name, r, 4);
    h.tp_size = 2;
    h.tp_rank = r % 2;
    h.replica = r / 2;
    auto joined = cluster.Join(h, std::make_shared<RecordingChannel>(), Clock::now(), false);
    ASSERT_TRUE(joined.ok()) << joined.status().ToString();
    ranks->push_back(*joined);
  }
}

// Attention TP: requests go to each replica's tp_rank 0 (which hands them to the replica's other
// ranks), never to the others; a rank that disagrees on the group's TP size is refused.
TEST_F(CoordinatorState, RequestsGoToReplicasNotToTheirOtherRanks) {
  std::vector<std::shared_ptr<Rank>> ranks;
  ASSERT_NO_FATAL_FAILURE(JoinTpGroup(cluster, "g", &ranks));
  for (int i = 0; i < 6; ++i) {
    auto pick = cluster.Route(false);
    ASSERT_TRUE(pick.ok());
    EXPECT_EQ((*pick)->hello.tp_rank, 0u);
    (*pick)->requests += 1;  // as the request table would
  }
  EXPECT_EQ(ranks[0]->requests, 3);
  EXPECT_EQ(ranks[2]->requests, 3);
  EXPECT_EQ(ranks[1]->requests + ranks[3]->requests, 0);
  control::Hello other = MakeHello("g2", 0, 2);
  ASSERT_TRUE(cluster.Join(other, std::make_shared<RecordingChannel>(), Clock::now(), false).ok());
  other.rank = 1;
  other.tp_size = 2;
  other.tp_rank = 1;
  EXPECT_FALSE(cluster.Join(other, std::make_shared<RecordingChannel>(), Clock::now(), false).ok())
      << "g2 runs without attention TP";
}

// Load is compared per replica: a group of 4 ranks as 2 TP-2 replicas serves as many requests at
// once as a group of 2 ranks without TP, so the two get equal shares.
TEST_F(CoordinatorState, GroupsShareLoadByReplicasNotRanks) {
  std::vector<std::shared_ptr<Rank>> tp;
  ASSERT_NO_FATAL_FAILURE(JoinTpGroup(cluster, "tp", &tp));
  std::vector<std::shared_ptr<Rank>> dp;
  for (uint32_t r = 0; r < 2; ++r) {
    auto joined = cluster.Join(MakeHello("dp", r, 2), std::make_shared<RecordingChannel>(), Clock::now(), false);
    ASSERT_TRUE(joined.ok()) << joined.status().ToString();
    dp.push_back(*joined);
  }
  for (int i = 0; i < 8; ++i) {
    auto pick = cluster.Route(false);
    ASSERT_TRUE(pick.ok());
    (*pick)->requests += 1;
  }
  EXPECT_EQ(tp[0]->requests + tp[2]->requests, 4);
  EXPECT_EQ(dp[0]->requests + dp[1]->requests, 4);
}

TEST_F(CoordinatorState, JoinsAreCheckedAndAGroupIsReadyWhenComplete) {
  auto ch = std::make_shared<RecordingChannel>();
  control::Hello wrong_model = MakeHello("g", 0, 2);
  wrong_model.model = "other";
  EXPECT_FALSE(cluster.Join(wrong_model, ch, Clock::now(), false).ok());
  control::Hello wrong_vocab = MakeHello("g", 0, 2);
  wrong_vocab.vocab_size = 7;
  EXPECT_FALSE(cluster.Join(wrong_vocab, ch, Clock::now(), false).ok());
  control::Hello bad_rank = MakeHello("g", 2, 2);
  EXPECT_FALSE(cluster.Join(bad_rank, ch, Clock::now(), false).ok());
  EXPECT_FALSE(cluster.Join(MakeHello("g", 0, 2), ch, Clock::now(), /*stopping=*/true).ok());

  ASSERT_TRUE(cluster.Join(MakeHello("g", 0, 2), ch, Clock::now(), false).ok());
  EXPECT_FALSE(cluster.IsReady(false));
  EXPECT_FALSE(cluster.Join(MakeHello("g", 0, 2), ch, Clock::now(), false).ok()) << "rank 0 is already connected";
  EXPECT_FALSE(cluster.Join(MakeHello("g", 1, 3), ch, Clock::now(), false).ok()) << "the group has 2 ranks";
  ASSERT_TRUE(cluster.Join(MakeHello("g", 1, 2), ch, Clock::now(), false).ok());
  EXPECT_TRUE(cluster.IsReady(false));
  EXPECT_FALSE(cluster.IsReady(/*stopping=*/true));
  EXPECT_EQ(cluster.ready_groups(), 1);
}

TEST_F(CoordinatorState, AdmissionRoutesChecksOnceAndSubmits) {
  // No group yet: a request that could never fit is the client's to fix (400), one that could is 503.
  auto none = Admit(std::make_shared<Sink>(), 1000);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(none));
  EXPECT_EQ(std::get<api::ApiError>(none).http_status, 400);
  EXPECT_EQ(std::get<api::ApiError>(none).param, "max_tokens");
  auto unready = Admit(std::make_shared<Sink>(), 10);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(unready));
  EXPECT_EQ(std::get<api::ApiError>(unready).http_status, 503);

  auto ranks = JoinGroup("g", 2);
  // Within the context but beyond one rank's KV cache (128 tokens).
  auto big = Admit(std::make_shared<Sink>(), 200);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(big));
  EXPECT_EQ(std::get<api::ApiError>(big).code, "context_length_exceeded");
  EXPECT_NE(std::get<api::ApiError>(big).message.find("KV cache"), std::string::npos);

  // Without max_tokens: completions get at most 16.
  auto dflt = Admit(std::make_shared<Sink>(), -1);
  ASSERT_TRUE(std::holds_alternative<RequestTable::Admitted>(dflt));
  EXPECT_EQ(std::get<RequestTable::Admitted>(dflt).max_tokens, 16);
  auto second = Admit(std::make_shared<Sink>(), 5);
  ASSERT_TRUE(std::holds_alternative<RequestTable::Admitted>(second));
  // The least loaded rank takes each: one request on each rank.
  EXPECT_EQ(ranks[0]->requests, 1);
  EXPECT_EQ(ranks[1]->requests, 1);
  EXPECT_EQ(ranks[0]->outstanding_tokens + ranks[1]->outstanding_tokens, (3 + 16) + (3 + 5));
  const auto subs = Channel(ranks[0]).Sent<control::Submit>();
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0].prompt, std::vector<int32_t>(3, 7));
  EXPECT_EQ(subs[0].stop_ids, (std::vector<int32_t>{9, 2})) << "the client's stop ids, then EOS";
  // The first request found the group idle: the other rank was woken.
  EXPECT_EQ(Channel(ranks[1]).Sent<control::Wake>().size(), 1u);
  EXPECT_EQ(table.in_flight(), 2u);
}

TEST_F(CoordinatorState, AFullClusterAnswers429) {
  JoinGroup("g", 1);  // 4 sequences + 2 queued
  for (int i = 0; i < 6; ++i) Start();
  auto full = Admit(std::make_shared<Sink>(), 10);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(full));
  EXPECT_EQ(std::get<api::ApiError>(full).http_status, 429);
  EXPECT_EQ(std::get<api::ApiError>(full).code, "queue_full");
}

TEST_F(CoordinatorState, TokensArriveInOrderAndTheEndRestoresTheCounts) {
  auto ranks = JoinGroup("g", 1);
  const Started r = Start(10);
  table.OnTokens(*ranks[0], Tokens({{r.id, 40, control::FinishReason::kNone, ""}, {r.id, 41, control::FinishReason::kNone, ""}}),
                 Clock::now());
  EXPECT_EQ(delivery.flushes, 1) << "one hand-over per frame";
  EXPECT_EQ(ranks[0]->outstanding_tokens, 3 + 10 - 2);
  table.OnTokens(*ranks[0], Tokens({{r.id, 9, control::FinishReason::kStop, ""}}), Clock::now());
  ASSERT_EQ(r.sink->events.size(), 4u);
  EXPECT_EQ(r.sink->events[0].token, 40);
  EXPECT_EQ(r.sink->events[1].token, 41);
  EXPECT_EQ(r.sink->events[2].token, 9);
  EXPECT_TRUE(r.sink->events[2].stop_token);
  EXPECT_TRUE(r.sink->events[3].end);
  EXPECT_STREQ(r.sink->events[3].finish_reason, "stop");
  EXPECT_EQ(ranks[0]->requests, 0);
  EXPECT_EQ(ranks[0]->outstanding_tokens, 0);
  EXPECT_EQ(table.in_flight(), 0u);
  // Late events for the ended request, and events for ids nobody holds, change nothing.
  table.OnTokens(*ranks[0], Tokens({{r.id, 5, control::FinishReason::kLength, ""}, {999, 5, control::FinishReason::kNone, ""}}),
                 Clock::now());
  EXPECT_EQ(r.sink->events.size(), 4u);
  EXPECT_EQ(ranks[0]->outstanding_tokens, 0);
}

TEST_F(CoordinatorState, ARankIsNotTrustedWithOtherRanksRequestsOrTokensOutsideTheVocabulary) {
  auto ranks = JoinGroup("g", 2);
  const Started a = Start(10), b = Start(10);
  // a went to rank 0 and b to rank 1; rank 1 claims a token for a.
  table.OnTokens(*ranks[1], Tokens({{a.id, 5, control::FinishReason::kLength, ""}}), Clock::now());
  EXPECT_TRUE(a.sink->events.empty());
  table.OnTokens(*ranks[1], Tokens({{b.id, kVocab, control::FinishReason::kNone, ""}}), Clock::now());
  ASSERT_EQ(b.sink->events.size(), 1u);
  EXPECT_TRUE(b.sink->events[0].end);
  ASSERT_TRUE(b.sink->events[0].error);
  EXPECT_EQ(b.sink->events[0].error->http_status, 500);
  EXPECT_NE(b.sink->events[0].error->message.find("outside the vocabulary"), std::string::npos);
  const auto cancels = Channel(ranks[1]).Sent<control::Cancel>();
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].request, b.id);
  EXPECT_EQ(ranks[1]->requests, 0);
}

TEST_F(CoordinatorState, TheClientsEndCancelsOnTheRankOnceAndDeliversNothing) {
  auto ranks = JoinGroup("g", 1);
  const Started r = Start(10);
  table.EndFromClient(r.id, "cancelled");
  table.EndFromClient(r.id, "cancelled");  // twice: the second finds nothing
  EXPECT_TRUE(r.sink->events.empty());
  EXPECT_EQ(Channel(ranks[0]).Sent<control::Cancel>().size(), 1u);
  EXPECT_EQ(ranks[0]->requests, 0);
  EXPECT_EQ(ranks[0]->outstanding_tokens, 0);
  EXPECT_EQ(metrics.counter("shoal_requests_total", "", {{"finish_reason", "cancelled"}}).value(), 1);
}

TEST_F(CoordinatorState, ARankFailureEndsItsGroupsRequestsOnly) {
  auto g1 = JoinGroup("g1", 2);
  auto g2 = JoinGroup("g2", 1);
  std::vector<Started> started;
  for (int i = 0; i < 3; ++i) started.push_back(Start(10));
  std::optional<GroupFailure> f = cluster.RankFailed(g1[1], "connection closed", false);
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(Channel(g1[0]).closed) << "the group's other rank is closed too";
  EXPECT_FALSE(cluster.RankFailed(g1[0], "closed", false).has_value()) << "the group broke once";
  table.FailGroup(*f, false, Clock::now());
  int failed = 0, alive = 0;
  for (const Started& s : started) {
    if (!s.sink->events.empty() && s.sink->events.back().end) {
      ++failed;
      EXPECT_EQ(s.sink->events.back().error->http_status, 503);
      EXPECT_NE(s.sink->events.back().error->message.find("engine group g1 failed"), std::string::npos);
    } else {
      ++alive;
    }
  }
  EXPECT_EQ(alive, g2[0]->requests);
  EXPECT_EQ(failed + alive, 3);
  EXPECT_GT(failed, 0);
  // The broken group no longer takes requests; the survivor does.
  const Started next = Start(10);
  EXPECT_EQ(g2[0]->requests, alive + 1);
  EXPECT_TRUE(next.sink->events.empty());
  // A new incarnation can join once every old rank is gone.
  auto ch = std::make_shared<RecordingChannel>();
  EXPECT_TRUE(cluster.Join(MakeHello("g1", 0, 2), ch, Clock::now(), false).ok());
}

// With migration on (server.migration_timeout_s), a failed group's requests continue elsewhere.
class MigrationState : public CoordinatorState {
 protected:
  MigrationState() : CoordinatorState(30) {}
};

TEST_F(MigrationState, AFailedGroupsRequestResumesOnAnotherGroupAsPromptPlusItsTokens) {
  auto g1 = JoinGroup("g1", 1);
  const Started r = Start(10);
  table.OnTokens(*g1[0], Tokens({{r.id, 40, control::FinishReason::kNone, ""}, {r.id, 41, control::FinishReason::kNone, ""}}),
                 Clock::now());
  auto g2 = JoinGroup("g2", 1);
  std::optional<GroupFailure> f = cluster.RankFailed(g1[0], "connection closed", false);
  ASSERT_TRUE(f.has_value());
  table.FailGroup(*f, false, Clock::now());
  // Resubmitted at once to the ready group: prompt + the two tokens the client has, marked resumed.
  const auto subs = Channel(g2[0]).Sent<control::Submit>();
  ASSERT_EQ(subs.size(), 1u);
  const auto first = Channel(g1[0]).Sent<control::Submit>().at(0);
  EXPECT_EQ(subs[0].request, r.id);
  EXPECT_EQ(subs[0].prompt, (std::vector<int32_t>{7, 7, 7, 40, 41}));
  EXPECT_EQ(subs[0].resumed_output, 2u);
  EXPECT_EQ(subs[0].max_tokens, 10u) << "the original budget: the resumed tokens count toward it";
  EXPECT_EQ(subs[0].stop_ids, first.stop_ids);
  EXPECT_EQ(subs[0].sampling.seed, first.sampling.seed);
  EXPECT_EQ(g2[0]->requests, 1);
  EXPECT_EQ(g2[0]->outstanding_tokens, 3 + 10 - 2);
  EXPECT_EQ(g1[0]->requests, 0);
  EXPECT_EQ(table.awaiting_group(), 0u);
  EXPECT_EQ(metrics.counter("shoal_request_migrations_total", "").value(), 1);
  // The client saw two tokens and no end; a late token from the dead rank is ignored; the new group's
  // tokens continue the stream.
  ASSERT_EQ(r.sink->events.size(), 2u);
  table.OnTokens(*g1[0], Tokens({{r.id, 77, control::FinishReason::kNone, ""}}), Clock::now());
  EXPECT_EQ(r.sink->events.size(), 2u);
  table.OnTokens(*g2[0], Tokens({{r.id, 42, control::FinishReason::kLength, ""}}), Clock::now());
  ASSERT_EQ(r.sink->events.size(), 4u);
  EXPECT_EQ(r.sink->events[2].token, 42);
  EXPECT_STREQ(r.sink->events[3].finish_reason, "length");
  EXPECT_EQ(g2[0]->requests, 0);
  EXPECT_EQ(g2[0]->outstanding_tokens, 0);
}

TEST_F(MigrationState, ARequestWaitsForTheRelaunchedGroupThenTimesOut) {
  auto g1 = JoinGroup("g1", 1);
  const Started a = Start(10), b = Start(10);
  table.OnTokens(*g1[0], Tokens({{a.id, 40, control::FinishReason::kNone, ""}}), Clock::now());
  const auto t0 = Clock::now();
  std::optional<GroupFailure> f = cluster.RankFailed(g1[0], "no heartbeat", false);
  ASSERT_TRUE(f.has_value());
  table.FailGroup(*f, false, t0);
  EXPECT_EQ(table.awaiting_group(), 2u);
  EXPECT_EQ(a.sink->events.size(), 1u) << "no error while it waits";
  table.Migrate(t0 + std::chrono::seconds(10), false);
  EXPECT_EQ(table.awaiting_group(), 2u);
  // The group comes back as a new incarnation: both continue there, a with its token.
  auto again = JoinGroup("g1", 1);
  table.Migrate(t0 + std::chrono::seconds(11), false);
  EXPECT_EQ(table.awaiting_group(), 0u);
  const auto subs = Channel(again[0]).Sent<control::Submit>();
  ASSERT_EQ(subs.size(), 2u);
  EXPECT_EQ(subs[0].request, a.id) << "oldest first";
  EXPECT_EQ(subs[0].resumed_output, 1u);
  EXPECT_EQ(subs[1].resumed_output, 0u);
  EXPECT_EQ(subs[1].prompt, std::vector<int32_t>(3, 7));
  // It fails again and nothing comes back within the timeout: the 503 of old, naming the wait.
  f = cluster.RankFailed(again[0], "connection closed", false);
  ASSERT_TRUE(f.has_value());
  table.FailGroup(*f, false, t0 + std::chrono::seconds(12));
  table.Migrate(t0 + std::chrono::seconds(12 + 31), false);
  EXPECT_EQ(table.in_flight(), 0u);
  for (const Started& s : {a, b}) {
    ASSERT_FALSE(s.sink->events.empty());
    ASSERT_TRUE(s.sink->events.back().end);
    ASSERT_TRUE(s.sink->events.back().error);
    EXPECT_EQ(s.sink->events.back().error->http_status, 503);
    EXPECT_NE(s.sink->events.back().error->message.find("migration_timeout_s"), std::string::npos);
  }
}

TEST_F(CoordinatorState, OverdueRequestsGet504AndTheirRanksDropThem) {
  auto ranks = JoinGroup("g", 1);
  auto sink = std::make_shared<Sink>();
  prompt.assign(3, 7);
  RequestTable::Admission a;
  a.prompt = &prompt;
  a.max_tokens = 10;
  a.sink = sink;
  a.arrival = Clock::now();
  a.deadline = Clock::now() + std::chrono::milliseconds(5);
  auto r = table.Admit(std::move(a), false);
  ASSERT_TRUE(std::holds_alternative<RequestTable::Admitted>(r));
  const Started other = Start(10);
  table.ExpireOverdue(Clock::now(), 1);
  EXPECT_TRUE(sink->events.empty()) << "not yet";
  table.ExpireOverdue(Clock::now() + std::chrono::seconds(1), 1);
  ASSERT_EQ(sink->events.size(), 1u);
  EXPECT_EQ(sink->events[0].error->http_status, 504);
  EXPECT_TRUE(other.sink->events.empty()) << "no deadline (a stream)";
  EXPECT_EQ(Channel(ranks[0]).Sent<control::Cancel>().size(), 1u);
  table.FailAll(api::ApiError{503, "the server is shutting down", "server_error", "", ""});
  ASSERT_EQ(other.sink->events.size(), 1u);
  EXPECT_EQ(other.sink->events[0].error->http_status, 503);
  EXPECT_EQ(table.in_flight(), 0u);
  EXPECT_EQ(ranks[0]->requests, 0);
}

TEST_F(CoordinatorState, TheWatchdogFindsSilentAndHungRanks) {
  auto ranks = JoinGroup("g", 2);
  const auto t0 = Clock::now();
  cluster.OnHeartbeat(*ranks[0], control::Heartbeat{}, t0);
  cluster.OnHeartbeat(*ranks[1], control::Heartbeat{}, t0);
  EXPECT_TRUE(cluster.LateRanks(t0, std::chrono::seconds(3), std::chrono::seconds(5)).empty());
  Start(10);  // held by one rank, which then heartbeats without finishing a step
  const auto later = t0 + std::chrono::seconds(6);
  for (auto& r : ranks) cluster.OnHeartbeat(*r, control::Heartbeat{}, later);
  auto late = cluster.LateRanks(later, std::chrono::seconds(3), std::chrono::seconds(5));
  ASSERT_EQ(late.size(), 1u);
  EXPECT_NE(late[0].second.find("hung in a step"), std::string::npos);
  late = cluster.LateRanks(later + std::chrono::seconds(4), std::chrono::seconds(3), std::chrono::hours(1));
  EXPECT_EQ(late.size(), 2u);
  EXPECT_NE(late[0].second.find("no heartbeat"), std::string::npos);
}

TEST_F(CoordinatorState, ABrokenGroupWithoutLiveRanksIsForgotten) {
  auto ranks = JoinGroup("g", 1);
  EXPECT_TRUE(cluster.RankFailed(ranks[0], "gone", false).has_value());
  EXPECT_EQ(cluster.known_groups(), 1);
  cluster.ForgetAbandonedGroups(Clock::now(), std::chrono::seconds(60));
  EXPECT_EQ(cluster.known_groups(), 1);
  cluster.ForgetAbandonedGroups(Clock::now() + std::chrono::seconds(61), std::chrono::seconds(60));
  EXPECT_EQ(cluster.known_groups(), 0);
}

}  // namespace
}  // namespace shoal::coord
