#include "coordinator/net_util.h"

#include <algorithm>

#include "common/log.h"

namespace shoal::coord {

Status BindAcceptor(tcp::acceptor& a, const std::string& host, int port, const char* what) {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument(std::string(what) + ": '" + host + "' is not an IP address");
  const tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable(std::string(what) + ": cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  return Status::Ok();
}

awaitable<void> AcceptBackoff(asio::io_context& io, int* delay_ms, const char* listener,
                              const boost::system::error_code& ec) {
  if (*delay_ms == 0) {
    log::Warn("accepting %s connections failed (%s); retrying with back-off", listener, ec.message().c_str());
  }
  *delay_ms = *delay_ms == 0 ? 10 : std::min(*delay_ms * 2, 1000);
  asio::steady_timer t(io, std::chrono::milliseconds(*delay_ms));
  boost::system::error_code ignored;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ignored));
}

std::string PeerName(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  return ec ? std::string("an unknown peer") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace shoal::coord
