// comm::Group: the ranks of one engine group and the collectives the forward pass needs.
//
// Contract for every collective:
//   - All ranks of the group call the same collectives in the same order (the engine guarantees it:
//     a rank with no tokens still joins every call with empty buffers).
//   - Every call takes a deadline. If the peers have not all taken part by then, the call returns
//     DeadlineExceeded naming the peers it was still waiting for, and the group is marked broken:
//     later calls return Unavailable at once (a collective abandoned half-way cannot be resumed).
//   - Buffers are host memory here; the NCCL backend takes device buffers behind the same interface.
// Not thread-safe: one thread (the engine loop) drives a group.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/deadline.h"
#include "common/status.h"

namespace shoal::comm {

class Group {
 public:
  virtual ~Group() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "self", ...: for messages and reports.
  virtual std::string backend() const = 0;

  // Element-wise sum / max of `values` over all ranks, in place. For small vectors (step agreement,
  // counters), not for activations.
  virtual Status AllReduceSum(std::span<int64_t> values, Deadline deadline) = 0;
  virtual Status AllReduceMax(std::span<int64_t> values, Deadline deadline) = 0;
  virtual Status Barrier(Deadline deadline) = 0;

  // All-to-all with per-peer sizes in bytes. `send` holds the bytes for peer 0, then peer 1, ...
  // packed back to back (send_bytes[p] each); `recv` receives them the same way from every peer.
  // Both spans have size() entries, and recv_bytes[p] must equal what peer p sends to this rank.
  virtual Status AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                           std::span<const int64_t> recv_bytes, Deadline deadline) = 0;

  // Sub-group of the ranks passing the same `color`, ordered by `key` then rank (tensor-parallel
  // groups inside a node, the expert-parallel group across nodes). Collective over this group.
  virtual StatusOr<std::unique_ptr<Group>> Split(int color, int key, Deadline deadline) = 0;
};

// Byte-string collectives built on AllToAllV (sizes first, bytes second), for control data such as a
// batch file or results — not for activations.
// `data` of `root` to every rank (the argument is ignored on other ranks).
StatusOr<std::string> BroadcastBytes(Group& group, const std::string& data, int root, Deadline deadline);
// Every rank's `data`, on `root` in rank order; other ranks get an empty vector.
StatusOr<std::vector<std::string>> GatherBytes(Group& group, const std::string& data, int root, Deadline deadline);

// A group of one rank: collectives are local copies. Used by single-process engines, so that one
// code path serves 1 and N ranks.
std::unique_ptr<Group> MakeSelfGroup();

}  // namespace shoal::comm
