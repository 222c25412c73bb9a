#include "comm/nccl/nccl_group.h"

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "kernels/cuda/cuda_check.h"

namespace shoal::comm {

namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

int64_t MsSince(int64_t start_ns) { return (NowNs() - start_ns) / 1000000; }

// Between polls: yield for the first millisecond, so a small collective is noticed within
// microseconds, then sleep briefly, so a long wait does not hold a core the engine's host threads (or,
// on small test machines, the peer ranks) need.
void Pause(int64_t start_ns) {
  if (NowNs() - start_ns < 1000000) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

std::string GroupPrefix(int rank, int size) {
  return "NCCL group of " + std::to_string(size) + (size == 1 ? " rank" : " ranks") + " (rank " +
         std::to_string(rank) + ")";
}

// An NCCL result as a Status naming `call`; the detail text is read before any abort frees `comm`.
Status NcclError(ncclResult_t result, ncclComm_t comm, const char* call, int line) {
  return cuda::NcclStatus(static_cast<int>(result), ncclGetErrorString(result), ncclGetLastError(comm), call, __FILE__,
                          line);
}

bool Failed(ncclResult_t r) { return r != ncclSuccess && r != ncclInProgress; }

// The deadline message: NCCL has no per-peer progress to report, so it says what it can.
Status TimedOut(const std::string& prefix, const std::string& what, int64_t start_ns) {
  return DeadlineExceeded(prefix + ": " + what + " not finished after " + std::to_string(MsSince(start_ns)) +
                          " ms (NCCL cannot tell which peers are missing: a rank that never joined and a stalled "
                          "peer look the same); the group is aborted");
}

// Selects `device` for this thread, with a message that names the device when there is none.
Status SelectDevice(int device, const std::string& prefix) {
  if (device < 0) return InvalidArgument(prefix + ": CUDA device " + std::to_string(device) + " is negative");
  std::string why;
  const int count = cuda::CudaDeviceCount(&why);
  if (count == 0) {
    return Unavailable(prefix + ": cannot use CUDA device " + std::to_string(device) +
                       ": no usable CUDA device on this machine (" + why + ")");
  }
  if (device >= count) {
    return InvalidArgument(prefix + ": CUDA device " + std::to_string(device) + " does not exist (" +
                           std::to_string(count) + " visible)");
  }
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    return cuda::CudaStatus(err, "cudaSetDevice(device)", __FILE__, __LINE__)
        .WithContext(prefix + ": cannot use CUDA device " + std::to_string(device));
  }
  return Status::Ok();
}

std::string PciName(int64_t pci) {
  const int64_t v = pci - 1;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.0", static_cast<unsigned>((v >> 16) & 0xffff),
                static_cast<unsigned>((v >> 8) & 0xff), static_cast<unsigned>(v & 0xff));
  return buf;
}

}  // namespace

DeviceIdentity IdentifyDevice(int device) {
  DeviceIdentity id;
  // The boot id is per kernel boot: processes in different containers or UTS namespaces of one
  // machine share it (and its GPUs), processes on different machines do not.
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  if (boot.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) boot = host;
  }
  if (!boot.empty()) id.machine = static_cast<int64_t>(std::hash<std::string>{}(boot) | 1);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
    id.pci = ((int64_t{prop.pciDomainID} & 0xffff) << 16 | (int64_t{prop.pciBusID} & 0xff) << 8 |
              (int64_t{prop.pciDeviceID} & 0xff)) + 1;
  } else {
    (void)cudaGetLastError();
  }
  return id;
}

std::string DescribeSharedDevice(std::span<const DeviceIdentity> ranks) {
  for (size_t a = 0; a < ranks.size(); ++a) {
    if (ranks[a].machine == 0 || ranks[a].pci == 0) continue;
    for (size_t b = a + 1; b < ranks.size(); ++b) {
      if (ranks[b].machine == ranks[a].machine && ranks[b].pci == ranks[a].pci) {
        return "ranks " + std::to_string(a) + " and " + std::to_string(b) + " both use the GPU at PCI " +
               PciName(ranks[a].pci) + " on one machine";
      }
    }
  }
  return "";
}

namespace {

// First scratch size of the all-reduce buffers, in int64 values: the step agreement and counters the
// engine reduces fit, so the buffers rarely grow (growing frees the old device buffer, which syncs).
constexpr size_t kInitialScratch = 256;
// How long the destructor lets ncclCommFinalize flush before it aborts instead.
constexpr int64_t kFinalizeMs = 10000;

}  // namespace

Status PlanSendRecv(int rank, int size, std::span<const Group::SendBlock> sends,
                    std::span<const Group::RecvBlock> recvs, SendRecvPlan* plan) {
  if (size < 1 || rank < 0 || rank >= size) {
    return InvalidArgument("send/receive: rank " + std::to_string(rank) + " outside a group of " +
                           std::to_string(size));
  }
  const std::string who = "rank " + std::to_string(rank) + ": send/receive: ";
  plan->sends_to.resize(static_cast<size_t>(size));
  plan->recvs_from.resize(static_cast<size_t>(size));
  for (auto& v : plan->sends_to) v.clear();
  for (auto& v : plan->recvs_from) v.clear();
  plan->self_copies.clear();

  std::vector<size_t> self_sends;
  for (size_t i = 0; i < sends.size(); ++i) {
    const Group::SendBlock& b = sends[i];
    if (b.peer < 0 || b.peer >= size || b.bytes < 0 || (b.bytes > 0 && b.data == nullptr)) {
      return InvalidArgument(who + "send block #" + std::to_string(i) + " for rank " + std::to_string(b.peer) +
                             " of " + std::to_string(b.bytes) + " bytes" +
                             (b.data == nullptr && b.bytes > 0 ? " has no buffer" : "") + " (group of " +
                             std::to_string(size) + ")");
    }
    if (b.bytes == 0) continue;
    if (b.peer == rank) {
      self_sends.push_back(i);
    } else {
      plan->sends_to[b.peer].push_back(i);
    }
  }
  size_t next_self = 0;  // the self send the next non-empty self receive pairs with
  for (size_t i = 0; i < recvs.size(); ++i) {
    const Group::RecvBlock& b = recvs[i];
    if (b.received != nullptr) {
      // Checked first: a capacity receive is a valid request the MPI backend serves.
      return Unimplemented(who + "receive block #" + std::to_string(i) + " from rank " + std::to_string(b.peer) +
                           " is a capacity receive, which the NCCL backend cannot serve: NCCL has no probe for a "
                           "message's size, so every receive must know its exact size (send the sizes first)");
    }
    if (b.peer < 0 || b.peer >= size || b.bytes < 0 || (b.bytes > 0 && b.data == nullptr)) {
      return InvalidArgument(who + "receive block #" + std::to_string(i) + " from rank " + std::to_string(b.peer) +
                             " of " + std::to_string(b.bytes) + " bytes" +
                             (b.data == nullptr && b.bytes > 0 ? " has no buffer" : "") + " (group of " +
                             std::to_string(size) + ")");
    }
    if (b.bytes == 0) continue;
    if (b.peer != rank) {
      plan->recvs_from[b.peer].push_back(i);
      continue;
    }
    if (next_self == self_sends.size()) {
      return InvalidArgument(who + "more blocks received from itself than sent");
    }
    const size_t s = self_sends[next_self++];
    if (sends[s].bytes != b.bytes) {
      return InvalidArgument(who + "the blocks this rank sends itself do not match the blocks it receives from "
                                   "itself (send block #" + std::to_string(s) + " has " +
                             std::to_string(sends[s].bytes) + " bytes, receive block #" + std::to_string(i) +
                             " has " + std::to_string(b.bytes) + ")");
    }
    plan->self_copies.emplace_back(s, i);
  }
  if (next_self != self_sends.size()) {
    return InvalidArgument(who + "more blocks sent to itself than received from itself");
  }
  return Status::Ok();
}

StatusOr<std::string> NcclGroup::MakeUniqueId() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return NcclError(r, nullptr, "ncclGetUniqueId(&id)", __LINE__);
  return std::string(id.internal, sizeof(id.internal));
}

StatusOr<std::unique_ptr<NcclGroup>> NcclGroup::Create(Group& bootstrap, int device, Deadline deadline) {
  const int rank = bootstrap.rank(), size = bootstrap.size();
  const std::string prefix = GroupPrefix(rank, size);
  // Errors raised by CUDA calls name the rank of the process; one that has not named it yet gets its
  // rank in the bootstrap group (in practice the world group it was launched in).
  if (cuda::CudaErrorRank() < 0) cuda::SetCudaErrorRank(rank);
  std::string id;
  Status id_status;
  if (rank == 0) {
    auto made = MakeUniqueId();
    if (made.ok()) {
      id = std::move(made).value();
    } else {
      id_status = made.status();
    }
  }
  // Rank 0 sends an empty id when it has none, so the others fail now rather than at the deadline.
  auto got = BroadcastBytes(bootstrap, id, 0, deadline);
  if (!got.ok()) return got.status().WithContext(prefix + ": sending the NCCL unique id");
  if (!id_status.ok()) return id_status.WithContext(prefix + ": creating the NCCL unique id");
  if (got->empty()) return Unavailable(prefix + ": rank 0 could not create the NCCL unique id (see its error)");

  // Every rank learns whether all devices are usable before anyone enters the NCCL init, which
  // would otherwise wait for the failed ranks until the deadline.
  // The same exchange tells every rank which GPU each uses: NCCL refuses two ranks on one GPU, and
  // saying so here names the ranks and the device before any NCCL call.
  const Status device_status = SelectDevice(device, prefix);
  const DeviceIdentity me = device_status.ok() ? IdentifyDevice(device) : DeviceIdentity{};
  std::vector<int64_t> shared(static_cast<size_t>(3) * size, 0);  // per rank: failed, machine, pci
  shared[3 * rank] = device_status.ok() ? 0 : 1;
  shared[3 * rank + 1] = me.machine;
  shared[3 * rank + 2] = me.pci;
  Status agreed = bootstrap.AllReduceSum(shared, deadline);
  if (!agreed.ok()) return agreed.WithContext(prefix + ": agreeing that every rank has its CUDA device");
  if (!device_status.ok()) return device_status;
  std::string bad;
  std::vector<DeviceIdentity> ids(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) {
    if (shared[3 * r] != 0) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
    ids[r] = DeviceIdentity{shared[3 * r + 1], shared[3 * r + 2]};
  }
  if (!bad.empty()) {
    return Unavailable(prefix + ": ranks " + bad + " cannot use their CUDA device; no communicator was created");
  }
  if (const std::string same = DescribeSharedDevice(ids); !same.empty()) {
    return InvalidArgument(prefix + ": " + same + "; NCCL needs one GPU per rank (give each rank its own "
                           "device: CUDA_VISIBLE_DEVICES, engine.device, or fewer ranks per node)");
  }
  return Join(*got, rank, size, device, deadline);
}

StatusOr<std::unique_ptr<NcclGroup>> NcclGroup::CreateFromId(const std::string& id, int rank, int size, int device,
                                                             Deadline deadline) {
  const std::string prefix = GroupPrefix(rank, size);
  if (id.size() != sizeof(ncclUniqueId)) {
    return InvalidArgument(prefix + ": an NCCL unique id is " + std::to_string(sizeof(ncclUniqueId)) +
                           " bytes, got " + std::to_string(id.size()) +
                           " (pass exactly the bytes MakeUniqueId returned)");
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return InvalidArgument(prefix + ": rank " + std::to_string(rank) + " outside a group of " +
                           std::to_string(size));
  }
  SHOAL_RETURN_IF_ERROR(SelectDevice(device, prefix));
  return Join(id, rank, size, device, deadline);
}

StatusOr<std::unique_ptr<NcclGroup>> NcclGroup::NewShell(int rank, int size, int device) {
  auto g = std::unique_ptr<NcclGroup>(new NcclGroup(device));
  g->rank_ = rank;
  g->size_ = size;
  const std::string prefix = g->Prefix();
  // Non-blocking: a collective stuck on a stalled peer must not also stall the caller's work on the
  // legacy default stream, which implicitly waits for blocking streams.
  cudaStream_t stream = nullptr;
  Status st = cuda::CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                               "cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)", __FILE__, __LINE__);
  if (!st.ok()) return st.WithContext(prefix);
  g->stream_ = stream;
  cudaEvent_t event = nullptr;
  st = cuda::CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                        "cudaEventCreateWithFlags(&event, cudaEventDisableTiming)", __FILE__, __LINE__);
  if (!st.ok()) return st.WithContext(prefix);
  g->compute_ready_ = event;
  SHOAL_RETURN_IF_ERROR(g->EnsureScratch(kInitialScratch));
  return g;
}

StatusOr<std::unique_ptr<NcclGroup>> NcclGroup::Join(const std::string& id, int rank, int size, int device,
                                                     Deadline deadline) {
  SHOAL_ASSIGN_OR_RETURN(std::unique_ptr<NcclGroup> g, NewShell(rank, size, device));
  const std::string what = "communicator initialisation on CUDA device " + std::to_string(device);
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), sizeof(uid.internal));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const int64_t start = NowNs();
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, uid, rank, &config);
  // A non-blocking init hands out the handle at once and finishes in the background; from here on
  // the group owns it, and a failure below aborts it.
  g->comm_ = comm;
  if (Failed(r)) {
    return g->Fail(what, NcclError(r, comm, "ncclCommInitRankConfig(&comm, size, id, rank, &config)", __LINE__));
  }
  if (comm == nullptr) {
    return g->Fail(what, Internal("ncclCommInitRankConfig returned no communicator"));
  }
  SHOAL_RETURN_IF_ERROR(g->Wait(what, start, deadline, /*drain_stream=*/false));
  return g;
}

NcclGroup::~NcclGroup() {
  (void)cudaSetDevice(device_);
  if (comm_ != nullptr) {
    // Finalize flushes what is still queued and is the clean way out; it gets a bounded wait, and a
    // communicator that does not finish in time is aborted instead of hanging the process at exit.
    bool clean = false;
    const ncclResult_t r = ncclCommFinalize(comm_);
    if (!Failed(r)) {
      const int64_t start = NowNs();
      const Deadline limit = Deadline::AfterMs(kFinalizeMs);
      ncclResult_t state = ncclInProgress;
      while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress && !limit.Expired()) {
        Pause(start);
      }
      clean = state == ncclSuccess;
    }
    if (clean) {
      (void)ncclCommDestroy(comm_);
    } else {
      (void)ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  // After a timeout a copy may still be queued behind the aborted work, and cudaFree/cudaFreeHost
  // would synchronize with it: a broken group's scratch buffers are deliberately left allocated (such
  // a process is on its way out, as with the MPI backend).
  if (!broken_) {
    if (device_scratch_ != nullptr) (void)cudaFree(device_scratch_);
    if (host_scratch_ != nullptr) (void)cudaFreeHost(host_scratch_);
  }
  if (compute_ready_ != nullptr) (void)cudaEventDestroy(compute_ready_);
  // Returns at once; the stream's resources are released when its work (if any) ends.
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

std::string NcclGroup::Prefix() const { return GroupPrefix(rank_, size_); }

Status NcclGroup::CheckUsable(const std::string& what) const {
  if (broken_) return Unavailable(Prefix() + ": " + what + ": the group is unusable since " + broken_reason_);
  return Status::Ok();
}

Status NcclGroup::UseDevice() const {
  // The engine thread may have switched devices since the last call; allocations and copies below
  // must land on this group's device.
  const cudaError_t err = cudaSetDevice(device_);
  if (err != cudaSuccess) return cuda::CudaStatus(err, "cudaSetDevice(device_)", __FILE__, __LINE__);
  return Status::Ok();
}

Status NcclGroup::Break(const std::string& what, Status cause) {
  if (comm_ != nullptr) {
    // Makes NCCL's kernels and proxy threads give up and frees the communicator, so the handle is
    // gone afterwards.
    (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  broken_ = true;
  broken_reason_ = what + (cause.code() == StatusCode::kDeadlineExceeded ? " timed out" : " failed");
  return cause;
}

Status NcclGroup::Fail(const std::string& what, const Status& cause) {
  return Break(what, cause.WithContext(Prefix() + ": " + what));
}

Status NcclGroup::Wait(const std::string& what, int64_t start_ns, Deadline deadline, bool drain_stream) {
  for (;;) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) return Fail(what, NcclError(r, comm_, "ncclCommGetAsyncError(comm, &state)", __LINE__));
    if (Failed(state)) return Fail(what, NcclError(state, comm_, "the communicator (asynchronous error)", __LINE__));
    // The stream is looked at only once NCCL has finished enqueueing: before that it may be idle
    // simply because the kernels are not on it yet.
    if (state == ncclSuccess) {
      if (!drain_stream) return Status::Ok();
      const cudaError_t err = cudaStreamQuery(stream_);
      if (err == cudaSuccess) return Status::Ok();
      if (err != cudaErrorNotReady) {
        return Fail(what, cuda::CudaStatus(err, "cudaStreamQuery(stream_)", __FILE__, __LINE__));
      }
    }
    if (deadline.Expired()) return Break(what, TimedOut(Prefix(), what, start_ns));
    Pause(start_ns);
  }
}

Status NcclGroup::EnsureScratch(size_t count) {
  if (count <= scratch_count_) return Status::Ok();
  const size_t n = std::max(count, kInitialScratch);
  int64_t* dev = nullptr;
  int64_t* host = nullptr;
  Status st = cuda::CudaStatus(cudaMalloc(reinterpret_cast<void**>(&dev), n * sizeof(int64_t)),
                               "cudaMalloc(&dev, n * sizeof(int64_t))", __FILE__, __LINE__);
  if (!st.ok()) return st.WithContext(Prefix() + ": all-reduce scratch");
  st = cuda::CudaStatus(cudaMallocHost(reinterpret_cast<void**>(&host), n * sizeof(int64_t)),
                        "cudaMallocHost(&host, n * sizeof(int64_t))", __FILE__, __LINE__);
  if (!st.ok()) {
    (void)cudaFree(dev);
    return st.WithContext(Prefix() + ": all-reduce scratch");
  }
  // Only reached on a healthy group whose stream has drained (every collective waits for it).
  if (device_scratch_ != nullptr) (void)cudaFree(device_scratch_);
  if (host_scratch_ != nullptr) (void)cudaFreeHost(host_scratch_);
  device_scratch_ = dev;
  host_scratch_ = host;
  scratch_count_ = n;
  return Status::Ok();
}

Status NcclGroup::AfterComputeStream() {
  SHOAL_CUDA_RETURN_IF_ERROR(cudaEventRecord(compute_ready_, compute_stream_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, compute_ready_, 0));
  return Status::Ok();
}

Status NcclGroup::AllReduce(std::span<int64_t> values, bool max, const char* name, Deadline deadline) {
  const std::string what = std::string(name) + " #" + std::to_string(calls_++);
  SHOAL_RETURN_IF_ERROR(CheckUsable(what));
  if (size_ == 1 || values.empty()) return Status::Ok();
  const size_t n = values.size();
  // Nothing is enqueued yet: a failure here leaves the communicator usable for this rank (its peers
  // will time out in this collective, as with any rank that fails before joining).
  SHOAL_RETURN_IF_ERROR(UseDevice().WithContext(Prefix() + ": " + what));
  SHOAL_RETURN_IF_ERROR(EnsureScratch(n));
  std::copy(values.begin(), values.end(), host_scratch_);
  const int64_t start = NowNs();
  Status st = [&]() -> Status {
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_scratch_, host_scratch_, n * sizeof(int64_t),
                                               cudaMemcpyHostToDevice, stream_));
    SHOAL_NCCL_RETURN_IF_ERROR(ncclGroupStart());
    const ncclResult_t r =
        ncclAllReduce(device_scratch_, device_scratch_, n, ncclInt64, max ? ncclMax : ncclSum, comm_, stream_);
    // The group is closed whatever happened inside it, or NCCL's group depth stays raised.
    const ncclResult_t end = ncclGroupEnd();
    if (Failed(r)) return NcclError(r, comm_, "ncclAllReduce(scratch, scratch, n, ncclInt64, op, comm, stream)", __LINE__);
    if (Failed(end)) return NcclError(end, comm_, "ncclGroupEnd()", __LINE__);
    return Status::Ok();
  }();
  if (!st.ok()) return Fail(what, st);
  // The result is copied back only once NCCL has finished enqueueing (on a non-blocking communicator
  // the stream must not be used before that), then waited for in turn.
  SHOAL_RETURN_IF_ERROR(Wait(what, start, deadline, /*drain_stream=*/false));
  const cudaError_t err =
      cudaMemcpyAsync(host_scratch_, device_scratch_, n * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_);
  if (err != cudaSuccess) {
    return Fail(what, cuda::CudaStatus(err, "cudaMemcpyAsync(host, scratch, ..., DeviceToHost, stream)", __FILE__,
                                       __LINE__));
  }
  SHOAL_RETURN_IF_ERROR(Wait(what, start, deadline, /*drain_stream=*/true));
  std::copy(host_scratch_, host_scratch_ + n, values.begin());
  return Status::Ok();
}

Status NcclGroup::AllReduceSum(std::span<int64_t> values, Deadline deadline) {
  return AllReduce(values, /*max=*/false, "all-reduce(sum)", deadline);
}

Status NcclGroup::AllReduceMax(std::span<int64_t> values, Deadline deadline) {
  return AllReduce(values, /*max=*/true, "all-reduce(max)", deadline);
}

Status NcclGroup::Barrier(Deadline deadline) {
  // NCCL has no barrier; an all-reduce of one value completes on a rank only once every rank has
  // contributed to it.
  int64_t token = 0;
  return AllReduce(std::span<int64_t>(&token, 1), /*max=*/false, "barrier", deadline);
}

Status NcclGroup::Collective(const std::string& what, Deadline deadline, const std::function<Status()>& enqueue) {
  SHOAL_RETURN_IF_ERROR(CheckUsable(what));
  SHOAL_RETURN_IF_ERROR(UseDevice().WithContext(Prefix() + ": " + what));
  const int64_t start = NowNs();
  Status st = [&]() -> Status {
    SHOAL_RETURN_IF_ERROR(AfterComputeStream());
    SHOAL_NCCL_RETURN_IF_ERROR(ncclGroupStart());
    Status inner = enqueue();
    const ncclResult_t end = ncclGroupEnd();  // closed even after a failure inside
    SHOAL_RETURN_IF_ERROR(inner);
    if (Failed(end)) return NcclError(end, comm_, "ncclGroupEnd()", __LINE__);
    return Status::Ok();
  }();
  if (!st.ok()) return Fail(what, st);
  return Wait(what, start, deadline, /*drain_stream=*/true);
}

Status NcclGroup::AllReduceSumF32(std::span<float> values, Deadline deadline) {
  const std::string what = "all-reduce(f32 sum) #" + std::to_string(calls_++);
  if (size_ == 1 || values.empty()) return CheckUsable(what);
  return Collective(what, deadline, [&]() -> Status {
    SHOAL_NCCL_RETURN_IF_ERROR(ncclAllReduce(values.data(), values.data(), values.size(), ncclFloat, ncclSum, comm_, stream_));
    return Status::Ok();
  });
}

Status NcclGroup::ReduceScatterSumF32(std::span<const float> in, std::span<float> out, Deadline deadline) {
  const std::string what = "reduce-scatter(f32 sum) #" + std::to_string(calls_++);
  if (in.size() != out.size() * static_cast<size_t>(size_)) {
    return InvalidArgument(Prefix() + ": " + what + ": input of " + std::to_string(in.size()) + " values is not " +
                           std::to_string(size_) + " chunks of " + std::to_string(out.size()));
  }
  if (out.empty()) return CheckUsable(what);
  return Collective(what, deadline, [&]() -> Status {
    SHOAL_NCCL_RETURN_IF_ERROR(ncclReduceScatter(in.data(), out.data(), out.size(), ncclFloat, ncclSum, comm_, stream_));
    return Status::Ok();
  });
}

Status NcclGroup::AllGather(std::span<const std::byte> in, std::span<std::byte> out, Deadline deadline) {
  const std::string what = "all-gather #" + std::to_string(calls_++);
  if (out.size() != in.size() * static_cast<size_t>(size_)) {
    return InvalidArgument(Prefix() + ": " + what + ": output of " + std::to_string(out.size()) + " bytes is not " +
                           std::to_string(size_) + " x " + std::to_string(in.size()));
  }
  if (in.empty()) return CheckUsable(what);
  return Collective(what, deadline, [&]() -> Status {
    SHOAL_NCCL_RETURN_IF_ERROR(ncclAllGather(in.data(), out.data(), in.size(), ncclInt8, comm_, stream_));
    return Status::Ok();
  });
}

Status NcclGroup::SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline deadline,
                           const std::function<void(int)>& before_send) {
  const std::string what = "send/receive #" + std::to_string(calls_++);
  SHOAL_RETURN_IF_ERROR(CheckUsable(what));
  // Rejected calls return before anything is enqueued, so the group stays usable.
  SHOAL_RETURN_IF_ERROR(PlanSendRecv(rank_, size_, sends, recvs, &plan_).WithContext(Prefix() + ": " + what));
  SHOAL_RETURN_IF_ERROR(UseDevice().WithContext(Prefix() + ": " + what));
  const int64_t start = NowNs();
  Status st = [&]() -> Status {
    SHOAL_NCCL_RETURN_IF_ERROR(ncclGroupStart());
    Status inner = [&]() -> Status {
      // Bytes as ncclInt8: a send and its receive must name the same type and count, and the byte
      // count is the one thing both sides are guaranteed to agree on (NCCL moves point-to-point data
      // as bytes whatever the type).
      for (int p = 0; p < size_; ++p) {
        for (size_t i : plan_.recvs_from[p]) {
          SHOAL_NCCL_RETURN_IF_ERROR(ncclRecv(recvs[i].data, static_cast<size_t>(recvs[i].bytes), ncclInt8, p,
                                              comm_, stream_));
        }
      }
      for (int k = 1; k <= size_; ++k) {
        const int p = (rank_ + k) % size_;
        if (before_send) before_send(p);
        if (p == rank_) continue;
        for (size_t i : plan_.sends_to[p]) {
          SHOAL_NCCL_RETURN_IF_ERROR(ncclSend(sends[i].data, static_cast<size_t>(sends[i].bytes), ncclInt8, p,
                                              comm_, stream_));
        }
      }
      // Enqueued now, while NCCL holds its kernels back until ncclGroupEnd: the transfers start after
      // the caller's work (the hooks' included) and the self copies run on the same stream.
      SHOAL_RETURN_IF_ERROR(AfterComputeStream());
      for (const auto& [s, r] : plan_.self_copies) {
        SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(recvs[r].data, sends[s].data, static_cast<size_t>(sends[s].bytes),
                                                   cudaMemcpyDeviceToDevice, stream_));
      }
      return Status::Ok();
    }();
    // Closed even after a failure inside (the group depth must come back down); what it launches
    // is then aborted with the communicator.
    const ncclResult_t end = ncclGroupEnd();
    SHOAL_RETURN_IF_ERROR(inner);
    if (Failed(end)) return NcclError(end, comm_, "ncclGroupEnd()", __LINE__);
    return Status::Ok();
  }();
  // Once anything may have been posted, a failure leaves the peers' matching operations dangling.
  if (!st.ok()) return Fail(what, st);
  return Wait(what, start, deadline, /*drain_stream=*/true);
}

StatusOr<std::unique_ptr<Group>> NcclGroup::Split(int color, int key, Deadline deadline) {
  const std::string what = "split #" + std::to_string(calls_++);
  SHOAL_RETURN_IF_ERROR(CheckUsable(what));
  if (color < 0) {
    return InvalidArgument(Prefix() + ": " + what + ": color " + std::to_string(color) +
                           " is negative; every rank must join a sub-group");
  }
  SHOAL_RETURN_IF_ERROR(UseDevice().WithContext(Prefix() + ": " + what));
  // NCCL writes the new handle from its background job when the split completes, which may be after
  // a timeout has returned from here: the slot lives on the heap and is leaked on any failure.
  auto slot = std::make_unique<ncclComm_t>(nullptr);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const int64_t start = NowNs();
  const ncclResult_t r = ncclCommSplit(comm_, color, key, slot.get(), &config);
  if (Failed(r)) {
    (void)slot.release();
    return Fail(what, NcclError(r, comm_, "ncclCommSplit(comm, color, key, &sub, &config)", __LINE__));
  }
  // The split's progress shows on the parent; the child appears in the slot once it is done.
  Status st = Wait(what, start, deadline, /*drain_stream=*/false);
  if (!st.ok()) {
    (void)slot.release();
    return st;
  }
  ncclComm_t sub = nullptr;
  for (;;) {
    sub = __atomic_load_n(slot.get(), __ATOMIC_ACQUIRE);
    if (sub != nullptr) {
      ncclResult_t state = ncclInProgress;
      const ncclResult_t q = ncclCommGetAsyncError(sub, &state);
      if (Failed(q) || Failed(state)) {
        // The parent finished its part of the split, so it stays usable; only the child is lost.
        const Status err = NcclError(Failed(q) ? q : state, sub, "ncclCommSplit (the new communicator)", __LINE__);
        (void)ncclCommAbort(sub);
        (void)slot.release();
        return err.WithContext(Prefix() + ": " + what);
      }
      if (state == ncclSuccess) break;
    }
    if (deadline.Expired()) {
      // Peers may still be inside the split: the parent cannot be used again.
      (void)slot.release();
      if (sub != nullptr) (void)ncclCommAbort(sub);
      return Break(what, TimedOut(Prefix(), what, start));
    }
    Pause(start);
  }
  int sub_rank = 0, sub_size = 0;
  ncclResult_t q = ncclCommUserRank(sub, &sub_rank);
  if (!Failed(q)) q = ncclCommCount(sub, &sub_size);
  if (Failed(q)) {
    const Status err = NcclError(q, sub, "ncclCommUserRank/ncclCommCount(sub)", __LINE__);
    (void)ncclCommAbort(sub);
    return err.WithContext(Prefix() + ": " + what);
  }
  auto shell = NewShell(sub_rank, sub_size, device_);
  if (!shell.ok()) {
    (void)ncclCommAbort(sub);
    return shell.status().WithContext(Prefix() + ": " + what);
  }
  std::unique_ptr<NcclGroup> child = std::move(shell).value();
  child->comm_ = sub;
  child->compute_stream_ = compute_stream_;
  return std::unique_ptr<Group>(std::move(child));
}

}  // namespace shoal::comm
