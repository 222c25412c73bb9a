// The one-rank group: every collective is a local copy (or nothing).
#include <cstring>

#include "comm/group.h"

namespace shoal::comm {

// Copies the i-th self-addressed send block into the i-th self-addressed receive block (skipping
// zero-byte blocks on both sides); shared by every backend for the rank's own blocks. With copy false
// it only checks that the blocks pair up, so a backend can reject a call before posting anything.
Status CopySelfBlocks(int rank, std::span<const Group::SendBlock> sends, std::span<const Group::RecvBlock> recvs,
                      bool copy) {
  auto skipped = [rank](const Group::RecvBlock& b) { return b.peer != rank || (b.bytes == 0 && !b.received); };
  size_t r = 0;
  for (const Group::SendBlock& s : sends) {
    if (s.peer != rank || s.bytes == 0) continue;
    while (r < recvs.size() && skipped(recvs[r])) ++r;
    const bool fits = r < recvs.size() && (recvs[r].received ? s.bytes <= recvs[r].bytes : s.bytes == recvs[r].bytes);
    if (!fits) {
      return InvalidArgument("rank " + std::to_string(rank) + ": send/receive: the blocks this rank sends itself " +
                             "do not match the blocks it receives from itself");
    }
    if (copy) {
      std::memcpy(recvs[r].data, s.data, static_cast<size_t>(s.bytes));
      if (recvs[r].received) *recvs[r].received = s.bytes;
    }
    ++r;
  }
  while (r < recvs.size() && skipped(recvs[r])) ++r;
  if (r != recvs.size()) {
    return InvalidArgument("rank " + std::to_string(rank) + ": send/receive: more blocks received from itself than sent");
  }
  return Status::Ok();
}

namespace {

class SelfGroup final : public Group {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }

  Status AllReduceSum(std::span<int64_t>, Deadline) override { return Status::Ok(); }
  Status AllReduceMax(std::span<int64_t>, Deadline) override { return Status::Ok(); }
  Status Barrier(Deadline) override { return Status::Ok(); }

  Status SendRecv(std::span<const SendBlock> sends, std::span<const RecvBlock> recvs, Deadline,
                  const std::function<void(int)>& before_send) override {
    for (const SendBlock& s : sends) {
      if (s.peer != 0 || s.bytes < 0) return InvalidArgument("self group: a send block names a rank other than 0");
    }
    for (const RecvBlock& r : recvs) {
      if (r.peer != 0 || r.bytes < 0) return InvalidArgument("self group: a receive block names a rank other than 0");
    }
    SHOAL_RETURN_IF_ERROR(CopySelfBlocks(0, sends, recvs, /*copy=*/false));
    if (before_send) before_send(0);
    return CopySelfBlocks(0, sends, recvs, /*copy=*/true);
  }

  StatusOr<std::unique_ptr<Group>> Split(int, int, Deadline) override { return MakeSelfGroup(); }
};

}  // namespace

std::unique_ptr<Group> MakeSelfGroup() { return std::make_unique<SelfGroup>(); }

}  // namespace shoal::comm
