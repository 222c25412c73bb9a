// The NCCL backend of comm::Group: the same contract as the MPI backend, on device buffers.
//
// SendRecv blocks hold DEVICE pointers (of this group's device); the small AllReduceSum/AllReduceMax
// and Barrier keep the interface's host spans and go through a small device scratch buffer.
//
// The communicator is non-blocking (ncclConfig_t.blocking = 0), so no NCCL call can hang the engine
// loop: every collective is enqueued on the group's own CUDA stream inside ncclGroupStart/End and
// then completed by polling ncclCommGetAsyncError and cudaStreamQuery against the deadline. On a
// timeout the communicator is aborted (ncclCommAbort makes NCCL's kernels give up) and the group is
// broken: later calls return Unavailable. Unlike MPI, NCCL cannot say which peer is missing, so a
// DeadlineExceeded here names the collective and the time waited, not the ranks.
//
// Stream ordering: the caller produces and consumes device buffers on its compute stream
// (set_compute_stream; the legacy default stream unless set). Before NCCL reads anything, the group's
// stream waits for the work queued on the compute stream so far, the before_send hooks included; and
// a collective returns only once its stream has drained, so later work on the compute stream sees
// the received data.
//
// nccl.h and the CUDA headers stay out of this header: handles are forward-declared pointers that
// convert to ncclComm_t / cudaStream_t in files that include those headers.
// Not thread-safe: one thread (the engine loop) drives a group.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "comm/group.h"

struct ncclComm;     // ncclComm_t is ncclComm*
struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t is CUevent_st*

namespace shoal::comm {

// What one SendRecv call moves, worked out on the host before anything is enqueued: a call that is
// rejected must not leave half its operations posted (the peers would pair them with the next call).
struct SendRecvPlan {
  // Per peer, indices into `sends` / `recvs` in list order (the order NCCL pairs them in); zero-byte
  // blocks and blocks addressed to this rank itself are left out.
  std::vector<std::vector<size_t>> sends_to;
  std::vector<std::vector<size_t>> recvs_from;
  // (send index, receive index) of the blocks this rank copies to itself, paired as CopySelfBlocks
  // pairs them: the i-th non-empty self send into the i-th non-empty self receive.
  std::vector<std::pair<size_t, size_t>> self_copies;
};

// Checks one SendRecv call of `rank` in a group of `size` and fills `plan` (its vectors are reused):
// peers in range, sizes not negative, no null pointer behind a non-empty block, self blocks pairing
// up with equal sizes (InvalidArgument), and no capacity receive (Unimplemented: NCCL has no probe,
// so a receive must know its size in advance). How blocks pair across ranks cannot be checked
// locally; a mismatch there shows up as a timeout or wrong data.
Status PlanSendRecv(int rank, int size, std::span<const Group::SendBlock> sends,
                    std::span<const Group::RecvBlock> recvs, SendRecvPlan* plan);

// Which physical GPU a rank uses: the machine (a hash of the kernel's boot id, the same for every
// process and container of one boot) and the device's PCI location (domain << 16 | bus << 8 | device,
// plus 1, so that 0 means unknown).
struct DeviceIdentity {
  int64_t machine = 0;
  int64_t pci = 0;
};
// The identity of CUDA device `device` in this process (pci = 0 when its properties cannot be read).
DeviceIdentity IdentifyDevice(int device);
// Empty when no two ranks share a GPU; otherwise a sentence naming the first pair and the device,
// e.g. "ranks 0 and 1 both use the GPU at PCI 0000:1b:00.0 on one machine". Unknown identities
// (machine or pci 0) never match.
std::string DescribeSharedDevice(std::span<const DeviceIdentity> ranks);

class NcclGroup final : public Group {
 public:
  // A fresh NCCL unique id (the 128 bytes of ncclUniqueId) for CreateFromId. Needs no GPU, but
  // opens the listening socket NCCL's bootstrap uses, so it is called once, on rank 0.
  static StatusOr<std::string> MakeUniqueId();

  // Collective over `bootstrap` (any group, e.g. the MPI one): rank 0 makes the id, it travels by
  // BroadcastBytes, every rank selects `device` (its own local device index) and joins a communicator
  // of bootstrap.size() ranks with its bootstrap rank. If any rank cannot use its device, every rank
  // returns Unavailable at once instead of waiting in the NCCL init until the deadline; if two ranks
  // would use one GPU (NCCL needs a GPU per rank), every rank returns InvalidArgument naming them.
  static StatusOr<std::unique_ptr<NcclGroup>> Create(Group& bootstrap, int device, Deadline deadline);

  // For launchers that carry the id themselves (the coordinator's control plane): `id` is exactly
  // the bytes MakeUniqueId returned, the same on every rank.
  static StatusOr<std::unique_ptr<NcclGroup>> CreateFromId(const std::string& id, int rank, int size, int device,
                                                           Deadline deadline);

  ~NcclGroup() override;
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  int device() const { return device_; }
  // The stream the collectives run on (never null once created).
  CUstream_st* stream() const { return stream_; }
  // The communicator; null once the group is broken (an aborted communicator is freed by NCCL).
  ncclComm* comm() const { return comm_; }
  bool broken() const { return broken_; }

  // The stream the caller's device buffers are written and read on (nullptr: the legacy default
  // stream). Sub-groups made by Split inherit it.
  void set_compute_stream(CUstream_st* stream) { compute_stream_ = stream; }
  CUstream_st* compute_stream() const { return compute_stream_; }

  Status AllReduceSum(std::span<int64_t> values, Deadline deadline) override;
  Status AllReduceMax(std::span<int64_t> values, Deadline deadline) override;
  Status Barrier(Deadline deadline) override;
  // Blocks hold device pointers. Capacity receives (RecvBlock::received) are Unimplemented. The
  // before_send hooks all run before ncclGroupEnd, so with NCCL the transfers start after the last
  // hook rather than peer by peer.
  Status SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline deadline,
                  const std::function<void(int)>& before_send = nullptr) override;
  // ncclCommSplit; `color` must not be negative (every rank ends up in some sub-group).
  StatusOr<std::unique_ptr<Group>> Split(int color, int key, Deadline deadline) override;
  // Device buffers; ncclAllReduce / ncclReduceScatter / ncclAllGather after the compute stream's work.
  // NCCL's summation order, which gives every rank the same result.
  Status AllReduceSumF32(std::span<float> values, Deadline deadline) override;
  Status ReduceScatterSumF32(std::span<const float> in, std::span<float> out, Deadline deadline) override;
  Status AllGather(std::span<const std::byte> in, std::span<std::byte> out, Deadline deadline) override;

 private:
  // One NCCL collective: `enqueue` (called inside ncclGroupStart/End, after the compute stream) and
  // the wait for it, with the group broken on any failure once something may have been posted.
  Status Collective(const std::string& what, Deadline deadline, const std::function<Status()>& enqueue);
  explicit NcclGroup(int device) : device_(device) {}
  // A group with its stream, event and scratch buffers but no communicator yet.
  static StatusOr<std::unique_ptr<NcclGroup>> NewShell(int rank, int size, int device);
  // Joins the communicator of `id` (the device is already selected) and waits until it is ready.
  static StatusOr<std::unique_ptr<NcclGroup>> Join(const std::string& id, int rank, int size, int device,
                                                   Deadline deadline);

  std::string Prefix() const;
  Status CheckUsable(const std::string& what) const;
  Status UseDevice() const;
  // Aborts the communicator, marks the group broken and returns `cause` (already worded in full).
  Status Break(const std::string& what, Status cause);
  // Break with "<prefix>: <what>: " put before the cause's message.
  Status Fail(const std::string& what, const Status& cause);
  // Polls until NCCL has finished enqueueing (ncclGroupEnd may return ncclInProgress on a
  // non-blocking communicator) and, with drain_stream, until the group's stream is idle.
  Status Wait(const std::string& what, int64_t start_ns, Deadline deadline, bool drain_stream);
  Status EnsureScratch(size_t count);
  // Enqueues the wait for the compute stream on the group's stream.
  Status AfterComputeStream();
  Status AllReduce(std::span<int64_t> values, bool max, const char* name, Deadline deadline);

  ncclComm* comm_ = nullptr;
  CUstream_st* stream_ = nullptr;
  CUstream_st* compute_stream_ = nullptr;
  CUevent_st* compute_ready_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
  int64_t calls_ = 0;  // collectives so far, for messages
  bool broken_ = false;
  std::string broken_reason_;
  int64_t* device_scratch_ = nullptr;  // all-reduce values on the device
  int64_t* host_scratch_ = nullptr;    // pinned: device-to-host copies into pageable memory would block
  size_t scratch_count_ = 0;
  SendRecvPlan plan_;  // per-call scratch, reused
};

}  // namespace shoal::comm
