// Socket helpers the coordinator's two listeners share (internal to coordinator/).
#pragma once

#include <atomic>
#include <string>

#include "common/status.h"
#include "coordinator/asio.h"

namespace shoal::coord {

// Opens, binds and listens; errors name `what` (the config keys) and the address.
Status BindAcceptor(tcp::acceptor& acceptor, const std::string& host, int port, const char* what);

// After a failed accept (out of descriptors, say): waits before the next try — 10 ms, doubling to 1 s
// while accepts keep failing — and logs the first failure of a run. *delay_ms is 0 after a success.
awaitable<void> AcceptBackoff(asio::io_context& io, int* delay_ms, const char* listener,
                              const boost::system::error_code& ec);

// Counts an open connection for the lifetime of its session (a local of the session coroutine). The
// count must outlive the io_context the session runs on: a session destroyed with it (at shutdown)
// still decrements it.
class ConnectionCount {
 public:
  explicit ConnectionCount(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
  ~ConnectionCount() { count_->fetch_sub(1); }
  ConnectionCount(const ConnectionCount&) = delete;
  ConnectionCount& operator=(const ConnectionCount&) = delete;

 private:
  std::atomic<int>* count_;
};

// "10.0.0.7:51234", or "an unknown peer".
std::string PeerName(const tcp::socket& s);

}  // namespace shoal::coord
