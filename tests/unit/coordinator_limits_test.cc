// The coordinator against hostile or broken clients and peers, over real sockets (a coordinator on
// loopback, raw HTTP bytes, fake worker ranks speaking the control protocol by hand): bounded metrics
// labels, the API key checked before a body is read, connection caps, idle timeouts, a bounded and
// answered first control frame, forgotten groups, request deadlines, disconnects behind a stray byte
// and a rank that heartbeats but never finishes a step. Each of these failed before its fix.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "tests/unit/live_coordinator.h"
#include "tests/unit/test_files.h"

namespace shoal {
namespace {

using testing::FakeWorker;
using testing::HttpOnce;
using testing::LiveCoordinator;
using testing::RawConnection;

constexpr const char* kKey = "sekret-key";

std::string Get(const std::string& path, const std::string& extra_headers = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + extra_headers + "Connection: close\r\n\r\n";
}

std::string Completion(int max_tokens, bool stream = false) {
  const std::string body = "{\"model\":\"qwen3-moe-f32\",\"prompt\":[1,2,3],\"max_tokens\":" + std::to_string(max_tokens) +
                           ",\"ignore_eos\":true,\"stream\":" + (stream ? "true" : "false") + "}";
  return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

bool ValidUtf8(const std::string& s) { return shoal::ValidUtf8(s) == s; }

size_t CountLines(const std::string& text, const std::string& prefix) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find("\n" + prefix, p)) != std::string::npos; ++p) ++n;
  return n;
}

// Finding 1: each distinct path used to become a series of its own, before the API key was checked.
TEST(CoordinatorLimits, RequestCounterLabelsComeFromAFixedSet) {
  LiveCoordinator c("", [](EngineConfig& cfg) { cfg.server.api_keys = {kKey}; });
  for (int i = 0; i < 200; ++i) HttpOnce(c.http_port(), Get("/v1/x" + std::to_string(i)));
  HttpOnce(c.http_port(), Get("/v1/\xff\xfe"));
  HttpOnce(c.http_port(), Get("/nowhere"));
  const std::string metrics = HttpOnce(c.http_port(), Get("/metrics"));
  ASSERT_NE(metrics.find("200 OK"), std::string::npos) << metrics.substr(0, 200);
  EXPECT_LE(CountLines(metrics, "shoal_http_requests_total{"), 8u) << "one series per known route, plus other";
  EXPECT_NE(metrics.find("shoal_http_requests_total{path=\"other\",model_name=\"qwen3-moe-f32\"} 202"), std::string::npos)
      << "model_name on every series, after its own labels";
  EXPECT_TRUE(ValidUtf8(metrics));
}

// Finding 3: the body used to be read (up to max_body_bytes) before the key was looked at.
TEST(CoordinatorLimits, ApiKeyIsCheckedBeforeTheBodyIsRead) {
  LiveCoordinator c("", [](EngineConfig& cfg) { cfg.server.api_keys = {kKey}; });
  RawConnection conn(c.http_port());
  ASSERT_TRUE(conn.connected());
  // A header announcing a large body, and no body at all: the answer must not wait for it.
  ASSERT_TRUE(conn.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 900000\r\n\r\n"));
  const std::string reply = conn.Read(3000);
  EXPECT_NE(reply.find("401"), std::string::npos) << reply;
  EXPECT_TRUE(conn.closed_by_peer()) << "the connection is closed: the unread body makes it unusable";
  // With the key, the same header waits for its body as usual (nothing comes back yet).
  RawConnection ok(c.http_port());
  ASSERT_TRUE(ok.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + std::string(kKey) +
                      "\r\nContent-Length: 900000\r\n\r\n"));
  EXPECT_EQ(ok.Read(500), "");
}

// Finding 3: connections were unbounded; the one over the cap now gets a 503 and is closed.
TEST(CoordinatorLimits, ConnectionsOverTheCapAreRefused) {
  LiveCoordinator c("", [](EngineConfig& cfg) { cfg.server.max_connections = 3; });
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawConnection>(c.http_port()));
    ASSERT_TRUE(held.back()->connected());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // all three accepted and in a session
  const std::string refused = HttpOnce(c.http_port(), Get("/health"), 3000);
  EXPECT_NE(refused.find("503"), std::string::npos) << refused;
  EXPECT_NE(refused.find("max_connections"), std::string::npos) << refused;
  held.clear();  // their sessions end; new connections are served again
  std::string served;
  for (int i = 0; i < 30 && served.find("200 OK") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    served = HttpOnce(c.http_port(), Get("/health"));
  }
  EXPECT_NE(served.find("200 OK"), std::string::npos) << served;
}

// Finding 3: an idle keep-alive connection (or one that never finishes its header) used to be held
// 120 s; now server.keepalive_timeout_s.
TEST(CoordinatorLimits, IdleConnectionsAreClosedAfterTheKeepAliveTimeout) {
  LiveCoordinator c("", [](EngineConfig& cfg) { cfg.server.keepalive_timeout_s = 1; });
  RawConnection idle(c.http_port()), slow(c.http_port());
  ASSERT_TRUE(slow.Send("GET /health HTTP/1.1\r\nHost: x\r\n"));  // a header that never ends
  idle.Read(4000);
  slow.Read(4000);
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_TRUE(slow.closed_by_peer());
}

// Finding 2: the first control frame was sized by the peer (up to 16 MiB) before the secret was
// checked, and a bad one was dropped without a word; now it is bounded, and answered with a Reject.
TEST(CoordinatorLimits, BadFirstControlFramesGetARejectAndNoBuffer) {
  LiveCoordinator c("join-secret");
  auto header = [](uint16_t version, control::MessageType type, uint32_t payload) {
    control::FrameHeader h{};
    h.magic = control::kMagic;
    h.version = version;
    h.type = static_cast<uint16_t>(type);
    h.payload_bytes = payload;
    std::string bytes(control::kHeaderBytes, '\0');
    std::memcpy(bytes.data(), &h, control::kHeaderBytes);
    return bytes;
  };
  const struct {
    std::string bytes, says;
  } cases[] = {
      {header(control::kProtocolVersion, control::MessageType::kHello, 16u << 20), "handshake limit"},
      {header(control::kProtocolVersion + 1, control::MessageType::kHello, 10), "protocol version"},
      {header(control::kProtocolVersion, control::MessageType::kHeartbeat, 0), "must be a Hello or a Rendezvous"},
  };
  for (const auto& k : cases) {
    RawConnection conn(c.port());
    ASSERT_TRUE(conn.connected());
    ASSERT_TRUE(conn.Send(k.bytes));
    const std::string reply = conn.Read(3000);
    ASSERT_GE(reply.size(), control::kHeaderBytes) << k.says;
    auto h = control::DecodeHeader(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(reply.data()),
                                                            control::kHeaderBytes));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->type, static_cast<uint16_t>(control::MessageType::kReject)) << k.says;
    EXPECT_NE(reply.find(k.says), std::string::npos) << k.says << ": " << reply.substr(control::kHeaderBytes);
  }
}

// Finding 5: a group that joined once and left kept /ready unready forever.
TEST(CoordinatorLimits, AGroupThatLeftIsForgotten) {
  LiveCoordinator c("", [](EngineConfig& cfg) {
    cfg.server.group_forget_s = 1;
    cfg.server.heartbeat_timeout_ms = 60000;  // the fake ranks send no heartbeats
  });
  {
    FakeWorker gone(c, "mistyped");
    ASSERT_TRUE(gone.joined());
    ASSERT_TRUE(gone.socket().SendMessage(control::Bye{"launched by mistake"}).ok());
  }
  FakeWorker stays(c, "g0");
  ASSERT_TRUE(stays.joined());
  bool ready = false;
  for (int i = 0; i < 60 && !ready; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ready = c.coordinator().ReadyGroups(1);
  }
  EXPECT_TRUE(ready) << "the group that left is still counted";
  EXPECT_NE(HttpOnce(c.http_port(), Get("/ready")).find("200 OK"), std::string::npos);
}

// "Also": a non-streamed request gets 504 at server.request_timeout_s, and the worker is told to drop it.
TEST(CoordinatorLimits, NonStreamedRequestsTimeOut) {
  LiveCoordinator c("", [](EngineConfig& cfg) {
    cfg.server.request_timeout_s = 1;
    cfg.server.heartbeat_timeout_ms = 60000;
  });
  FakeWorker w(c, "g0");  // takes the request and never answers it
  ASSERT_TRUE(w.joined());
  const std::string reply = HttpOnce(c.http_port(), Completion(100), 5000);
  EXPECT_NE(reply.find("504"), std::string::npos) << reply;
  EXPECT_NE(reply.find("request_timeout_s"), std::string::npos) << reply;
  auto submit = w.Next<control::Submit>(2000);  // read in order: the Submit came first
  ASSERT_TRUE(submit.has_value());
  auto cancel = w.Next<control::Cancel>(2000);
  ASSERT_TRUE(cancel.has_value());
  EXPECT_EQ(cancel->request, submit->request);
}

// Finding 8: one byte after a non-streamed request used to end the watch for the client's
// disconnect, and the request ran to max_tokens after the client was gone.
TEST(CoordinatorLimits, ADisconnectBehindAStrayByteIsStillNoticed) {
  LiveCoordinator c("", [](EngineConfig& cfg) { cfg.server.heartbeat_timeout_ms = 60000; });
  FakeWorker w(c, "g0");
  ASSERT_TRUE(w.joined());
  RawConnection client(c.http_port());
  ASSERT_TRUE(client.Send(Completion(100)));
  auto submit = w.Next<control::Submit>(3000);
  ASSERT_TRUE(submit.has_value());
  // The stray byte after the request was parsed (a separate send), so it stays in the socket.
  ASSERT_TRUE(client.Send("x"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the watch has seen the byte
  client.Close();
  auto cancel = w.Next<control::Cancel>(3000);
  ASSERT_TRUE(cancel.has_value()) << "the coordinator did not notice the client leave";
  EXPECT_EQ(cancel->request, submit->request);
}

// "Also": a rank that heartbeats but never finishes a step fails its requests at step_timeout_ms
// (with migration off; with it on, they would wait for another group — request_table_test).
TEST(CoordinatorLimits, ARankHungInAStepFailsItsRequests) {
  LiveCoordinator c("", [](EngineConfig& cfg) {
    cfg.server.step_timeout_ms = 300;
    cfg.server.heartbeat_ms = 50;
    cfg.server.heartbeat_timeout_ms = 60000;
    cfg.server.migration_timeout_s = 0;
  });
  FakeWorker w(c, "g0");
  ASSERT_TRUE(w.joined());
  w.StartHeartbeats(50, /*steps=*/0);
  const std::string reply = HttpOnce(c.http_port(), Completion(100), 5000);
  EXPECT_NE(reply.find("503"), std::string::npos) << reply;
  EXPECT_NE(reply.find("hung in a step"), std::string::npos) << reply;
}

}  // namespace
}  // namespace shoal
