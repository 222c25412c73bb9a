// Test helpers around a real coordinator on loopback: the coordinator itself (run on its own thread),
// a raw TCP client for HTTP bytes exactly as written, and a fake worker rank that speaks the control
// protocol by hand (tests/unit/rendezvous_test.cc, coordinator_limits_test.cc).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/config.h"
#include "control/frame_socket.h"
#include "control/wire.h"
#include "coordinator/coordinator.h"
#include "tests/unit/fixture_util.h"

namespace shoal::testing {

// A coordinator serving the tiny Qwen3-MoE fixture on loopback, run on its own thread. `adjust` may
// change the configuration (limits, API keys) before it starts.
class LiveCoordinator {
 public:
  explicit LiveCoordinator(const std::string& token = "", const std::function<void(EngineConfig&)>& adjust = nullptr) {
    EngineConfig cfg;
    cfg.model_path = FixturesDir() + "/qwen3-moe-f32";
    cfg.server.port = 0;
    cfg.server.control_token = token;
    cfg.startup_timeout_s = 30;
    if (adjust) adjust(cfg);
    auto c = Coordinator::Create(cfg);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    c_ = std::move(*c);
    runner_ = std::thread([this] { (void)c_->Run(); });
  }
  ~LiveCoordinator() {
    c_->Stop(100);
    runner_.join();
  }
  int port() const { return c_->control_port(); }
  int http_port() const { return c_->http_port(); }
  const std::string& model() const { return c_->model_name(); }
  Coordinator& coordinator() { return *c_; }

 private:
  std::unique_ptr<Coordinator> c_;
  std::thread runner_;
};

// A blocking TCP connection to 127.0.0.1:port for bytes written by hand.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }
  bool Send(const std::string& bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // Everything that arrives until the peer closes, `until` is seen, or timeout_ms passes.
  std::string Read(int timeout_ms, const std::string& until = "") {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (::poll(&p, 1, left > 0 ? left : 0) <= 0) break;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_by_peer_ = true;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
      if (!until.empty() && got.find(until) != std::string::npos) break;
    }
    return got;
  }
  // Whether the last Read ended because the peer closed the connection.
  bool closed_by_peer() const { return closed_by_peer_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_by_peer_ = false;
};

// One HTTP/1.1 request on a fresh connection; the whole response (the server closes or answers).
inline std::string HttpOnce(int port, const std::string& request, int timeout_ms = 5000) {
  RawConnection c(port);
  if (!c.connected() || !c.Send(request)) return "";
  return c.Read(timeout_ms);
}

// A worker rank that speaks the control protocol by hand: Hello (with the fixture model's name and
// vocabulary), then whatever the test sends and reads.
class FakeWorker {
 public:
  FakeWorker(LiveCoordinator& c, const std::string& group, const std::string& token = "") {
    auto s = control::FrameSocket::Connect("127.0.0.1", c.port(), 5000);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok()) return;
    sock_ = std::move(*s);
    control::Hello h;
    h.group = group;
    h.model = c.model();
    h.vocab_size = 320;  // the fixture's
    h.max_context = 256;
    h.max_num_seqs = 8;
    h.block_size = 16;
    h.kv_blocks = 64;
    h.kv_tokens = 1024;
    h.pid = static_cast<uint64_t>(getpid());
    h.host = "fake";
    h.token = token;
    EXPECT_TRUE(sock_->SendMessage(h).ok());
    auto m = sock_->ReadMessage(5000);
    joined_ = m.ok() && std::holds_alternative<control::Welcome>(*m);
    EXPECT_TRUE(joined_) << (m.ok() ? control::MessageTypeName(control::TypeOf(*m)) : m.status().ToString());
  }
  ~FakeWorker() { StopHeartbeats(); }

  bool joined() const { return joined_; }
  control::FrameSocket& socket() { return *sock_; }
  // Heartbeats every period_ms from a thread, reporting `steps` (a rank that never finishes a step
  // keeps it at 0).
  void StartHeartbeats(int period_ms, uint64_t steps = 0) {
    beating_ = true;
    beat_ = std::thread([this, period_ms, steps] {
      while (beating_) {
        control::Heartbeat hb;
        hb.steps = steps;
        if (!sock_->SendMessage(hb).ok()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(period_ms));
      }
    });
  }
  void StopHeartbeats() {
    beating_ = false;
    if (beat_.joinable()) beat_.join();
  }
  // The next frame of type T within timeout_ms (others are skipped), or nullopt.
  template <class T>
  std::optional<T> Next(int64_t timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      const int64_t left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      auto m = sock_->ReadMessage(left > 0 ? left : 0);
      if (!m.ok()) return std::nullopt;
      if (auto* t = std::get_if<T>(&*m)) return *t;
    }
    return std::nullopt;
  }

 private:
  std::unique_ptr<control::FrameSocket> sock_;
  bool joined_ = false;
  std::atomic<bool> beating_{false};
  std::thread beat_;
};

}  // namespace shoal::testing
