// Group::AllToAllV, the activation collectives' host implementations, BroadcastBytes and GatherBytes:
// collectives built on Group::SendRecv.
#include <algorithm>
#include <cstring>
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

Status Group::ReduceScatterSumF32(std::span<const float> in, std::span<float> out, Deadline deadline) {
  const int R = size();
  const size_t chunk = out.size();
  if (in.size() != chunk * static_cast<size_t>(R)) {
    return InvalidArgument("rank " + std::to_string(rank()) + ": reduce-scatter: input of " + std::to_string(in.size()) +
                           " values is not " + std::to_string(R) + " chunks of " + std::to_string(chunk));
  }
  // Every rank's chunk for this rank, rank-major, then added in rank order.
  std::vector<float> parts(chunk * static_cast<size_t>(R));
  const int64_t bytes = static_cast<int64_t>(chunk * sizeof(float));
  std::vector<SendBlock> sends;
  std::vector<RecvBlock> recvs;
  for (int p = 0; p < R; ++p) {
    sends.push_back({p, in.data() + chunk * static_cast<size_t>(p), bytes});
    recvs.push_back({p, parts.data() + chunk * static_cast<size_t>(p), bytes});
  }
  SHOAL_RETURN_IF_ERROR(SendRecv(sends, recvs, deadline));
  if (chunk == 0) return Status::Ok();
  std::copy(parts.begin(), parts.begin() + static_cast<ptrdiff_t>(chunk), out.begin());
  for (int p = 1; p < R; ++p) {
    const float* src = parts.data() + chunk * static_cast<size_t>(p);
    for (size_t i = 0; i < chunk; ++i) out[i] += src[i];
  }
  return Status::Ok();
}

Status Group::AllGather(std::span<const std::byte> in, std::span<std::byte> out, Deadline deadline) {
  const int R = size();
  if (out.size() != in.size() * static_cast<size_t>(R)) {
    return InvalidArgument("rank " + std::to_string(rank()) + ": all-gather: output of " + std::to_string(out.size()) +
                           " bytes is not " + std::to_string(R) + " x " + std::to_string(in.size()));
  }
  const int64_t bytes = static_cast<int64_t>(in.size());
  std::vector<SendBlock> sends;
  std::vector<RecvBlock> recvs;
  for (int p = 0; p < R; ++p) {
    sends.push_back({p, in.data(), bytes});
    recvs.push_back({p, out.data() + in.size() * static_cast<size_t>(p), bytes});
  }
  return SendRecv(sends, recvs, deadline);
}

Status Group::AllReduceSumF32(std::span<float> values, Deadline deadline) {
  // A reduce-scatter over equal chunks (the last padded with zeros, which add nothing), then an
  // all-gather of the sums: each value crosses the network twice, not size() times.
  const size_t R = static_cast<size_t>(size());
  const size_t chunk = (values.size() + R - 1) / R;
  std::vector<float> padded(chunk * R, 0.0f), mine(chunk);
  std::copy(values.begin(), values.end(), padded.begin());
  SHOAL_RETURN_IF_ERROR(ReduceScatterSumF32(padded, mine, deadline));
  SHOAL_RETURN_IF_ERROR(AllGather(std::as_bytes(std::span<const float>(mine)), std::as_writable_bytes(std::span<float>(padded)),
                                  deadline));
  std::copy(padded.begin(), padded.begin() + static_cast<ptrdiff_t>(values.size()), values.begin());
  return Status::Ok();
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

StatusOr<std::unique_ptr<SharedSegments>> Group::AllocateShared(int64_t, Deadline) {
  return Unimplemented("the " + backend() + " group has no shared memory");
}

}  // namespace shoal::comm
