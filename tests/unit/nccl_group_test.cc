// The NCCL backend's host-side behaviour, which must hold on machines without a GPU: id handling,
// clear errors (not crashes or hangs) when there is no device, the SendRecv validation, and how NCCL
// results become Status values. On a machine with a GPU the one-rank tests also run the collectives.
#include <gtest/gtest.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/group.h"
#include "comm/nccl/nccl_group.h"
#include "kernels/cuda/cuda_check.h"

namespace shoal {
namespace {

using comm::Group;
using comm::NcclGroup;
using comm::PlanSendRecv;
using comm::SendRecvPlan;
using comm::DeviceIdentity;
using comm::DescribeSharedDevice;
using comm::IdentifyDevice;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

bool HaveGpu() { return cuda::CudaDeviceCount() > 0; }

// --- unique ids ---

TEST(NcclGroupId, MakeUniqueIdGivesTheIdBytes) {
  auto id = NcclGroup::MakeUniqueId();
  if (!id.ok()) {
    // ncclGetUniqueId needs no GPU, only a network interface for its bootstrap socket; a sandbox
    // without one fails here, and the Status must then name the call.
    EXPECT_TRUE(Contains(id.status().message(), "ncclGetUniqueId")) << id.status().ToString();
    GTEST_SKIP() << "ncclGetUniqueId failed on this machine (no usable network interface?): "
                 << id.status().ToString();
  }
  EXPECT_EQ(id->size(), sizeof(ncclUniqueId));
  auto other = NcclGroup::MakeUniqueId();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_NE(*id, *other) << "two ids must name two different communicators";
}

TEST(NcclGroupId, CreateFromIdRejectsAnIdOfTheWrongLength) {
  for (size_t len : {size_t{0}, size_t{1}, sizeof(ncclUniqueId) - 1, sizeof(ncclUniqueId) + 1}) {
    auto g = NcclGroup::CreateFromId(std::string(len, 'x'), 0, 1, 0, Deadline::AfterMs(1000));
    ASSERT_FALSE(g.ok()) << "length " << len;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
    EXPECT_TRUE(Contains(g.status().message(), "128 bytes")) << g.status().ToString();
    EXPECT_TRUE(Contains(g.status().message(), "got " + std::to_string(len))) << g.status().ToString();
  }
}

TEST(NcclGroupId, CreateFromIdRejectsBadRanksAndDevices) {
  const std::string id(sizeof(ncclUniqueId), '\0');
  for (auto [rank, size] : {std::pair{1, 1}, std::pair{-1, 2}, std::pair{0, 0}}) {
    auto g = NcclGroup::CreateFromId(id, rank, size, 0, Deadline::AfterMs(1000));
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
  }
  auto g = NcclGroup::CreateFromId(id, 0, 1, -1, Deadline::AfterMs(1000));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
  EXPECT_TRUE(Contains(g.status().message(), "CUDA device -1")) << g.status().ToString();
}

// --- no device: a clear error, quickly ---

TEST(NcclGroupNoDevice, CreateOverTheSelfGroupNamesTheMissingDevice) {
  if (HaveGpu()) GTEST_SKIP() << "this machine has a CUDA device";
  auto bootstrap = comm::MakeSelfGroup();
  const auto start = std::chrono::steady_clock::now();
  auto g = NcclGroup::Create(*bootstrap, 0, Deadline::AfterMs(3000));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kUnavailable) << g.status().ToString();
  EXPECT_TRUE(Contains(g.status().message(), "CUDA device 0")) << g.status().ToString();
  EXPECT_TRUE(Contains(g.status().message(), "NCCL group of 1 rank (rank 0)")) << g.status().ToString();
  // It fails on the device check, not by waiting for the deadline.
  EXPECT_LT(took, std::chrono::milliseconds(2500));
}

TEST(NcclGroupNoDevice, CreateFromIdNamesTheMissingDevice) {
  if (HaveGpu()) GTEST_SKIP() << "this machine has a CUDA device";
  auto g = NcclGroup::CreateFromId(std::string(sizeof(ncclUniqueId), '\0'), 1, 2, 3, Deadline::AfterMs(2000));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kUnavailable) << g.status().ToString();
  EXPECT_TRUE(Contains(g.status().message(), "CUDA device 3")) << g.status().ToString();
  EXPECT_TRUE(Contains(g.status().message(), "(rank 1)")) << g.status().ToString();
}

// --- the SendRecv plan ---

TEST(NcclPlanSendRecv, OrdersBlocksPerPeerAndSkipsEmptyOnes) {
  char a[8], b[8], c[8], d[8];
  const Group::SendBlock sends[] = {{2, a, 4}, {0, b, 0}, {0, c, 8}, {2, d, 2}, {1, a, 3}};
  const Group::RecvBlock recvs[] = {{0, a, 5}, {2, b, 0}, {2, c, 6}, {1, d, 3}};
  SendRecvPlan plan;
  ASSERT_TRUE(PlanSendRecv(/*rank=*/1, /*size=*/3, sends, recvs, &plan).ok());
  EXPECT_EQ(plan.sends_to[0], (std::vector<size_t>{2}));
  EXPECT_TRUE(plan.sends_to[1].empty());
  EXPECT_EQ(plan.sends_to[2], (std::vector<size_t>{0, 3}));
  EXPECT_EQ(plan.recvs_from[0], (std::vector<size_t>{0}));
  EXPECT_EQ(plan.recvs_from[2], (std::vector<size_t>{2}));
  ASSERT_EQ(plan.self_copies.size(), 1u);
  EXPECT_EQ(plan.self_copies[0], (std::pair<size_t, size_t>{4, 3}));
}

TEST(NcclPlanSendRecv, PairsSelfBlocksInOrderSkippingEmptyOnes) {
  char buf[64];
  const Group::SendBlock sends[] = {{0, buf, 0}, {0, buf, 4}, {0, buf + 8, 6}};
  const Group::RecvBlock recvs[] = {{0, buf + 16, 4}, {0, nullptr, 0}, {0, buf + 24, 6}};
  SendRecvPlan plan;
  ASSERT_TRUE(PlanSendRecv(0, 1, sends, recvs, &plan).ok());
  EXPECT_EQ(plan.self_copies, (std::vector<std::pair<size_t, size_t>>{{1, 0}, {2, 2}}));
  // The plan's vectors are reset by the next call.
  ASSERT_TRUE(PlanSendRecv(0, 1, {}, {}, &plan).ok());
  EXPECT_TRUE(plan.self_copies.empty());
}

TEST(NcclPlanSendRecv, RejectsSelfBlocksThatDoNotPair) {
  char buf[16];
  SendRecvPlan plan;
  {
    const Group::SendBlock sends[] = {{0, buf, 4}};
    const Group::RecvBlock recvs[] = {{0, buf, 5}};
    const Status st = PlanSendRecv(0, 2, sends, recvs, &plan);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "do not match")) << st.ToString();
  }
  {
    const Group::SendBlock sends[] = {{0, buf, 4}, {0, buf, 4}};
    const Group::RecvBlock recvs[] = {{0, buf, 4}};
    const Status st = PlanSendRecv(0, 2, sends, recvs, &plan);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "more blocks sent to itself")) << st.ToString();
  }
  {
    const Group::RecvBlock recvs[] = {{1, buf, 4}};
    const Status st = PlanSendRecv(1, 2, {}, recvs, &plan);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "more blocks received from itself")) << st.ToString();
  }
}

TEST(NcclPlanSendRecv, RejectsPeersOutOfRangeNegativeSizesAndMissingBuffers) {
  char buf[4];
  SendRecvPlan plan;
  const Group::SendBlock bad_sends[][1] = {{{2, buf, 1}}, {{-1, buf, 1}}, {{1, buf, -1}}, {{1, nullptr, 1}}};
  for (const auto& s : bad_sends) {
    const Status st = PlanSendRecv(0, 2, s, {}, &plan);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "peer " << s[0].peer << " bytes " << s[0].bytes;
    EXPECT_TRUE(Contains(st.message(), "send block #0")) << st.ToString();
  }
  const Group::RecvBlock bad_recvs[][1] = {{{2, buf, 1}}, {{-1, buf, 1}}, {{1, buf, -1}}, {{1, nullptr, 1}}};
  for (const auto& r : bad_recvs) {
    const Status st = PlanSendRecv(0, 2, {}, r, &plan);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "peer " << r[0].peer << " bytes " << r[0].bytes;
    EXPECT_TRUE(Contains(st.message(), "receive block #0")) << st.ToString();
  }
  // A zero-byte block needs no buffer.
  const Group::SendBlock empty_send[] = {{1, nullptr, 0}};
  const Group::RecvBlock empty_recv[] = {{1, nullptr, 0}};
  EXPECT_TRUE(PlanSendRecv(0, 2, empty_send, empty_recv, &plan).ok());
  EXPECT_EQ(PlanSendRecv(2, 2, {}, {}, &plan).code(), StatusCode::kInvalidArgument);
}

TEST(NcclPlanSendRecv, CapacityReceivesAreUnimplemented) {
  char buf[8];
  int64_t got = 0;
  SendRecvPlan plan;
  for (int peer : {0, 1}) {
    const Group::RecvBlock recvs[] = {{peer, buf, 8, &got}};
    const Status st = PlanSendRecv(0, 2, {}, recvs, &plan);
    EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.ToString();
    EXPECT_TRUE(Contains(st.message(), "probe")) << st.ToString();
  }
}

// --- NCCL results as Status ---

Status CountOfNullComm() {
  int n = 0;
  SHOAL_NCCL_RETURN_IF_ERROR(ncclCommCount(nullptr, &n));
  return Status::Ok();
}

ncclResult_t StillRunning() { return ncclInProgress; }

Status InProgressCall() {
  SHOAL_NCCL_RETURN_IF_ERROR(StillRunning());
  return Status::Ok();
}

// Two ranks on one GPU are named before NCCL is asked (it would refuse them with a less specific
// error); ranks on different machines with the same PCI location, or with unknown identities, are fine.
TEST(NcclSharedDevice, NamesTheFirstPairOnOneGpuOfOneMachine) {
  const int64_t host_a = 11, host_b = 22, gpu0 = (0x1b << 8) + 1, gpu1 = (0x2c << 8) + 1;
  EXPECT_EQ(DescribeSharedDevice(std::vector<DeviceIdentity>{{host_a, gpu0}, {host_a, gpu1}, {host_b, gpu0}}), "");
  EXPECT_EQ(DescribeSharedDevice(std::vector<DeviceIdentity>{{host_a, gpu0}, {host_b, gpu1}, {host_a, gpu0}}),
            "ranks 0 and 2 both use the GPU at PCI 0000:1b:00.0 on one machine");
  EXPECT_EQ(DescribeSharedDevice(std::vector<DeviceIdentity>{{0, 0}, {0, 0}, {host_a, 0}, {host_a, 0}}), "");
  EXPECT_EQ(DescribeSharedDevice(std::vector<DeviceIdentity>{}), "");
}

// Without a device the identity still names the machine (the boot id), and the PCI part is unknown.
TEST(NcclSharedDevice, IdentifyDeviceWithoutAGpuKnowsTheMachineOnly) {
  if (cuda::CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: covered by the GPU runs";
  const DeviceIdentity id = IdentifyDevice(0);
  EXPECT_NE(id.machine, 0);
  EXPECT_EQ(id.pci, 0);
  EXPECT_EQ(IdentifyDevice(0).machine, id.machine);
}

TEST(NcclStatusMapping, CodesBecomeStatusCodes) {
  EXPECT_TRUE(cuda::NcclStatus(ncclSuccess, "no error", nullptr, "c", "f.cc", 1).ok());
  EXPECT_EQ(cuda::NcclStatus(ncclRemoteError, "remote", nullptr, "c", "f.cc", 1).code(), StatusCode::kUnavailable);
  EXPECT_EQ(cuda::NcclStatus(ncclSystemError, "system", nullptr, "c", "f.cc", 1).code(), StatusCode::kUnavailable);
  EXPECT_EQ(cuda::NcclStatus(ncclInvalidUsage, "usage", nullptr, "c", "f.cc", 1).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::NcclStatus(ncclInvalidArgument, "arg", nullptr, "c", "f.cc", 1).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::NcclStatus(ncclInternalError, "internal", nullptr, "c", "f.cc", 1).code(), StatusCode::kInternal);
  EXPECT_EQ(cuda::NcclStatus(ncclUnhandledCudaError, "cuda", nullptr, "c", "f.cc", 1).code(),
            StatusCode::kInternal);
}

TEST(NcclStatusMapping, MessageNamesTheCallTheFileAndTheRank) {
  const Status st = cuda::NcclStatus(ncclRemoteError, ncclGetErrorString(ncclRemoteError), "peer 3 hung up",
                                     "ncclSend(buf, n, ncclInt8, 3, comm, stream)", "comm/x.cc", 42);
  EXPECT_TRUE(Contains(st.message(), "ncclSend(buf, n, ncclInt8, 3, comm, stream)")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "comm/x.cc:42")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "peer 3 hung up")) << st.message();
  cuda::SetCudaErrorRank(5);
  const Status ranked = cuda::NcclStatus(ncclInvalidUsage, "invalid usage", nullptr, "call", "f.cc", 1);
  cuda::SetCudaErrorRank(-1);
  EXPECT_TRUE(Contains(ranked.message(), "on rank 5")) << ranked.message();
}

TEST(NcclStatusMapping, TheMacroWrapsARealNcclError) {
  // ncclCommCount checks its arguments before touching a device, so this runs without a GPU.
  const Status st = CountOfNullComm();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "ncclCommCount(nullptr, &n)")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "nccl_group_test.cc")) << st.message();
  // ncclInProgress is how a non-blocking communicator says "queued", not an error.
  EXPECT_TRUE(InProgressCall().ok());
}

// --- with a GPU: one rank, every collective ---

TEST(NcclGroupOneRank, CollectivesRunOnTheDevice) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device: the collectives need one";
  auto bootstrap = comm::MakeSelfGroup();
  auto made = NcclGroup::Create(*bootstrap, 0, Deadline::AfterMs(30000));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  NcclGroup& g = **made;
  EXPECT_EQ(g.backend(), "nccl");
  EXPECT_EQ(g.size(), 1);
  std::vector<int64_t> v = {3, -4};
  ASSERT_TRUE(g.AllReduceSum(v, Deadline::AfterMs(10000)).ok());
  EXPECT_EQ(v, (std::vector<int64_t>{3, -4}));
  ASSERT_TRUE(g.Barrier(Deadline::AfterMs(10000)).ok());

  void* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 64), cudaSuccess);
  const std::vector<uint8_t> in = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_EQ(cudaMemcpy(dev, in.data(), 8, cudaMemcpyHostToDevice), cudaSuccess);
  uint8_t* base = static_cast<uint8_t*>(dev);
  const Group::SendBlock sends[] = {{0, base, 8}};
  const Group::RecvBlock recvs[] = {{0, base + 32, 8}};
  std::vector<int> hooked;
  ASSERT_TRUE(g.SendRecv(sends, recvs, Deadline::AfterMs(10000), [&](int p) { hooked.push_back(p); }).ok());
  EXPECT_EQ(hooked, (std::vector<int>{0}));
  std::vector<uint8_t> out(8);
  ASSERT_EQ(cudaMemcpy(out.data(), base + 32, 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(out, in);

  int64_t got = 0;
  const Group::RecvBlock capacity[] = {{0, base + 32, 8, &got}};
  EXPECT_EQ(g.SendRecv(sends, capacity, Deadline::AfterMs(10000)).code(), StatusCode::kUnimplemented);
  EXPECT_FALSE(g.broken()) << "a rejected call must leave the group usable";

  auto sub = g.Split(7, 0, Deadline::AfterMs(30000));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  EXPECT_EQ((*sub)->size(), 1);
  EXPECT_EQ((*sub)->backend(), "nccl");
  cudaFree(dev);
}

}  // namespace
}  // namespace shoal
