#include "coordinator/rendezvous.h"

namespace shoal::coord {

void RendezvousTable::DropExpired(Clock::time_point now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = now - it->second.posted >= ttl_ ? entries_.erase(it) : std::next(it);
  }
}

Status RendezvousTable::Post(const std::string& group, uint32_t size, std::string id, Clock::time_point now) {
  if (size == 0) return InvalidArgument("rendezvous of group " + group + ": a group has at least one rank");
  if (id.empty()) return InvalidArgument("rendezvous of group " + group + ": rank 0 posted an empty id");
  DropExpired(now);
  if (size == 1) {
    entries_.erase(group);
    return Status::Ok();
  }
  if (!entries_.contains(group) && entries_.size() >= kMaxPending) {
    return ResourceExhausted("rendezvous of group " + group + ": " + std::to_string(kMaxPending) +
                             " groups are already waiting for their ranks");
  }
  Entry& e = entries_[group];
  e.size = size;
  e.id = std::move(id);
  e.taken.assign(size, false);
  e.taken[0] = true;
  e.posted = now;
  return Status::Ok();
}

StatusOr<std::optional<std::string>> RendezvousTable::Take(const std::string& group, uint32_t rank, uint32_t size,
                                                           Clock::time_point now) {
  if (rank == 0 || rank >= size) {
    return InvalidArgument("rendezvous of group " + group + ": rank " + std::to_string(rank) + " cannot take an id in a group of " +
                           std::to_string(size));
  }
  DropExpired(now);
  auto it = entries_.find(group);
  if (it == entries_.end()) return std::optional<std::string>();
  Entry& e = it->second;
  if (e.size != size) {
    return InvalidArgument("rendezvous of group " + group + ": rank 0 started a group of " + std::to_string(e.size) +
                           " ranks, this worker says " + std::to_string(size));
  }
  if (e.taken[rank]) return std::optional<std::string>();  // a restarted rank: wait for the next post
  e.taken[rank] = true;
  return std::optional<std::string>(e.id);
}

void RendezvousTable::GiveBack(const std::string& group, uint32_t rank, const std::string& id) {
  auto it = entries_.find(group);
  if (it != entries_.end() && it->second.id == id && rank < it->second.size) it->second.taken[rank] = false;
}

}  // namespace shoal::coord
