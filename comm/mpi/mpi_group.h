// The MPI backend of comm::Group (host buffers; OpenMPI on CPU-only machines).
//
// Every collective is non-blocking underneath (Isend/Irecv; for groups above 64 ranks the all-reduce
// and barrier are Iallreduce and Ibarrier)
// and is completed by polling MPI_Testsome against the deadline, so a peer that never arrives gives
// DeadlineExceeded ("rank 1 of 3: send/receive #42: still waiting for ranks 2 when the deadline passed") rather than a
// hang. After a timeout the abandoned receives are cancelled, but a send to the stalled peer cannot
// be: the caller's send buffer of the failed call must stay allocated while the process runs (the
// engine's exchange buffers do). The poll loop yields the core between polls: with more ranks than cores (2-core CI running 4
// ranks) a spinning rank would starve the peer it waits for.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "comm/group.h"

namespace shoal::comm {

// MPI_Init_thread / MPI_Finalize around a process's lifetime. MPI may be initialised only once per
// process; Init returns an error if it already was (by someone else) and the runtime then does not
// finalize it.
class MpiRuntime {
 public:
  static StatusOr<std::unique_ptr<MpiRuntime>> Init(int* argc, char*** argv);
  ~MpiRuntime();

  // Set when any group of this process failed or timed out with operations still in flight. Then
  // MPI_Finalize may wait forever for the stalled peer (OpenMPI fences in finalize), so the program
  // should report its error and end the job with MPI_Abort instead of destroying the runtime.
  static void MarkGroupBroken();
  static bool AnyGroupBroken();
  // Whether MPI was initialised in this process (by a runtime or anyone else).
  static bool WasInitialized();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  MpiRuntime() = default;
};

class MpiGroup final : public Group {
 public:
  // A group over a duplicate of `comm` (so shoal's messages never match anyone else's). Collective.
  static StatusOr<std::unique_ptr<MpiGroup>> Create(MPI_Comm comm);
  ~MpiGroup() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

  Status AllReduceSum(std::span<int64_t> values, Deadline deadline) override;
  Status AllReduceMax(std::span<int64_t> values, Deadline deadline) override;
  Status Barrier(Deadline deadline) override;
  Status SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline deadline,
                  const std::function<void(int)>& before_send = nullptr) override;
  StatusOr<std::unique_ptr<Group>> Split(int color, int key, Deadline deadline) override;
  // MPI_Win_allocate_shared over the group, when all its ranks share a host.
  StatusOr<std::unique_ptr<SharedSegments>> AllocateShared(int64_t bytes_per_rank, Deadline deadline) override;
  bool broken() const { return broken_; }

 private:
  MpiGroup(MPI_Comm comm, int rank, int size);
  Status CheckUsable(const char* op) const;
  // SendRecv under a name for messages (all-reduce and barrier use it on small groups).
  Status Exchange(const std::string& what, std::span<const SendBlock> sends, std::span<const RecvBlock> recvs,
                  Deadline deadline, const std::function<void(int)>& before_send);
  // Up to this many ranks, all-reduce and barrier are point-to-point exchanges (so a timeout names
  // the missing ranks); above it, MPI's own non-blocking collectives.
  static constexpr int kPointToPointRanks = 64;
  Status AllReduce(std::span<int64_t> values, MPI_Op op, const char* name, Deadline deadline);
  // Completes `requests_` by polling until the deadline. `peer_of[i]` names the peer of request i
  // (-1 for a collective request) for the timeout message.
  Status WaitAll(const std::string& what, Deadline deadline);
  // Polls (progressing every request) until requests_[first, end) have all completed.
  Status WaitForRequests(const std::string& what, size_t first, Deadline deadline);
  // A peer's sends of at least this many bytes in one exchange are paced pairwise (see Exchange).
  static constexpr int64_t kPacedSendBytes = 128 * 1024;
  // One MPI_Testsome over requests_: completed ones become MPI_REQUEST_NULL, the sizes of
  // completed capacity receives are written out, and other receives must have their exact size.
  Status Poll(const std::string& what, int* completed);
  // Gives up on the operations in flight (receives cancelled, sends released, collectives left),
  // marks the group broken and returns `code` with the message (for a timeout: who was missing).
  Status Abandon(const std::string& what, const std::string& reason, StatusCode code);

  MPI_Comm comm_;
  int rank_, size_;
  int tag_limit_ = 32767;
  int64_t calls_ = 0;       // send/receive calls so far; the tag of call n is n mod tag_limit_
  bool broken_ = false;     // a collective timed out or failed; the group cannot be used again
  std::string broken_reason_;
  std::vector<MPI_Request> requests_;
  std::vector<int> peer_of_;
  std::vector<bool> is_send_;
  std::vector<int64_t*> received_of_;   // capacity receives: where to write the size that arrived
  std::vector<int64_t> expected_bytes_;  // other receives: the size that must arrive
  std::vector<std::vector<const SendBlock*>> by_peer_;  // per-call scratch, reused
  std::vector<int64_t> peer_bytes_;                      // per-call scratch: bytes sent to each peer
  std::vector<int> done_;
  std::vector<MPI_Status> statuses_;
  std::vector<MPI_Request> abandoned_;  // collective requests left behind by a timeout
};

}  // namespace shoal::comm
