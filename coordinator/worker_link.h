// One worker rank's control connection, as the control thread holds it: frames are read by
// ControlPlane::Session, written in order from a queue here. It is the rank's RankChannel.
// Control thread only.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include "control/wire.h"
#include "coordinator/asio.h"
#include "coordinator/cluster.h"

namespace shoal::coord {

class ControlPlane;

// Reads one frame; an error_code or a decode Status ends the link. `first`: the handshake frame of a
// connection not yet authenticated — only a Hello or a Rendezvous, and no larger than those can be
// (control::kMaxHandshakePayloadBytes), checked before anything is allocated for its payload.
awaitable<StatusOr<control::Message>> ReadFrame(tcp::socket& s, bool first = false);

class WorkerLink : public RankChannel, public std::enable_shared_from_this<WorkerLink> {
 public:
  WorkerLink(ControlPlane& plane, tcp::socket socket) : plane_(plane), socket_(std::move(socket)) {}

  tcp::socket& socket() { return socket_; }
  bool joined() const { return joined_; }
  // The rank this connection joined as: a failed write fails it.
  void Joined(const std::shared_ptr<Rank>& rank) {
    rank_ = rank;
    joined_ = true;
  }

  void Send(const control::Message& m) override;
  void Close() override;

 private:
  awaitable<void> WriteQueued();

  ControlPlane& plane_;
  tcp::socket socket_;
  std::deque<std::string> out_;  // frames waiting to be written
  bool writing_ = false;
  bool closed_ = false;
  bool joined_ = false;
  std::weak_ptr<Rank> rank_;
};

}  // namespace shoal::coord
