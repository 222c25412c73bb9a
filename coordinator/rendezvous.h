// The coordinator's rendezvous for groups launched without MPI (control/wire.h, Rendezvous): rank 0
// of a group posts the id its data plane needs on every rank (NCCL's unique id), the other ranks take
// it. Pure bookkeeping, no I/O: the coordinator's worker link parks a rank that asked too early and
// asks again when rank 0 posts.
//
// An id is handed to each rank once. A rank that asks again (it restarted) waits for rank 0's next
// post, since the communicator behind the old id died with the old incarnation; a new post replaces
// the old id and forgets who took it. When every rank has it, the entry is dropped.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::coord {

class RendezvousTable {
 public:
  // At most this many groups may have an id waiting for their ranks; more is ResourceExhausted.
  static constexpr size_t kMaxPending = 1024;

  // Rank 0 of `group` posts `id` for a group of `size` ranks (replacing an earlier post). A group of
  // one has nobody to share with: nothing is kept.
  Status Post(const std::string& group, uint32_t size, std::string id);

  // Rank `rank` (> 0) of a group of `size` asks for the id. The id when rank 0 has posted one this rank
  // has not taken yet; nullopt when it must wait for a post; InvalidArgument when rank 0 posted for a
  // different group size.
  StatusOr<std::optional<std::string>> Take(const std::string& group, uint32_t rank, uint32_t size);

  // Increments whenever `group` gets a new post: a parked rank compares it to know it must ask again.
  uint64_t posts(const std::string& group) const;
  size_t pending() const { return entries_.size(); }

 private:
  struct Entry {
    uint32_t size = 0;
    std::string id;
    std::vector<bool> taken;  // [size]; rank 0's is true from the post
    uint32_t left = 0;        // ranks that have not taken it
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, uint64_t> posts_;
};

}  // namespace shoal::coord
