#include "control/rendezvous_client.h"

#include <cstdio>

#include "control/frame_socket.h"

namespace shoal::control {

StatusOr<std::string> ShareGroupId(const std::string& host, int port, const Rendezvous& request,
                                   int64_t connect_timeout_ms, int64_t wait_ms) {
  const std::string who = "rank " + std::to_string(request.rank) + "/" + std::to_string(request.size) + " of group " +
                          request.group;
  SHOAL_ASSIGN_OR_RETURN(auto sock, FrameSocket::Connect(host, port, connect_timeout_ms));
  SHOAL_RETURN_IF_ERROR(sock->SendMessage(request).WithContext(who + ": rendezvous with " + sock->peer()));
  StatusOr<Message> reply = sock->ReadMessage(wait_ms);
  if (!reply.ok()) {
    if (reply.status().code() == StatusCode::kDeadlineExceeded) {
      return DeadlineExceeded(who + ": no id from coordinator " + sock->peer() + " within " + std::to_string(wait_ms) +
                              " ms (" + (request.rank == 0 ? "it did not answer" : "has rank 0 started?") + ")");
    }
    return reply.status().WithContext(who + ": rendezvous with " + sock->peer());
  }
  if (auto* r = std::get_if<Reject>(&*reply)) {
    return InvalidArgument(who + ": coordinator " + sock->peer() + " refused the rendezvous: " + r->reason);
  }
  auto* id = std::get_if<RendezvousId>(&*reply);
  if (id == nullptr) {
    return InvalidArgument(who + ": coordinator " + sock->peer() + " answered the rendezvous with a " +
                           MessageTypeName(TypeOf(*reply)) + " frame");
  }
  if (request.rank == 0 && id->id != request.id) {
    return InvalidArgument(who + ": coordinator " + sock->peer() + " acknowledged a different id than rank 0 posted");
  }
  return std::move(id->id);
}

std::string IdFingerprint(const std::string& id) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : id) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace shoal::control
