#include "coordinator/worker_link.h"

#include "coordinator/control_plane.h"

namespace shoal::coord {

awaitable<StatusOr<control::Message>> ReadFrame(tcp::socket& s, bool first) {
  uint8_t header[control::kHeaderBytes];
  boost::system::error_code ec;
  co_await asio::async_read(s, asio::buffer(header), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return Unavailable(ec == asio::error::eof ? "connection closed" : ec.message());
  StatusOr<control::FrameHeader> h = control::DecodeHeader(header);
  if (!h.ok()) co_return h.status();
  if (first) {
    const auto type = static_cast<control::MessageType>(h->type);
    if (type != control::MessageType::kHello && type != control::MessageType::kRendezvous) {
      co_return InvalidArgument(std::string("the first frame must be a Hello or a Rendezvous, not ") +
                                control::MessageTypeName(type));
    }
    if (h->payload_bytes > control::kMaxHandshakePayloadBytes) {
      co_return InvalidArgument("a first frame of " + std::to_string(h->payload_bytes) +
                                " bytes exceeds the handshake limit of " +
                                std::to_string(control::kMaxHandshakePayloadBytes));
    }
  }
  std::vector<uint8_t> payload(h->payload_bytes);
  co_await asio::async_read(s, asio::buffer(payload), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return Unavailable(ec == asio::error::eof ? "connection closed mid-frame" : ec.message());
  co_return control::DecodePayload(static_cast<control::MessageType>(h->type), payload);
}

void WorkerLink::Send(const control::Message& m) {
  if (closed_) return;
  out_.push_back(control::EncodeFrame(m));
  if (writing_) return;
  writing_ = true;
  asio::co_spawn(socket_.get_executor(), [self = shared_from_this()]() { return self->WriteQueued(); }, asio::detached);
}

awaitable<void> WorkerLink::WriteQueued() {
  while (!out_.empty() && !closed_) {
    boost::system::error_code ec;
    co_await asio::async_write(socket_, asio::buffer(out_.front()), asio::redirect_error(use_awaitable, ec));
    if (ec) {
      // A frame lost or half-written (a finish among them) must not leave requests open: the rank fails.
      if (auto rank = rank_.lock()) plane_.RankFailed(rank, "sending to it failed: " + ec.message());
      Close();
      break;
    }
    out_.pop_front();
  }
  writing_ = false;
}

void WorkerLink::Close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace shoal::coord
