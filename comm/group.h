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
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/deadline.h"
#include "common/status.h"

namespace shoal::comm {

// Memory the ranks of a group on one host share (MPI-3 shared windows): one segment per rank, every
// segment readable and writable by every rank. Sync() is a barrier of the group that also orders the
// segments' loads and stores: what a rank wrote before its Sync is seen by every rank after theirs.
// Freed collectively when destroyed (every rank destroys its handle at the same point), except after
// a group failure, when it is left to the process's end (a free would wait for the missing peer).
class SharedSegments {
 public:
  virtual ~SharedSegments() = default;
  virtual char* segment(int rank) = 0;
  // Bytes of `rank`'s segment (ranks may have asked for different sizes).
  virtual int64_t bytes(int rank) const = 0;
  virtual Status Sync(Deadline deadline) = 0;
};

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

  // Point-to-point messages in one batch (what NCCL's grouped ncclSend/ncclRecv do): the i-th block
  // this rank sends to peer p is received into the i-th block p posts for this rank, so both sides
  // must list the same number of blocks per pair with the same sizes. Blocks to and from this rank
  // itself are copied. Zero-byte blocks are skipped on both sides. Every rank calls it, with empty
  // lists if it has nothing to move.
  // `before_send(peer)`, when set, runs once per peer (this rank included) just before that peer's
  // blocks are posted, peers served in a rotated order (rank+1, rank+2, ...): a caller can fill the
  // send buffer peer by peer while the blocks of earlier peers are already moving.
  struct SendBlock {
    int peer;
    const void* data;
    int64_t bytes;
  };
  struct RecvBlock {
    int peer;
    void* data;
    int64_t bytes;
    // When set, `bytes` is a capacity (at most 1 GiB): the matching message may be shorter, and its
    // size is written here. Such a block is never skipped, so its sender must send at least 1 byte.
    int64_t* received = nullptr;
  };
  virtual Status SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline deadline,
                          const std::function<void(int peer)>& before_send = nullptr) = 0;

  // All-to-all with per-peer sizes in bytes, on SendRecv: `send` holds the bytes for peer 0, then
  // peer 1, ... packed back to back (send_bytes[p] each); `recv` receives them the same way. Both
  // spans have size() entries, and recv_bytes[p] must equal what peer p sends to this rank.
  Status AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                   std::span<const int64_t> recv_bytes, Deadline deadline);

  // Collective: `bytes_per_rank` bytes of shared memory for every rank (SharedSegments above).
  // Unimplemented where the backend cannot (the group spans hosts, or it has no shared memory).
  virtual StatusOr<std::unique_ptr<SharedSegments>> AllocateShared(int64_t bytes_per_rank, Deadline deadline);

  // Sub-group of the ranks passing the same `color`, ordered by `key` then rank (tensor-parallel
  // groups inside a node, the expert-parallel group across nodes). Collective over this group.
  virtual StatusOr<std::unique_ptr<Group>> Split(int color, int key, Deadline deadline) = 0;

  // Activation collectives (tensor parallelism), on buffers as SendRecv takes them. Sums are taken
  // in one order on every rank, so every rank gets bit-identical results; the host implementations
  // here add in rank order (rank 0's value + rank 1's + ...), a backend may use its own order (NCCL's).
  // All ranks pass the same sizes.
  // In place: every element summed over the ranks.
  virtual Status AllReduceSumF32(std::span<float> values, Deadline deadline);
  // in [size() · out.size()]: this rank's out = the sum over ranks of their rank()-th chunk of in.
  virtual Status ReduceScatterSumF32(std::span<const float> in, std::span<float> out, Deadline deadline);
  // out [size() · in.size()]: every rank's in, in rank order.
  virtual Status AllGather(std::span<const std::byte> in, std::span<std::byte> out, Deadline deadline);
};

// Byte-string collectives built on AllToAllV (sizes first, bytes second), for control data such as a
// batch file or results — not for activations.
// `data` of `root` to every rank (the argument is ignored on other ranks).
StatusOr<std::string> BroadcastBytes(Group& group, const std::string& data, int root, Deadline deadline);
// Every rank's `data`, on `root` in rank order; other ranks get an empty vector.
StatusOr<std::vector<std::string>> GatherBytes(Group& group, const std::string& data, int root, Deadline deadline);

// For backends: copies the blocks a rank addresses to itself (the i-th self send into the i-th self
// receive, zero-byte blocks skipped); InvalidArgument if they do not pair up (with copy false: only
// that check, so a backend can reject a call before posting anything).
Status CopySelfBlocks(int rank, std::span<const Group::SendBlock> sends, std::span<const Group::RecvBlock> recvs,
                      bool copy = true);

// Whether `st`, from a collective or from work that ran one, means the group itself failed (a peer
// missed the deadline, or the group was already broken): the group cannot run another collective,
// unlike a local failure, after which a rank still joins the rest of the step's collectives.
inline bool IsGroupFailure(const Status& st) {
  return st.code() == StatusCode::kDeadlineExceeded || st.code() == StatusCode::kUnavailable;
}

// A group of one rank: collectives are local copies. Used by single-process engines, so that one
// code path serves 1 and N ranks.
std::unique_ptr<Group> MakeSelfGroup();

}  // namespace shoal::comm
