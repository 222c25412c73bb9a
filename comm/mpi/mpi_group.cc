#include "comm/mpi/mpi_group.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>

namespace shoal::comm {

namespace {

std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}

// Largest single message; bigger per-peer payloads go as several messages in order (MPI keeps the
// order of messages between two ranks with the same tag), because MPI counts are ints.
constexpr int64_t kMaxMessageBytes = int64_t{1} << 30;

std::string RankList(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

}  // namespace

StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Init(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return Internal("MPI is already initialised in this process");
  int provided = 0;
  // FUNNELED: only the engine loop thread calls MPI; the kernel thread pool never does.
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return Unavailable("MPI_Init_thread failed: " + MpiErrorString(rc));
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    return Unavailable("the MPI library does not provide MPI_THREAD_FUNNELED");
  }
  return std::unique_ptr<MpiRuntime>(new MpiRuntime());
}

namespace {
std::atomic<bool> g_group_broken{false};
}  // namespace

void MpiRuntime::MarkGroupBroken() { g_group_broken = true; }
bool MpiRuntime::AnyGroupBroken() { return g_group_broken; }
bool MpiRuntime::WasInitialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  return initialized != 0;
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

StatusOr<std::unique_ptr<MpiGroup>> MpiGroup::Create(MPI_Comm comm) {
  MPI_Comm dup;
  int rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS) return Unavailable("MPI_Comm_dup failed: " + MpiErrorString(rc));
  // Errors come back as codes (turned into Status) instead of aborting the job.
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int rank = 0, size = 0;
  MPI_Comm_rank(dup, &rank);
  MPI_Comm_size(dup, &size);
  auto group = std::unique_ptr<MpiGroup>(new MpiGroup(dup, rank, size));
  int* tag_ub = nullptr;
  int found = 0;
  MPI_Comm_get_attr(dup, MPI_TAG_UB, &tag_ub, &found);
  if (found && tag_ub && *tag_ub > 0) group->tag_limit_ = *tag_ub;
  return group;
}

MpiGroup::MpiGroup(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // A group broken by a timeout may still have operations in flight; freeing its communicator
  // would then be erroneous, so it is left to MPI_Finalize.
  if (!finalized && !broken_) MPI_Comm_free(&comm_);
}

Status MpiGroup::CheckUsable(const char* op) const {
  if (broken_) {
    return Unavailable("rank " + std::to_string(rank_) + ": " + op + ": the group is unusable since " + broken_reason_);
  }
  return Status::Ok();
}

Status MpiGroup::Abandon(const std::string& what, const std::string& reason, StatusCode code) {
  std::vector<int> waiting;
  bool collective = false;
  for (size_t i = 0; i < requests_.size(); ++i) {
    if (requests_[i] == MPI_REQUEST_NULL) continue;
    if (peer_of_[i] < 0) {
      collective = true;
      abandoned_.push_back(requests_[i]);  // a collective request cannot be cancelled
      continue;
    }
    if (std::find(waiting.begin(), waiting.end(), peer_of_[i]) == waiting.end()) waiting.push_back(peer_of_[i]);
    if (!is_send_[i]) {
      // The caller's receive buffer may be reused or freed once this returns, so the receive must be
      // over: cancelling an unmatched receive is local. A receive already matched to a large message
      // completes only as its sender progresses, so it gets a short grace period and is then
      // released (the exchange keeps its buffers after a failure; see the header).
      MPI_Cancel(&requests_[i]);
      const Deadline grace = Deadline::AfterMs(200);
      int flag = 0;
      while (!flag && !grace.Expired()) {
        MPI_Test(&requests_[i], &flag, MPI_STATUS_IGNORE);
        if (!flag) sched_yield();
      }
      if (!flag) MPI_Request_free(&requests_[i]);
    } else {
      // OpenMPI cannot cancel a send, and waiting for it would wait for the stalled peer. The
      // send is released instead; its buffer must stay allocated (see the header).
      MPI_Request_free(&requests_[i]);
    }
  }
  requests_.clear();
  std::sort(waiting.begin(), waiting.end());
  broken_ = true;
  broken_reason_ = what + (code == StatusCode::kDeadlineExceeded ? " timed out" : " failed");
  MpiRuntime::MarkGroupBroken();
  std::string detail = reason;
  if (code == StatusCode::kDeadlineExceeded) {
    detail = collective ? "not every rank joined when the deadline passed"
                        : "still waiting for ranks " + RankList(waiting) + " when the deadline passed";
  }
  return Status(code, "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + what + ": " + detail);
}

Status MpiGroup::Poll(const std::string& what, int* completed) {
  const int n = static_cast<int>(requests_.size());
  *completed = 0;
  if (n == 0) return Status::Ok();
  done_.resize(static_cast<size_t>(n));
  statuses_.resize(static_cast<size_t>(n));
  int outcount = 0;
  const int rc = MPI_Testsome(n, requests_.data(), &outcount, done_.data(), statuses_.data());
  if (rc != MPI_SUCCESS) return Abandon(what, MpiErrorString(rc), StatusCode::kUnavailable);
  if (outcount == MPI_UNDEFINED) return Status::Ok();
  *completed = outcount;
  for (int k = 0; k < outcount; ++k) {
    const int i = done_[k];
    if (is_send_[i] || peer_of_[i] < 0) continue;
    int count = 0;
    MPI_Get_count(&statuses_[k], MPI_BYTE, &count);
    if (received_of_[i] != nullptr) {
      *received_of_[i] = count;
    } else if (count != expected_bytes_[i]) {
      // Both sides derive block sizes from the same counts; a mismatch is a protocol error, and
      // every later block between the two would pair wrongly.
      return Abandon(what,
                     "rank " + std::to_string(peer_of_[i]) + " sent " + std::to_string(count) + " bytes where " +
                         std::to_string(expected_bytes_[i]) + " were expected",
                     StatusCode::kInvalidArgument);
    }
  }
  return Status::Ok();
}

Status MpiGroup::WaitAll(const std::string& what, Deadline deadline) {
  int remaining = 0;
  for (MPI_Request r : requests_) remaining += r != MPI_REQUEST_NULL;
  uint32_t polls = 0;
  while (remaining > 0) {
    int outcount = 0;
    SHOAL_RETURN_IF_ERROR(Poll(what, &outcount));
    remaining -= outcount;
    if (remaining == 0) break;
    // Checking the clock every few polls keeps its cost out of the latency of small messages.
    if ((++polls & 15) == 0 && deadline.Expired()) return Abandon(what, "", StatusCode::kDeadlineExceeded);
    sched_yield();
  }
  return Status::Ok();
}

Status MpiGroup::WaitForRequests(const std::string& what, size_t first, Deadline deadline) {
  uint32_t polls = 0;
  auto pending = [&] {
    for (size_t i = first; i < requests_.size(); ++i) {
      if (requests_[i] != MPI_REQUEST_NULL) return true;
    }
    return false;
  };
  while (pending()) {
    int outcount = 0;
    SHOAL_RETURN_IF_ERROR(Poll(what, &outcount));  // progresses every request, the receives too
    if ((++polls & 15) == 0 && deadline.Expired()) return Abandon(what, "", StatusCode::kDeadlineExceeded);
    if (outcount == 0) sched_yield();
  }
  return Status::Ok();
}

Status MpiGroup::AllReduce(std::span<int64_t> values, MPI_Op op, const char* name, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckUsable(name));
  if (size_ == 1 || values.empty()) return Status::Ok();
  if (size_ <= kPointToPointRanks) {
    // Every rank sends its values to every other and reduces them in rank order: as cheap as a
    // collective at this size, and a timeout can name the ranks that never sent.
    const int64_t n = static_cast<int64_t>(values.size());
    std::vector<int64_t> all(static_cast<size_t>(size_ * n));
    std::copy(values.begin(), values.end(), all.begin() + rank_ * n);
    std::vector<SendBlock> sends;
    std::vector<RecvBlock> recvs;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      sends.push_back({p, values.data(), n * 8});
      recvs.push_back({p, all.data() + p * n, n * 8});
    }
    SHOAL_RETURN_IF_ERROR(Exchange(std::string(name) + " #" + std::to_string(calls_), sends, recvs, deadline, nullptr));
    for (int64_t i = 0; i < n; ++i) {
      int64_t acc = all[i];
      for (int p = 1; p < size_; ++p) acc = op == MPI_SUM ? acc + all[p * n + i] : std::max(acc, all[p * n + i]);
      values[i] = acc;
    }
    return Status::Ok();
  }
  requests_.assign(1, MPI_REQUEST_NULL);
  peer_of_.assign(1, -1);
  is_send_.assign(1, false);
  received_of_.assign(1, nullptr);
  expected_bytes_.assign(1, 0);
  // A collective cannot be cancelled: if it times out, MPI may still write the result when the late
  // rank arrives, so it works on a buffer of its own, which is then deliberately never freed.
  auto buffer = std::make_unique<int64_t[]>(values.size());
  std::copy(values.begin(), values.end(), buffer.get());
  const int rc = MPI_Iallreduce(MPI_IN_PLACE, buffer.get(), static_cast<int>(values.size()), MPI_INT64_T, op, comm_,
                                &requests_[0]);
  if (rc != MPI_SUCCESS) return Abandon(name, MpiErrorString(rc), StatusCode::kUnavailable);
  Status st = WaitAll(name, deadline);
  if (!st.ok()) {
    (void)buffer.release();  // still owned by the abandoned MPI request
    return st;
  }
  if (st.ok()) std::copy(buffer.get(), buffer.get() + values.size(), values.begin());
  return st;
}

Status MpiGroup::AllReduceSum(std::span<int64_t> values, Deadline deadline) {
  return AllReduce(values, MPI_SUM, "all-reduce(sum)", deadline);
}

Status MpiGroup::AllReduceMax(std::span<int64_t> values, Deadline deadline) {
  return AllReduce(values, MPI_MAX, "all-reduce(max)", deadline);
}

Status MpiGroup::Barrier(Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckUsable("barrier"));
  if (size_ == 1) return Status::Ok();
  if (size_ <= kPointToPointRanks) {
    // One byte to and from every peer: once all have arrived, every rank has entered.
    const uint8_t token = 1;
    std::vector<uint8_t> got(static_cast<size_t>(size_));
    std::vector<SendBlock> sends;
    std::vector<RecvBlock> recvs;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      sends.push_back({p, &token, 1});
      recvs.push_back({p, &got[p], 1});
    }
    return Exchange("barrier #" + std::to_string(calls_), sends, recvs, deadline, nullptr);
  }
  requests_.assign(1, MPI_REQUEST_NULL);
  peer_of_.assign(1, -1);
  is_send_.assign(1, false);
  received_of_.assign(1, nullptr);
  expected_bytes_.assign(1, 0);
  const int rc = MPI_Ibarrier(comm_, &requests_[0]);
  if (rc != MPI_SUCCESS) return Abandon("barrier", MpiErrorString(rc), StatusCode::kUnavailable);
  return WaitAll("barrier", deadline);
}

Status MpiGroup::SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline deadline,
                          const std::function<void(int)>& before_send) {
  return Exchange("send/receive #" + std::to_string(calls_), sends, recvs, deadline, before_send);
}

Status MpiGroup::Exchange(const std::string& what, std::span<const SendBlock> sends, std::span<const RecvBlock> recvs,
                          Deadline deadline, const std::function<void(int)>& before_send) {
  SHOAL_RETURN_IF_ERROR(CheckUsable(what.c_str()));
  for (const SendBlock& b : sends) {
    if (b.peer < 0 || b.peer >= size_ || b.bytes < 0) {
      return InvalidArgument("rank " + std::to_string(rank_) + ": " + what + ": send block for rank " +
                             std::to_string(b.peer) + " of " + std::to_string(b.bytes) + " bytes");
    }
  }
  for (const RecvBlock& b : recvs) {
    if (b.peer < 0 || b.peer >= size_ || b.bytes < 0 || (b.received && (b.bytes == 0 || b.bytes > kMaxMessageBytes))) {
      return InvalidArgument("rank " + std::to_string(rank_) + ": " + what + ": receive block for rank " +
                             std::to_string(b.peer) + " of " + std::to_string(b.bytes) + " bytes" +
                             (b.received ? " (a capacity receive must be in [1 byte, 1 GiB])" : ""));
    }
  }
  // Rejected before anything is posted: a posted receive must never outlive its call.
  SHOAL_RETURN_IF_ERROR(CopySelfBlocks(rank_, sends, recvs, /*copy=*/false).WithContext(what));
  const int tag = static_cast<int>(calls_ % tag_limit_);
  ++calls_;
  requests_.clear();
  peer_of_.clear();
  is_send_.clear();
  received_of_.clear();
  expected_bytes_.clear();
  auto post = [&](bool is_send, int peer, const void* data, int64_t bytes, int64_t* received) -> Status {
    for (int64_t done = 0; done < bytes; done += kMaxMessageBytes) {
      const int chunk = static_cast<int>(std::min(kMaxMessageBytes, bytes - done));
      MPI_Request req;
      const int rc = is_send ? MPI_Isend(static_cast<const uint8_t*>(data) + done, chunk, MPI_BYTE, peer, tag, comm_, &req)
                             : MPI_Irecv(static_cast<uint8_t*>(const_cast<void*>(data)) + done, chunk, MPI_BYTE, peer,
                                         tag, comm_, &req);
      if (rc != MPI_SUCCESS) {
        return Abandon(what, "posting a message for rank " + std::to_string(peer) + ": " + MpiErrorString(rc),
                       StatusCode::kUnavailable);
      }
      requests_.push_back(req);
      peer_of_.push_back(peer);
      is_send_.push_back(is_send);
      received_of_.push_back(received);
      expected_bytes_.push_back(chunk);
    }
    return Status::Ok();
  };
  // Receives first so arriving data finds a posted buffer (MPI keeps the order of messages between
  // two ranks with one tag, which pairs the i-th send with the i-th receive).
  for (const RecvBlock& b : recvs) {
    if (b.peer != rank_ && (b.bytes > 0 || b.received)) {
      SHOAL_RETURN_IF_ERROR(post(false, b.peer, b.data, b.bytes, b.received));
    }
  }
  // Peers in a rotated order (rank+1, rank+2, ...) so that not every rank sends to rank 0 first; a
  // poll after each peer lets MPI progress the transfers already posted while the caller fills the
  // next peer's buffer.
  //
  // Large sends are paced pairwise: the sends to rank+k are posted only once those to rank+k-1 have
  // left (handed to the transport), so that at step k every rank sends to rank+k and receives from
  // rank-k — one flow per link direction, as OpenMPI's pairwise MPI_Alltoallv does. Over TCP links
  // with a bandwidth limit, all peers at once (competing flows, more drops) moved ~2/3 of the bytes
  // per second that pairwise did at 3 hosts (docs/benchmarks.md, "Across hosts"). Receives are all
  // posted above, so a step never waits on a peer that is still busy with its own earlier step.
  std::vector<std::vector<const SendBlock*>>& by_peer = by_peer_;
  by_peer.resize(static_cast<size_t>(size_));
  for (auto& v : by_peer) v.clear();
  std::vector<int64_t>& peer_bytes = peer_bytes_;
  peer_bytes.assign(static_cast<size_t>(size_), 0);
  for (const SendBlock& b : sends) {
    if (b.bytes > 0) by_peer[b.peer].push_back(&b), peer_bytes[b.peer] += b.bytes;
  }
  size_t paced_from = requests_.size();  // sends of the previous large peer start here
  bool pacing = false;
  for (int i = 1; i <= size_; ++i) {
    const int p = (rank_ + i) % size_;
    if (before_send) before_send(p);
    if (p == rank_) continue;
    if (pacing) SHOAL_RETURN_IF_ERROR(WaitForRequests(what, paced_from, deadline));
    pacing = peer_bytes[p] >= kPacedSendBytes;
    paced_from = requests_.size();
    for (const SendBlock* b : by_peer[p]) SHOAL_RETURN_IF_ERROR(post(true, p, b->data, b->bytes, nullptr));
    if (before_send) {
      // Completed requests become MPI_REQUEST_NULL, which WaitAll skips.
      int completed = 0;
      SHOAL_RETURN_IF_ERROR(Poll(what, &completed));
    }
  }
  SHOAL_RETURN_IF_ERROR(CopySelfBlocks(rank_, sends, recvs).WithContext(what));  // checked above
  return WaitAll(what, deadline);
}

StatusOr<std::unique_ptr<Group>> MpiGroup::Split(int color, int key, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckUsable("split"));
  // MPI_Comm_split blocks without a timeout; once this barrier has completed every rank is here and
  // the split cannot stall on a missing peer. A rank whose barrier timed out has left, though, and
  // the others would then block in the split: a group is split at start-up, where a timeout is fatal
  // to the job anyway (shoal worker aborts it).
  SHOAL_RETURN_IF_ERROR(Barrier(deadline));
  MPI_Comm sub;
  const int rc = MPI_Comm_split(comm_, color, key, &sub);
  if (rc != MPI_SUCCESS) return Unavailable("rank " + std::to_string(rank_) + ": split: " + MpiErrorString(rc));
  auto group = Create(sub);
  MPI_Comm_free(&sub);
  if (!group.ok()) return group.status();
  return std::unique_ptr<Group>(std::move(group).value());
}

namespace {

// A shared window over a group on one host. Stores and loads between Syncs are plain memory accesses
// inside one passive-target epoch (lock_all at creation); Sync = MPI_Win_sync, the group's barrier
// (with its deadline), MPI_Win_sync again: the unified memory model's recipe for ordering them.
class MpiSharedSegments final : public SharedSegments {
 public:
  MpiSharedSegments(MpiGroup* group, MPI_Win win, std::vector<char*> bases, std::vector<int64_t> bytes)
      : group_(group), win_(win), bases_(std::move(bases)), bytes_(std::move(bytes)) {}
  ~MpiSharedSegments() override {
    MPI_Win_unlock_all(win_);
    // Collective: after a failure a peer may never come, and the process ends soon anyway.
    if (!group_->broken() && !MpiRuntime::AnyGroupBroken()) MPI_Win_free(&win_);
  }
  char* segment(int rank) override { return bases_[static_cast<size_t>(rank)]; }
  int64_t bytes(int rank) const override { return bytes_[static_cast<size_t>(rank)]; }
  Status Sync(Deadline deadline) override {
    MPI_Win_sync(win_);
    SHOAL_RETURN_IF_ERROR(group_->Barrier(deadline));
    MPI_Win_sync(win_);
    return Status::Ok();
  }

 private:
  MpiGroup* group_;
  MPI_Win win_;
  std::vector<char*> bases_;
  std::vector<int64_t> bytes_;
};

}  // namespace

StatusOr<std::unique_ptr<SharedSegments>> MpiGroup::AllocateShared(int64_t bytes_per_rank, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckUsable("shared memory"));
  if (bytes_per_rank < 0) return InvalidArgument("shared memory: negative size");
  // The calls below block without a timeout: all ranks must be here first (as in Split).
  SHOAL_RETURN_IF_ERROR(Barrier(deadline));
  MPI_Comm node;
  int rc = MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return Unavailable("rank " + std::to_string(rank_) + ": shared memory: " + MpiErrorString(rc));
  int node_size = 0;
  MPI_Comm_size(node, &node_size);
  // Every rank learns the same answer (node sizes are the same on all ranks of a one-host group).
  std::vector<int64_t> spans = {node_size == size_ ? 0 : 1};
  Status agreed = AllReduceMax(spans, deadline);
  if (!agreed.ok() || spans[0] != 0) {
    MPI_Comm_free(&node);
    if (!agreed.ok()) return agreed;
    return Unimplemented("shared memory: the group's " + std::to_string(size_) + " ranks are not all on one host");
  }
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");  // each segment on its owner's NUMA node
  char* base = nullptr;
  MPI_Win win;
  rc = MPI_Win_allocate_shared(static_cast<MPI_Aint>(std::max<int64_t>(bytes_per_rank, 1)), 1, info, node, &base, &win);
  MPI_Info_free(&info);
  MPI_Comm_free(&node);  // the window keeps what it needs
  if (rc != MPI_SUCCESS) {
    return ResourceExhausted("rank " + std::to_string(rank_) + ": shared memory of " + std::to_string(bytes_per_rank) +
                             " bytes per rank: " + MpiErrorString(rc));
  }
  MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
  std::vector<char*> bases(static_cast<size_t>(size_));
  std::vector<int64_t> sizes(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    MPI_Aint size = 0;
    int unit = 0;
    void* p = nullptr;
    MPI_Win_shared_query(win, r, &size, &unit, &p);
    bases[static_cast<size_t>(r)] = static_cast<char*>(p);
    sizes[static_cast<size_t>(r)] = static_cast<int64_t>(size);
  }
  MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
  // The owner touches its segment first: its pages land on its NUMA node, and a shortfall of shared
  // memory shows now rather than at the first large step.
  std::memset(bases[static_cast<size_t>(rank_)], 0, static_cast<size_t>(std::max<int64_t>(bytes_per_rank, 1)));
  auto segments = std::unique_ptr<SharedSegments>(new MpiSharedSegments(this, win, std::move(bases), std::move(sizes)));
  SHOAL_RETURN_IF_ERROR(segments->Sync(deadline));
  return segments;
}

}  // namespace shoal::comm
