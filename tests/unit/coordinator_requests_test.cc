// The coordinator's request state machine, driven end to end over real sockets: an HTTP client on
// one side, a hand-driven worker rank (FakeWorker) on the other. Each test sends the worker's side of
// a request's life — tokens, a finish, an error, a death — and checks what the client is told and
// what the worker is asked to do (coordinator/requests.cc, generation.cc, worker_link.cc).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/tokenizer.h"
#include "tests/unit/live_coordinator.h"
#include "tests/unit/test_files.h"

namespace shoal {
namespace {

using testing::FakeWorker;
using testing::HttpOnce;
using testing::LiveCoordinator;
using testing::RawConnection;

// Worker-side silence is not a fault in these tests: only the events the test sends count.
// No heartbeat failures while a test thinks; a failed group's requests fail at once (migration has
// its own test below).
void Patient(EngineConfig& cfg) {
  cfg.server.heartbeat_timeout_ms = 60000;
  cfg.server.migration_timeout_s = 0;
}

std::string Post(const std::string& path, const nlohmann::json& body) {
  const std::string b = body.dump();
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

nlohmann::json CompletionBody(int max_tokens, bool stream = false) {
  return {{"prompt", std::vector<int>{1, 2, 3}}, {"max_tokens", max_tokens}, {"stream", stream}, {"return_token_ids", true}};
}

// The JSON body of a complete (Connection: close) non-streamed response.
nlohmann::json BodyOf(const std::string& reply) {
  const size_t at = reply.find("\r\n\r\n");
  if (at == std::string::npos) return nullptr;
  return nlohmann::json::parse(reply.substr(at + 4), nullptr, /*allow_exceptions=*/false);
}

// The `data:` payloads of an SSE response, in order (the chunked framing's size lines skipped).
std::vector<std::string> Events(const std::string& reply) {
  std::vector<std::string> out;
  for (size_t p = 0; (p = reply.find("data: ", p)) != std::string::npos;) {
    const size_t end = reply.find("\n\n", p);
    out.push_back(reply.substr(p + 6, end == std::string::npos ? std::string::npos : end - p - 6));
    p = end == std::string::npos ? reply.size() : end;
  }
  return out;
}

void SendTokens(FakeWorker& w, uint64_t request, const std::vector<int32_t>& tokens, control::FinishReason last,
                const std::string& error = "") {
  control::Tokens t;
  for (size_t i = 0; i < tokens.size(); ++i) {
    t.events.push_back({request, tokens[i], i + 1 == tokens.size() ? last : control::FinishReason::kNone, ""});
  }
  if (tokens.empty()) t.events.push_back({request, -1, last, error});
  ASSERT_TRUE(w.socket().SendMessage(t).ok());
}

// A coordinator with one hand-driven rank (group g0) that has joined.
class CoordinatorRequests : public ::testing::Test {
 protected:
  void SetUp() override {
    worker = std::make_unique<FakeWorker>(c, "g0");
    ASSERT_TRUE(worker->joined());
  }
  // A non-streamed completion sent from another thread; the whole response when it ends.
  std::future<std::string> Ask(const nlohmann::json& body) {
    const int port = c.http_port();
    return std::async(std::launch::async, [port, body] { return HttpOnce(port, Post("/v1/completions", body), 10000); });
  }
  // The Submit the rank receives next (nullopt after 5 s).
  std::optional<control::Submit> Submitted() { return worker->Next<control::Submit>(5000); }

  LiveCoordinator c{"", Patient};
  std::unique_ptr<FakeWorker> worker;
};

std::unique_ptr<Tokenizer> FixtureTokenizer() {
  auto tok = Tokenizer::Load(testing::FixturesDir() + "/qwen3-moe-f32");
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// Tokens then kLength: the client gets exactly those tokens, their text and finish_reason "length".
TEST_F(CoordinatorRequests, TokensAndALengthFinishReachTheClient) {
  FakeWorker& w = *worker;
  auto reply = Ask(CompletionBody(4));
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  EXPECT_EQ(submit->prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(submit->max_tokens, 4u);
  const std::vector<int32_t> out = {40, 41, 42, 43};
  SendTokens(w, submit->request, out, control::FinishReason::kLength);
  const nlohmann::json body = BodyOf(reply.get());
  ASSERT_TRUE(body.is_object()) << body;
  const auto& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(choice["token_ids"].get<std::vector<int32_t>>(), out);
  auto tok = FixtureTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(choice["text"].get<std::string>(), ValidUtf8(*tok->Decode(out, /*skip_special_tokens=*/true)));
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
}

// A kStop finish: the matching token (a stop id, EOS included) ends the text without appearing in it.
TEST_F(CoordinatorRequests, TheStopTokenIsCountedButNotPrinted) {
  FakeWorker& w = *worker;
  nlohmann::json req = CompletionBody(8);
  req["stop_token_ids"] = {99};
  auto reply = Ask(req);
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  EXPECT_NE(std::find(submit->stop_ids.begin(), submit->stop_ids.end(), 99), submit->stop_ids.end());
  SendTokens(w, submit->request, {40, 41, 99}, control::FinishReason::kStop);
  const nlohmann::json body = BodyOf(reply.get());
  ASSERT_TRUE(body.is_object());
  auto tok = FixtureTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["text"].get<std::string>(), ValidUtf8(*tok->Decode(std::vector<int32_t>{40, 41}, true)));
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
}

// Streaming: each step's text arrives as its own event before the next step is sent, then the finish
// event and [DONE].
TEST_F(CoordinatorRequests, StreamedTokensArriveAsTheyAreMade) {
  FakeWorker& w = *worker;
  auto tok = FixtureTokenizer();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("hello world again", false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 2u);
  RawConnection client(c.http_port());
  ASSERT_TRUE(client.Send(Post("/v1/completions", CompletionBody(16, /*stream=*/true))));
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  std::string seen = client.Read(2000, "\r\n\r\n");  // the response head
  EXPECT_NE(seen.find("text/event-stream"), std::string::npos) << seen;
  std::string text;
  for (size_t i = 0; i + 1 < ids->size(); ++i) {
    SendTokens(w, submit->request, {(*ids)[i]}, control::FinishReason::kNone);
    const std::string got = client.Read(3000, "\n\n");
    const auto events = Events(got);
    ASSERT_EQ(events.size(), 1u) << "token " << i << " did not arrive on its own: " << got;
    text += nlohmann::json::parse(events[0])["choices"][0]["text"].get<std::string>();
  }
  SendTokens(w, submit->request, {ids->back()}, control::FinishReason::kLength);
  const std::string rest = client.Read(3000, "[DONE]");
  std::string finish;
  for (const std::string& e : Events(rest)) {
    if (e == "[DONE]") continue;
    const auto j = nlohmann::json::parse(e);
    text += j["choices"][0]["text"].get<std::string>();
    if (j["choices"][0]["finish_reason"].is_string()) finish = j["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, "hello world again");
  EXPECT_EQ(finish, "length");
  EXPECT_NE(rest.find("data: [DONE]"), std::string::npos) << rest;
}

// A stop string in the generated text: the output ends just before it, finish_reason is "stop", and
// the worker (still generating) is told to drop the request.
TEST_F(CoordinatorRequests, AStopStringEndsTheRequestAndCancelsItOnTheWorker) {
  FakeWorker& w = *worker;
  auto tok = FixtureTokenizer();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("hello world again", false);
  ASSERT_TRUE(ids.ok());
  nlohmann::json req = CompletionBody(16);
  req["stop"] = "world";
  auto reply = Ask(req);
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  SendTokens(w, submit->request, *ids, control::FinishReason::kNone);
  auto cancel = w.Next<control::Cancel>(5000);
  ASSERT_TRUE(cancel.has_value()) << "the worker was not told to stop generating";
  EXPECT_EQ(cancel->request, submit->request);
  const nlohmann::json body = BodyOf(reply.get());
  ASSERT_TRUE(body.is_object());
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["text"], "hello ");
}

// A worker's error for one request is that request's 500, with the worker's message; the next
// request is served normally.
TEST_F(CoordinatorRequests, AWorkerErrorFailsOnlyThatRequest) {
  FakeWorker& w = *worker;
  auto first = Ask(CompletionBody(4));
  auto s1 = Submitted();
  ASSERT_TRUE(s1.has_value());
  SendTokens(w, s1->request, {}, control::FinishReason::kError, "KV cache exhausted");
  const std::string r1 = first.get();
  EXPECT_NE(r1.find("500 Internal Server Error"), std::string::npos) << r1;
  EXPECT_NE(r1.find("KV cache exhausted"), std::string::npos) << r1;

  auto second = Ask(CompletionBody(1));
  auto s2 = Submitted();
  ASSERT_TRUE(s2.has_value());
  EXPECT_NE(s2->request, s1->request);
  SendTokens(w, s2->request, {7}, control::FinishReason::kLength);
  const nlohmann::json body = BodyOf(second.get());
  ASSERT_TRUE(body.is_object());
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
}

// Tokens outside the vocabulary are never detokenized: the request fails and the worker is told to
// drop it. Events for requests the worker does not hold (unknown or finished) are
// ignored.
TEST_F(CoordinatorRequests, AWorkerIsNotTrustedWithIdsOrTokens) {
  FakeWorker& w = *worker;
  auto reply = Ask(CompletionBody(4));
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  SendTokens(w, submit->request + 1000, {5}, control::FinishReason::kLength);  // no such request
  SendTokens(w, submit->request, {1 << 20}, control::FinishReason::kNone);
  const std::string r = reply.get();
  EXPECT_NE(r.find("500"), std::string::npos) << r;
  EXPECT_NE(r.find("outside the vocabulary"), std::string::npos) << r;
  auto cancel = w.Next<control::Cancel>(5000);
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->request, submit->request);
  // Late events for the finished request change nothing.
  SendTokens(w, submit->request, {5}, control::FinishReason::kLength);
  EXPECT_NE(HttpOnce(c.http_port(), "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").find("200 OK"),
            std::string::npos);
}

// A client that leaves mid-stream: the worker is told to drop the request.
TEST_F(CoordinatorRequests, AClientLeavingMidStreamCancelsOnTheWorker) {
  FakeWorker& w = *worker;
  RawConnection client(c.http_port());
  ASSERT_TRUE(client.Send(Post("/v1/completions", CompletionBody(64, /*stream=*/true))));
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  SendTokens(w, submit->request, {40}, control::FinishReason::kNone);
  EXPECT_FALSE(client.Read(3000, "\n\n").empty());
  client.Close();
  auto cancel = w.Next<control::Cancel>(5000);
  ASSERT_TRUE(cancel.has_value()) << "the coordinator did not notice the client leave";
  EXPECT_EQ(cancel->request, submit->request);
}

// The worker's connection dies mid-request: the non-streamed request gets 503 naming the group, the
// streamed one an error event, and neither hangs.
TEST_F(CoordinatorRequests, AWorkerThatDiesFailsItsRequests) {
  auto plain = Ask(CompletionBody(8));
  ASSERT_TRUE(Submitted().has_value());
  RawConnection streamed(c.http_port());
  ASSERT_TRUE(streamed.Send(Post("/v1/completions", CompletionBody(8, /*stream=*/true))));
  auto s2 = Submitted();
  ASSERT_TRUE(s2.has_value());
  SendTokens(*worker, s2->request, {40}, control::FinishReason::kNone);
  EXPECT_FALSE(streamed.Read(3000, "\n\n").empty());
  worker.reset();  // the rank's connection closes
  const std::string r1 = plain.get();
  EXPECT_NE(r1.find("503"), std::string::npos) << r1;
  EXPECT_NE(r1.find("engine group g0 failed"), std::string::npos) << r1;
  const std::string r2 = streamed.Read(5000, "[DONE]");
  EXPECT_NE(r2.find("\"error\""), std::string::npos) << r2;
  EXPECT_NE(r2.find("engine group g0 failed"), std::string::npos) << r2;
  // Nothing is left in flight, and with no group the next request is refused at once.
  const std::string r3 = HttpOnce(c.http_port(), Post("/v1/completions", CompletionBody(1)), 5000);
  EXPECT_NE(r3.find("503"), std::string::npos) << r3;
  EXPECT_NE(r3.find("no engine group is ready"), std::string::npos) << r3;
}

// With migration on, a worker that dies mid-request is a pause: when the group comes back (a new
// incarnation of g0), both requests are resubmitted as prompt + the tokens their clients already
// have, and they finish there without an error or a repeated token.
TEST(CoordinatorMigration, RequestsOfADeadWorkerFinishOnItsRelaunchedGroup) {
  LiveCoordinator c{"", [](EngineConfig& cfg) {
                      cfg.server.heartbeat_timeout_ms = 60000;
                      cfg.server.migration_timeout_s = 30;
                    }};
  auto first = std::make_unique<FakeWorker>(c, "g0");
  ASSERT_TRUE(first->joined());
  const int port = c.http_port();
  auto plain = std::async(std::launch::async,
                          [port] { return HttpOnce(port, Post("/v1/completions", CompletionBody(4)), 20000); });
  auto s1 = first->Next<control::Submit>(5000);
  ASSERT_TRUE(s1.has_value());
  RawConnection streamed(port);
  ASSERT_TRUE(streamed.Send(Post("/v1/completions", CompletionBody(4, /*stream=*/true))));
  auto s2 = first->Next<control::Submit>(5000);
  ASSERT_TRUE(s2.has_value());
  SendTokens(*first, s1->request, {40}, control::FinishReason::kNone);
  SendTokens(*first, s2->request, {50, 51}, control::FinishReason::kNone);
  std::string stream_text = streamed.Read(3000, "\n\n");
  EXPECT_FALSE(stream_text.empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the tokens reach the coordinator first
  first.reset();  // the rank dies

  FakeWorker again(c, "g0");  // relaunched: a new incarnation
  ASSERT_TRUE(again.joined());
  std::map<uint64_t, control::Submit> resumed;
  for (int i = 0; i < 2; ++i) {
    auto s = again.Next<control::Submit>(5000);
    ASSERT_TRUE(s.has_value());
    resumed[s->request] = *s;
  }
  ASSERT_EQ(resumed.count(s1->request), 1u);
  ASSERT_EQ(resumed.count(s2->request), 1u);
  EXPECT_EQ(resumed[s1->request].prompt, (std::vector<int32_t>{1, 2, 3, 40}));
  EXPECT_EQ(resumed[s1->request].resumed_output, 1u);
  EXPECT_EQ(resumed[s2->request].prompt, (std::vector<int32_t>{1, 2, 3, 50, 51}));
  EXPECT_EQ(resumed[s2->request].resumed_output, 2u);
  EXPECT_EQ(resumed[s2->request].sampling.seed, s2->sampling.seed) << "the same seed continues the draw";
  SendTokens(again, s1->request, {41, 42, 43}, control::FinishReason::kLength);
  SendTokens(again, s2->request, {52, 53}, control::FinishReason::kLength);

  const nlohmann::json body = BodyOf(plain.get());
  ASSERT_TRUE(body.is_object()) << body;
  EXPECT_EQ(body["choices"][0]["token_ids"].get<std::vector<int32_t>>(), (std::vector<int32_t>{40, 41, 42, 43}));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  std::vector<int32_t> ids;
  std::string finish;
  stream_text += streamed.Read(5000, "[DONE]");
  for (const std::string& e : Events(stream_text)) {
    if (e == "[DONE]") continue;
    const nlohmann::json j = nlohmann::json::parse(e, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << e;
    ASSERT_FALSE(j.contains("error")) << e;
    for (const auto& ch : j["choices"]) {
      if (ch.contains("token_ids") && ch["token_ids"].is_array()) {
        for (const auto& t : ch["token_ids"]) ids.push_back(t.get<int32_t>());
      }
      if (ch.contains("finish_reason") && ch["finish_reason"].is_string()) finish = ch["finish_reason"];
    }
  }
  EXPECT_EQ(ids, (std::vector<int32_t>{50, 51, 52, 53})) << "no token repeated or lost";
  EXPECT_EQ(finish, "length");
}

// With return_token_ids, a stream carries the prompt's ids in its first chunk and each chunk's token
// ids in that chunk (vLLM's extension); they add up to every token, the stop token included.
TEST_F(CoordinatorRequests, StreamsCarryTokenIdsWhenAsked) {
  FakeWorker& w = *worker;
  RawConnection client(c.http_port());
  ASSERT_TRUE(client.Send(Post("/v1/completions", CompletionBody(8, /*stream=*/true))));
  auto submit = Submitted();
  ASSERT_TRUE(submit.has_value());
  SendTokens(w, submit->request, {40, 41}, control::FinishReason::kNone);
  std::string all = client.Read(3000, "\n\n");
  EXPECT_FALSE(all.empty());
  SendTokens(w, submit->request, {42, 2}, control::FinishReason::kStop);
  all += client.Read(3000, "[DONE]");
  std::vector<int32_t> ids, prompt_ids;
  for (const std::string& e : Events(all)) {
    if (e == "[DONE]") continue;
    const auto j = nlohmann::json::parse(e);
    const auto& choice = j.at("choices").at(0);
    if (choice.contains("prompt_token_ids")) {
      EXPECT_TRUE(prompt_ids.empty()) << "the prompt's ids come once";
      prompt_ids = choice["prompt_token_ids"].get<std::vector<int32_t>>();
    }
    if (choice.contains("token_ids")) {
      for (int32_t t : choice["token_ids"]) ids.push_back(t);
    }
  }
  EXPECT_EQ(prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(ids, (std::vector<int32_t>{40, 41, 42, 2}));
}

// Text work runs off the thread that reads heartbeats: a chat template that takes several heartbeat
// timeouts to render must not get a healthy rank declared dead.
TEST(CoordinatorThreads, ASlowTemplateDoesNotStarveHeartbeats) {
  testing::ScratchDir dir;
  const std::string fixture = testing::FixturesDir() + "/qwen3-moe-f32";
  for (const char* f : {"config.json", "tokenizer.json"}) {
    std::filesystem::copy_file(fixture + "/" + f, dir.path() / f);
  }
  // Nearly 10^6 loop iterations (the renderer's limit), each serializing the client's message.
  const nlohmann::json tokenizer_config = {
      {"eos_token", "<|im_end|>"},
      {"chat_template",
       "{% for i in range(1000) %}{% for j in range(990) %}{% set x = messages | tojson %}{% endfor %}{% endfor %}"
       "{{ messages[0]['content'] }}"}};
  testing::WriteText(dir.path() / "tokenizer_config.json", tokenizer_config.dump());
  LiveCoordinator c("", [&](EngineConfig& cfg) {
    cfg.model_path = dir.path().string();
    cfg.server.heartbeat_ms = 50;
    cfg.server.heartbeat_timeout_ms = 300;
  });
  FakeWorker w(c, "g0");
  ASSERT_TRUE(w.joined());
  w.StartHeartbeats(50, /*steps=*/0);
  const nlohmann::json body = {{"messages", {{{"role", "user"}, {"content", std::string(100, 'x')}}}}, {"max_tokens", 1}};
  const auto t0 = std::chrono::steady_clock::now();
  auto reply = std::async(std::launch::async, [&] { return HttpOnce(c.http_port(), Post("/v1/chat/completions", body), 60000); });
  auto submit = w.Next<control::Submit>(20000);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(submit.has_value()) << "no Submit after " << seconds << " s: " << reply.get();
  EXPECT_GT(seconds, 0.6) << "the render was too quick to test anything (" << seconds << " s)";
  SendTokens(w, submit->request, {7}, control::FinishReason::kLength);
  EXPECT_NE(reply.get().find("200 OK"), std::string::npos);
  EXPECT_NE(HttpOnce(c.http_port(), "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").find("200 OK"),
            std::string::npos);
}

// Many streams at once over several session threads: each gets exactly its own tokens, in order.
TEST(CoordinatorThreads, ConcurrentStreamsOnSeveralSessionThreadsGetTheirOwnTokens) {
  LiveCoordinator c("", [](EngineConfig& cfg) {
    Patient(cfg);
    cfg.server.http_threads = 3;
  });
  FakeWorker w(c, "g0");
  ASSERT_TRUE(w.joined());
  constexpr int kStreams = 12, kSteps = 20;
  std::vector<std::unique_ptr<RawConnection>> clients;
  std::vector<uint64_t> ids;
  for (int i = 0; i < kStreams; ++i) {
    clients.push_back(std::make_unique<RawConnection>(c.http_port()));
    nlohmann::json body = CompletionBody(kSteps, /*stream=*/true);
    body["prompt"] = std::vector<int>{1, 2, 3 + i};
    ASSERT_TRUE(clients.back()->Send(Post("/v1/completions", body)));
    auto submit = w.Next<control::Submit>(5000);
    ASSERT_TRUE(submit.has_value());
    ASSERT_EQ(submit->prompt.back(), 3 + i);
    ids.push_back(submit->request);
  }
  // One frame per step, with a token for every stream: stream i gets 10 + i, 11 + i, ...
  for (int step = 0; step < kSteps; ++step) {
    control::Tokens t;
    for (int i = 0; i < kStreams; ++i) {
      t.events.push_back({ids[i], 10 + i + step, step + 1 == kSteps ? control::FinishReason::kLength : control::FinishReason::kNone, ""});
    }
    ASSERT_TRUE(w.socket().SendMessage(t).ok());
  }
  for (int i = 0; i < kStreams; ++i) {
    const std::string all = clients[i]->Read(10000, "[DONE]");
    std::vector<int32_t> got;
    std::string finish;
    for (const std::string& e : Events(all)) {
      if (e == "[DONE]") continue;
      const auto j = nlohmann::json::parse(e);
      const auto& choice = j.at("choices").at(0);
      if (choice.contains("token_ids")) {
        for (int32_t id : choice["token_ids"]) got.push_back(id);
      }
      if (choice["finish_reason"].is_string()) finish = choice["finish_reason"];
    }
    std::vector<int32_t> want;
    for (int step = 0; step < kSteps; ++step) want.push_back(10 + i + step);
    EXPECT_EQ(got, want) << "stream " << i;
    EXPECT_EQ(finish, "length") << "stream " << i;
  }
}

}  // namespace
}  // namespace shoal
