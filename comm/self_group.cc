// The one-rank group: every collective is a local copy (or nothing).
#include <cstring>

#include "comm/group.h"

namespace shoal::comm {

namespace {

class SelfGroup final : public Group {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }

  Status AllReduceSum(std::span<int64_t>, Deadline) override { return Status::Ok(); }
  Status AllReduceMax(std::span<int64_t>, Deadline) override { return Status::Ok(); }
  Status Barrier(Deadline) override { return Status::Ok(); }

  Status AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                   std::span<const int64_t> recv_bytes, Deadline) override {
    if (send_bytes.size() != 1 || recv_bytes.size() != 1 || send_bytes[0] != recv_bytes[0] || send_bytes[0] < 0) {
      return InvalidArgument("self group all-to-all: expected one peer sending as many bytes as it receives");
    }
    if (send_bytes[0] > 0) std::memcpy(recv, send, static_cast<size_t>(send_bytes[0]));
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<Group>> Split(int, int, Deadline) override { return MakeSelfGroup(); }
};

}  // namespace

std::unique_ptr<Group> MakeSelfGroup() { return std::make_unique<SelfGroup>(); }

}  // namespace shoal::comm
