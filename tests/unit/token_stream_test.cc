// TokenStream: the session side of a request — events in, text out — without sockets.
#include "coordinator/token_stream.h"

#include <gtest/gtest.h>

#include "tests/unit/fixture_util.h"

namespace shoal::coord {
namespace {

class TokenStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::Load(testing::FixturesDir() + "/qwen3-moe-f32");
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tokenizer = std::move(*tok);
    auto ids = tokenizer->Encode("hello world again", false);
    ASSERT_TRUE(ids.ok());
    words = *ids;
  }
  std::unique_ptr<TokenStream> Make(std::vector<std::string> stops = {}, int32_t min_tokens = 0) {
    return std::make_unique<TokenStream>(io.get_executor(), 0, *tokenizer, true, std::move(stops), min_tokens);
  }
  static RequestEvent Token(int32_t t, bool stop_token = false) {
    RequestEvent e;
    e.token = t;
    e.stop_token = stop_token;
    return e;
  }
  static RequestEvent End(const char* reason, std::shared_ptr<const api::ApiError> error = nullptr) {
    RequestEvent e;
    e.end = true;
    e.finish_reason = reason;
    e.error = std::move(error);
    return e;
  }

  asio::io_context io;
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<int32_t> words;
};

TEST_F(TokenStreamTest, TokensBecomeTextAndTheStopTokenIsCountedNotPrinted) {
  auto s = Make();
  for (int32_t t : words) s->Push(Token(t));
  s->Process();
  EXPECT_FALSE(s->done);
  EXPECT_EQ(s->chunk_ids, words);
  s->chunk_ids.clear();
  s->Push(Token(0, /*stop_token=*/true));
  s->Push(End("stop"));
  s->Process();
  EXPECT_TRUE(s->done);
  EXPECT_EQ(s->finish_reason, "stop");
  EXPECT_EQ(s->text, "hello world again");
  EXPECT_EQ(s->output_ids.size(), words.size() + 1);
  EXPECT_EQ(s->chunk_ids, std::vector<int32_t>{0});
  EXPECT_EQ(s->ended_here, nullptr) << "the rank ended it";
}

TEST_F(TokenStreamTest, AStopStringEndsItHereAndLaterEventsAreIgnored) {
  auto s = Make({"world"});
  for (int32_t t : words) s->Push(Token(t));
  s->Push(End("length"));
  s->Process();
  EXPECT_TRUE(s->done);
  EXPECT_EQ(s->finish_reason, "stop");
  EXPECT_EQ(s->text, "hello ");
  ASSERT_NE(s->ended_here, nullptr);
  EXPECT_STREQ(s->ended_here, "stop");
}

// min_tokens holds stop strings off as it holds off stop tokens: a match must end in the text of the
// min_tokens-th token or a later one (vLLM's rule), though it may start earlier.
TEST_F(TokenStreamTest, StopStringsWaitForMinTokens) {
  // The number of tokens whose text first holds `stop` (the match ends in the last of them).
  auto ends_at = [&](const std::string& stop) {
    for (size_t k = 1; k <= words.size(); ++k) {
      auto text = tokenizer->Decode(std::span<const int32_t>(words.data(), k), true);
      if (text.ok() && text->find(stop) != std::string::npos) return static_cast<int32_t>(k);
    }
    return -1;
  };
  auto run = [&](const std::string& stop, int32_t min_tokens) {
    auto s = Make({stop}, min_tokens);
    for (int32_t t : words) s->Push(Token(t));
    s->Push(End("length"));
    s->Process();
    return std::make_pair(s->text, s->finish_reason);
  };
  const int32_t world = ends_at("world"), span = ends_at("o w");
  ASSERT_GT(world, 1);
  ASSERT_GT(span, 1);
  EXPECT_EQ(run("world", world), std::make_pair(std::string("hello "), std::string("stop")));
  EXPECT_EQ(run("world", world + 1), std::make_pair(std::string("hello world again"), std::string("length")))
      << "the only match ends before the min_tokens-th token";
  // A match may start before the min_tokens-th token as long as it ends in it.
  EXPECT_EQ(run("o w", span), std::make_pair(std::string("hell"), std::string("stop")));
  EXPECT_EQ(run("o w", span + 1).second, "length");
}

TEST_F(TokenStreamTest, HeldTextIsReleasedAtTheEndUnlessItFailed) {
  auto s = Make({"hello world again and more"});
  for (int32_t t : words) s->Push(Token(t));
  s->Process();
  EXPECT_EQ(s->text, "") << "could still become the stop string";
  s->Push(End("length"));
  s->Process();
  EXPECT_EQ(s->text, "hello world again");
  EXPECT_EQ(s->finish_reason, "length");

  auto f = Make({"hello world again and more"});
  for (int32_t t : words) f->Push(Token(t));
  f->Push(End("error", std::make_shared<const api::ApiError>(api::ApiError{503, "group failed", "server_error", "", ""})));
  f->Process();
  EXPECT_TRUE(f->done);
  ASSERT_TRUE(f->error);
  EXPECT_EQ(f->error->http_status, 503);
  EXPECT_EQ(f->text, "");
}

TEST_F(TokenStreamTest, EndingLocallyWakesTheSessionAndIgnoresTheRest) {
  auto s = Make();
  bool woke = false;
  asio::co_spawn(io, [&]() -> awaitable<void> {
    co_await s->WaitForNews();
    woke = true;
  }, asio::detached);
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(woke);
  s->EndLocally("cancelled");
  io.restart();
  io.run_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(woke);
  s->Push(Token(words[0]));
  s->Process();
  EXPECT_TRUE(s->output_ids.empty());
  EXPECT_EQ(s->finish_reason, "cancelled");
}

}  // namespace
}  // namespace shoal::coord
