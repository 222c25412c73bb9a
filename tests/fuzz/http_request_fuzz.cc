// libFuzzer target: raw bytes to a live coordinator's HTTP port — the real Beast parser, the API-key
// check, the router and the handlers — over loopback. Every input gets an answer or a close within a
// bound (never a hang), the server keeps serving (/health after each input), and /metrics stays valid
// UTF-8 with a bounded number of request series whatever the inputs' paths.
//
// The coordinator (the tiny Qwen3-MoE fixture, an API key, no workers: generation requests end in
// 503) is started once and shared by every input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "common/config.h"
#include "coordinator/coordinator.h"
#include "model/tokenizer.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http_request_fuzz: %s\n", what);
    std::abort();
  }
}

struct Server {
  Server() {
    shoal::EngineConfig cfg;
    cfg.model_path = std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/qwen3-moe-f32";
    cfg.server.port = 0;
    cfg.server.api_keys = {"fuzz-key"};
    cfg.server.max_body_bytes = 64 * 1024;
    cfg.server.keepalive_timeout_s = 2;
    auto c = shoal::Coordinator::Create(cfg);
    Check(c.ok(), "the coordinator did not start");
    coordinator = std::move(*c);
    runner = std::thread([this] { (void)coordinator->Run(); });
    runner.detach();  // lives as long as the process
  }
  std::unique_ptr<shoal::Coordinator> coordinator;
  std::thread runner;
};

// Sends `bytes`, closes the sending side, and reads until the server closes (or limit_ms passes).
// Returns what came back, and whether the server closed in time.
std::pair<std::string, bool> Exchange(int port, const std::string& bytes, int limit_ms) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  Check(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0, "cannot connect");
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (401, 413, a malformed header): fine
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string got;
  bool closed = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      closed = true;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return {got, closed};
}

bool ValidUtf8(const std::string& s) { return shoal::ValidUtf8(s) == s; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Server* server = new Server();
  static int inputs = 0;
  const int port = server->coordinator->http_port();
  // The body limit and the keep-alive timeout bound how long any input can hold its connection; a
  // generation request without workers ends at once. 10 s is far beyond every bound.
  const auto [reply, closed] = Exchange(port, std::string(reinterpret_cast<const char*>(data), size), 10000);
  Check(closed, "the server neither answered nor closed within 10 s");
  if (!reply.empty()) Check(reply.rfind("HTTP/1.", 0) == 0, "a reply that is not HTTP");
  // Still serving, and the exposition still bounded and valid.
  if (++inputs % 16 == 1) {
    const auto [health, health_closed] =
        Exchange(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10000);
    Check(health.find("200 OK") != std::string::npos, "/health stopped answering");
    const auto [metrics, metrics_closed] =
        Exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10000);
    Check(ValidUtf8(metrics), "/metrics is not valid UTF-8");
    size_t series = 0;
    for (size_t p = 0; (p = metrics.find("\nshoal_http_requests_total{", p)) != std::string::npos; ++p) ++series;
    Check(series <= 8, "the request counter grew beyond its fixed routes");
  }
  return 0;
}
