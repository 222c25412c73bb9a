// Group::AllToAllV, BroadcastBytes and GatherBytes: collectives built on Group::SendRecv.
#include <string>
#include <vector>

#include "comm/group.h"

namespace shoal::comm {

namespace {

Status CheckRoot(const Group& g, int root) {
  if (root < 0 || root >= g.size()) {
    return InvalidArgument("root rank " + std::to_string(root) + " outside a group of " + std::to_string(g.size()));
  }
  return Status::Ok();
}

}  // namespace

Status Group::AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                        std::span<const int64_t> recv_bytes, Deadline deadline) {
  const int R = size();
  if (send_bytes.size() != static_cast<size_t>(R) || recv_bytes.size() != static_cast<size_t>(R)) {
    return InvalidArgument("rank " + std::to_string(rank()) + ": all-to-all: expected " + std::to_string(R) +
                           " send and receive sizes");
  }
  std::vector<SendBlock> sends;
  std::vector<RecvBlock> recvs;
  int64_t s_off = 0, r_off = 0;
  for (int p = 0; p < R; ++p) {
    sends.push_back({p, static_cast<const uint8_t*>(send) + s_off, send_bytes[p]});
    recvs.push_back({p, static_cast<uint8_t*>(recv) + r_off, recv_bytes[p]});
    s_off += send_bytes[p];
    r_off += recv_bytes[p];
  }
  return SendRecv(sends, recvs, deadline);
}

StatusOr<std::string> BroadcastBytes(Group& g, const std::string& data, int root, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckRoot(g, root));
  const bool is_root = g.rank() == root;
  std::vector<int64_t> size = {is_root ? static_cast<int64_t>(data.size()) : 0};
  SHOAL_RETURN_IF_ERROR(g.AllReduceMax(size, deadline));
  std::string out(static_cast<size_t>(size[0]), '\0');
  // The root sends the same bytes to every rank (itself included) from the one buffer.
  std::vector<Group::SendBlock> sends;
  if (is_root) {
    for (int p = 0; p < g.size(); ++p) sends.push_back({p, data.data(), size[0]});
  }
  const Group::RecvBlock recv[] = {{root, out.data(), size[0]}};
  SHOAL_RETURN_IF_ERROR(g.SendRecv(sends, recv, deadline));
  return out;
}

StatusOr<std::vector<std::string>> GatherBytes(Group& g, const std::string& data, int root, Deadline deadline) {
  SHOAL_RETURN_IF_ERROR(CheckRoot(g, root));
  const int R = g.size();
  const bool is_root = g.rank() == root;
  // Sizes: every rank's size reaches the root through a sum of one-hot vectors.
  std::vector<int64_t> sizes(R, 0);
  sizes[g.rank()] = static_cast<int64_t>(data.size());
  SHOAL_RETURN_IF_ERROR(g.AllReduceSum(sizes, deadline));
  std::vector<int64_t> send_bytes(R, 0), recv_bytes(R, 0);
  send_bytes[root] = static_cast<int64_t>(data.size());
  int64_t total = 0;
  if (is_root) {
    recv_bytes = sizes;
    for (int64_t s : sizes) total += s;
  }
  std::string all(static_cast<size_t>(total), '\0');
  SHOAL_RETURN_IF_ERROR(g.AllToAllV(data.data(), send_bytes, all.data(), recv_bytes, deadline));
  std::vector<std::string> out;
  if (!is_root) return out;
  int64_t off = 0;
  for (int p = 0; p < R; ++p) {
    out.push_back(all.substr(static_cast<size_t>(off), static_cast<size_t>(sizes[p])));
    off += sizes[p];
  }
  return out;
}

}  // namespace shoal::comm
