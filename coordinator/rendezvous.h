// The coordinator's rendezvous for groups launched without MPI (control/wire.h, Rendezvous): rank 0
// of a group posts the id its data plane needs on every rank (NCCL's unique id), the other ranks take
// it. Pure bookkeeping, no I/O and no clock of its own: the coordinator's worker link parks a rank
// that asked too early and asks again when rank 0 posts.
//
// An id is handed to each rank once: a rank that asks again (it restarted) waits for rank 0's next
// post, since the communicator behind the old id died with the old launch. A new post replaces the
// old id and forgets who took it. An id lives `ttl` after its post — the time its ranks have to join —
// and is then forgotten, so a later launch under the same name is never handed a dead one (launchers
// should still name each launch's group uniquely, e.g. after the job id: a rank of a new launch that
// asks before its rank 0 has posted would otherwise get the previous launch's id while that lives).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::coord {

class RendezvousTable {
 public:
  using Clock = std::chrono::steady_clock;
  // At most this many groups may have a live id; more is ResourceExhausted.
  static constexpr size_t kMaxPending = 1024;

  explicit RendezvousTable(std::chrono::milliseconds ttl) : ttl_(ttl) {}

  // Rank 0 of `group` posts `id` for a group of `size` ranks (replacing an earlier post). A group of
  // one has nobody to share with: nothing is kept.
  Status Post(const std::string& group, uint32_t size, std::string id, Clock::time_point now);

  // Rank `rank` (> 0) of a group of `size` asks for the id: the id when rank 0 has posted a live one
  // this rank has not taken yet; nullopt when it must wait for a post; InvalidArgument when rank 0
  // posted for a different group size.
  StatusOr<std::optional<std::string>> Take(const std::string& group, uint32_t rank, uint32_t size,
                                            Clock::time_point now);

  // Undoes a Take whose answer never reached the rank (its connection broke), if `id` is still the
  // group's: the rank may then take it again.
  void GiveBack(const std::string& group, uint32_t rank, const std::string& id);

  // Live ids (expired ones count until the next Post or Take drops them).
  size_t pending() const { return entries_.size(); }

 private:
  struct Entry {
    uint32_t size = 0;
    std::string id;
    std::vector<bool> taken;  // [size]; rank 0's is true from the post
    Clock::time_point posted;
  };
  void DropExpired(Clock::time_point now);

  std::chrono::milliseconds ttl_;
  std::map<std::string, Entry> entries_;
};

}  // namespace shoal::coord
