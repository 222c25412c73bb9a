// A blocking TCP connection that carries control frames (control/wire.h), for the worker side: one
// thread reads (ReadMessage), any thread may write (SendMessage serializes writers). The coordinator
// side uses Asio instead (coordinator/worker_link.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "control/wire.h"

namespace shoal::control {

class FrameSocket {
 public:
  // Connects to host:port (a name or a numeric address), retrying until timeout_ms has passed — the
  // coordinator may still be starting. A send blocked longer than send_timeout_ms (a peer that stopped
  // reading) fails.
  static StatusOr<std::unique_ptr<FrameSocket>> Connect(const std::string& host, int port, int64_t timeout_ms,
                                                        int64_t send_timeout_ms = 30000);
  ~FrameSocket();
  FrameSocket(const FrameSocket&) = delete;
  FrameSocket& operator=(const FrameSocket&) = delete;

  // Sends one frame. A failed send (an error, or the send timeout of a peer that stopped reading)
  // ends the connection: this and every later send fail, and a blocked ReadMessage returns Unavailable.
  Status SendMessage(const Message& m);
  // Blocks until a whole frame arrived and decoded, the peer closed (Unavailable), or a malformed frame
  // (InvalidArgument). timeout_ms < 0 waits forever; otherwise DeadlineExceeded when nothing came.
  StatusOr<Message> ReadMessage(int64_t timeout_ms = -1);
  // Wakes a blocked ReadMessage (it returns Unavailable) and makes later sends fail.
  void Shutdown();
  const std::string& peer() const { return peer_; }

 private:
  FrameSocket(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  Status ReadExactly(uint8_t* p, size_t n, int64_t timeout_ms);

  int fd_;
  std::string peer_;
  std::mutex write_mu_;
  std::string send_error_;  // guarded by write_mu_; set by the first failed send
};

}  // namespace shoal::control
