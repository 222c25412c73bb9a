// The worker's control connection (control/frame_socket.h) against a coordinator that stopped reading:
// a send that times out ends the connection, so no frame is ever written after a half-written one.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/frame_socket.h"
#include "tests/unit/test_files.h"

namespace shoal::control {
namespace {

using testing::MessageHas;

// A listener on loopback that accepts one connection and never reads from it.
class DeafPeer {
 public:
  DeafPeer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    EXPECT_EQ(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port_ = ntohs(a.sin_port);
  }
  ~DeafPeer() {
    if (conn_fd_ >= 0) ::close(conn_fd_);
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  void Accept() { conn_fd_ = ::accept(listen_fd_, nullptr, nullptr); }

 private:
  int listen_fd_ = -1, conn_fd_ = -1, port_ = 0;
};

// Finding 11 of the hardening issue: a send that timed out used to leave the connection open, and the
// worker went on as if its frame (a request's finish, say) had arrived.
TEST(FrameSocket, ASendThatTimesOutEndsTheConnection) {
  DeafPeer peer;
  auto sock = FrameSocket::Connect("127.0.0.1", peer.port(), 2000, /*send_timeout_ms=*/200);
  ASSERT_TRUE(sock.ok()) << sock.status().ToString();
  peer.Accept();
  Submit big;
  big.request = 1;
  big.prompt.assign(200000, 7);  // 800 KB a frame: the socket buffers fill within a few
  Status sent = Status::Ok();
  for (int i = 0; i < 200 && sent.ok(); ++i) sent = (*sock)->SendMessage(big);
  ASSERT_FALSE(sent.ok()) << "the peer never reads: some send must time out";
  EXPECT_EQ(sent.code(), StatusCode::kUnavailable);
  // Every later send fails at once, with the first failure's reason, and so does a read.
  const Status again = (*sock)->SendMessage(Cancel{1});
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.message(), sent.message());
  auto read = (*sock)->ReadMessage(1000);
  EXPECT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kUnavailable) << read.status().ToString();
}

}  // namespace
}  // namespace shoal::control
