#include "control/frame_socket.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace shoal::control {

namespace {

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

StatusOr<int> TryConnect(const std::string& host, int port, int64_t send_timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_s = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), port_s.c_str(), &hints, &res); rc != 0) {
    return Unavailable("resolving " + host + ": " + gai_strerror(rc));
  }
  Status last = Unavailable("no address for " + host);
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = Unavailable(Errno("socket"));
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      freeaddrinfo(res);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // token frames are small and latency-bound
      // A coordinator whose machine vanishes without closing the connection must still end the
      // worker's reads and sends in bounded time: keepalive probes after 10 s idle, unacknowledged
      // data failing after 30 s, and no send blocking longer than send_timeout_ms (30 s by default).
      int idle = 10, interval = 5, count = 3;
      unsigned int user_timeout_ms = 30000;
      timeval send_timeout{static_cast<time_t>(send_timeout_ms / 1000),
                           static_cast<suseconds_t>(send_timeout_ms % 1000 * 1000)};
      setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
      setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
      return fd;
    }
    last = Unavailable(Errno(("connecting to " + host + ":" + port_s).c_str()));
    close(fd);
  }
  freeaddrinfo(res);
  return last;
}

}  // namespace

StatusOr<std::unique_ptr<FrameSocket>> FrameSocket::Connect(const std::string& host, int port, int64_t timeout_ms,
                                                            int64_t send_timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    StatusOr<int> fd = TryConnect(host, port, send_timeout_ms);
    if (fd.ok()) return std::unique_ptr<FrameSocket>(new FrameSocket(*fd, host + ":" + std::to_string(port)));
    if (std::chrono::steady_clock::now() >= until) {
      return Unavailable("coordinator " + host + ":" + std::to_string(port) + " not reachable within " +
                         std::to_string(timeout_ms) + " ms (" + fd.status().message() + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

FrameSocket::~FrameSocket() { close(fd_); }

void FrameSocket::Shutdown() { ::shutdown(fd_, SHUT_RDWR); }

Status FrameSocket::SendMessage(const Message& m) {
  const std::string frame = EncodeFrame(m);
  std::lock_guard<std::mutex> lock(write_mu_);
  if (!send_error_.empty()) return Unavailable(send_error_);
  size_t off = 0;
  while (off < frame.size()) {
    ssize_t n = ::send(fd_, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A frame may be half written (a send timeout) or lost: nothing after it could be read right, so
      // the connection is over — later sends fail at once, and the reader wakes with Unavailable.
      send_error_ = Errno(("sending to coordinator " + peer_).c_str());
      ::shutdown(fd_, SHUT_RDWR);
      return Unavailable(send_error_);
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FrameSocket::ReadExactly(uint8_t* p, size_t n, int64_t timeout_ms) {
  size_t got = 0;
  while (got < n) {
    if (timeout_ms >= 0) {
      pollfd pfd{fd_, POLLIN, 0};
      int rc = poll(&pfd, 1, static_cast<int>(timeout_ms));
      if (rc < 0 && errno == EINTR) continue;
      if (rc == 0) {
        if (got == 0) return DeadlineExceeded("no frame from " + peer_);
        // Part of a frame is here: the rest follows promptly from a live peer.
        timeout_ms = 10000;
        continue;
      }
    }
    ssize_t r = ::recv(fd_, p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Unavailable("coordinator " + peer_ + " closed the connection");
    if (r < 0) return Unavailable(Errno(("reading from coordinator " + peer_).c_str()));
    got += static_cast<size_t>(r);
  }
  return Status::Ok();
}

StatusOr<Message> FrameSocket::ReadMessage(int64_t timeout_ms) {
  uint8_t header[kHeaderBytes];
  SHOAL_RETURN_IF_ERROR(ReadExactly(header, kHeaderBytes, timeout_ms));
  SHOAL_ASSIGN_OR_RETURN(FrameHeader h, DecodeHeader(header));
  std::vector<uint8_t> payload(h.payload_bytes);
  SHOAL_RETURN_IF_ERROR(ReadExactly(payload.data(), payload.size(), 10000));
  return DecodePayload(static_cast<MessageType>(h.type), payload);
}

}  // namespace shoal::control
