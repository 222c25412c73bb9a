#include "coordinator/rendezvous.h"

namespace shoal::coord {

Status RendezvousTable::Post(const std::string& group, uint32_t size, std::string id) {
  if (size == 0) return InvalidArgument("rendezvous of group " + group + ": a group has at least one rank");
  if (id.empty()) return InvalidArgument("rendezvous of group " + group + ": rank 0 posted an empty id");
  if (!entries_.contains(group) && entries_.size() >= kMaxPending) {
    return ResourceExhausted("rendezvous of group " + group + ": " + std::to_string(kMaxPending) +
                             " groups are already waiting for their ranks");
  }
  // Counted and bounded like the entries: a posts_ row per group that ever posted, kept so a parked
  // rank can tell a new post from the one it saw.
  if (!posts_.contains(group) && posts_.size() >= 16 * kMaxPending) posts_.clear();
  ++posts_[group];
  if (size == 1) {
    entries_.erase(group);
    return Status::Ok();
  }
  Entry& e = entries_[group];
  e.size = size;
  e.id = std::move(id);
  e.taken.assign(size, false);
  e.taken[0] = true;
  e.left = size - 1;
  return Status::Ok();
}

StatusOr<std::optional<std::string>> RendezvousTable::Take(const std::string& group, uint32_t rank, uint32_t size) {
  if (rank == 0 || rank >= size) {
    return InvalidArgument("rendezvous of group " + group + ": rank " + std::to_string(rank) + " cannot take an id in a group of " +
                           std::to_string(size));
  }
  auto it = entries_.find(group);
  if (it == entries_.end()) return std::optional<std::string>();
  Entry& e = it->second;
  if (e.size != size) {
    return InvalidArgument("rendezvous of group " + group + ": rank 0 started a group of " + std::to_string(e.size) +
                           " ranks, this worker says " + std::to_string(size));
  }
  if (e.taken[rank]) return std::optional<std::string>();  // a restarted rank: wait for the next post
  e.taken[rank] = true;
  std::string id = e.id;
  if (--e.left == 0) entries_.erase(it);
  return std::optional<std::string>(std::move(id));
}

uint64_t RendezvousTable::posts(const std::string& group) const {
  auto it = posts_.find(group);
  return it == posts_.end() ? 0 : it->second;
}

}  // namespace shoal::coord
