// cuBLAS GEMMs of the GPU forward pass (kernels/cuda/gemm.h).
//
// The argument mapping, derived once for every call here. cuBLAS is column-major, and a row-major
// [r, c] array with leading dimension c is, read column-major, its transpose [c, r] with ld c:
//   y (row-major [m, n])  is column-major yᵀ [n, m], ld n   → C, ldc = n
//   x (row-major [m, k])  is column-major xᵀ [k, m], ld k
//   W (row-major [n, k])  is column-major Wᵀ [k, n], ld k
// y = x·Wᵀ ⇔ yᵀ = W·xᵀ, an (n×k)(k×m) product. op(A) = W: A is the stored Wᵀ, transposed back →
// transa = T, lda = k. op(B) = xᵀ: B is the stored xᵀ as is → transb = N, ldb = k. So cuBLAS's
// (m, n, k) = (n, m, k): gemm(T, N, n, m, k, W, lda = k, x, ldb = k, y, ldc = n). ("TN", the usual
// nn.Linear form; no copy of the weights.) Leading dimensions are clamped to 1 for k = 0 or n = 0, as
// cuBLAS requires ld ≥ max(1, rows).
//
// Workspaces: cublasSetStream resets the handle's workspace to cuBLAS's default pool, so every
// cublasSetStream here is followed by cublasSetWorkspace. Each forked stream has a workspace of its
// own: GEMMs running concurrently on different streams must not share one.
#include "kernels/cuda/gemm.h"

#include <climits>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_check.h"

namespace shoal::cuda {

namespace gemm_internal {

// Hopper's recommended cuBLAS workspace; the forked streams run the smaller per-expert GEMMs.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr size_t kForkWorkspaceBytes = size_t{8} << 20;
constexpr int kMaxPerExpertStreams = 32;
// Host staging slots of the grouped call's pointer arrays (below).
constexpr int kPointerSlots = 8;

// Everything the expert paths keep between calls (Gemm::Fork derives from it, so that the helpers
// below, which cannot name the private Gemm::Fork, can take it).
struct ExpertState {
  // kPerExpert: forked streams, their workspaces, and the events that fork and join them.
  std::vector<cudaStream_t> streams;
  std::vector<void*> workspaces;
  std::vector<cudaEvent_t> joined;
  cudaEvent_t forked = nullptr;

  // kGrouped: cublasGemmGroupedBatchedEx reads its problem sizes from host arrays but its A/B/C pointer
  // arrays from DEVICE memory (cuBLAS documentation, the "Memory" column of the API's table: Aarray,
  // Barray and Carray are "device"; NVIDIA's gemmGroupedBatched sample copies them with cudaMemcpy).
  // Each call stages [A... | B... | C...] in one of kPointerSlots pinned host slots, copies it to
  // device_ptrs on the stream, and records slot_done; a slot is rewritten only after its event, so
  // the host blocks only when it runs kPointerSlots grouped calls ahead of the GPU. One device array
  // suffices: the copy of call i + 1 is stream-ordered after the GEMM of call i.
  void** host_ptrs = nullptr;    // pinned, kPointerSlots × ptr_capacity
  void** device_ptrs = nullptr;  // ptr_capacity
  int64_t ptr_capacity = 0;
  cudaEvent_t slot_done[kPointerSlots] = {};
  int next_slot = 0;

  // Per-call scratch, kept to avoid allocating on every MoE layer.
  std::vector<int> active;  // experts with rows, ascending
  std::vector<cublasOperation_t> transa, transb;
  std::vector<int> m_arr, n_arr, k_arr, lda, ldb, ldc, group_size;
  std::vector<float> alpha, beta;
};

}  // namespace gemm_internal

struct Gemm::Fork : gemm_internal::ExpertState {};

namespace {

using gemm_internal::ExpertState;
using gemm_internal::kForkWorkspaceBytes;
using gemm_internal::kPointerSlots;
using gemm_internal::kWorkspaceBytes;

Status CheckSize(const char* fn, const char* name, int64_t v) {
  if (v < 0) return InvalidArgument(std::string(fn) + ": " + name + " " + std::to_string(v) + " is negative");
  if (v > INT_MAX)
    return InvalidArgument(std::string(fn) + ": " + name + " " + std::to_string(v) +
                           " exceeds INT_MAX (the 32-bit cuBLAS API)");
  return Status::Ok();
}

int Ld(int64_t v) { return v > 1 ? static_cast<int>(v) : 1; }

// y[rows, n] = x[rows, k] · W[n, k]ᵀ + beta · y on the handle's current stream (derivation at the top);
// y is f32 (CUDA_R_32F) or bf16 (CUDA_R_16BF, rounded from the f32 accumulator).
Status GemmTN(cublasHandle_t handle, const bf16* x, int64_t rows, int64_t k, const bf16* w, int64_t n, void* y,
              cudaDataType y_type, float beta) {
  const float alpha = 1.0f;
  SHOAL_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                            static_cast<int>(rows), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
                                            Ld(k), x, CUDA_R_16BF, Ld(k), &beta, y, y_type, Ld(n),
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

size_t ElementBytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
const char* TypeName(cudaDataType t) { return t == CUDA_R_32F ? "f32" : "bf16"; }

// Makes room for `count` pointers per slot. Growing drops buffers a queued copy or GEMM may still
// read, so it first drains the stream; that happens on the first call (or a larger expert count) only.
Status ReservePointers(ExpertState& st, int64_t count, cudaStream_t stream) {
  if (count <= st.ptr_capacity) return Status::Ok();
  SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (st.host_ptrs != nullptr) {
    SHOAL_CUDA_RETURN_IF_ERROR(cudaFreeHost(st.host_ptrs));
    st.host_ptrs = nullptr;
  }
  if (st.device_ptrs != nullptr) {
    SHOAL_CUDA_RETURN_IF_ERROR(cudaFree(st.device_ptrs));
    st.device_ptrs = nullptr;
  }
  st.ptr_capacity = 0;
  const int64_t capacity = count < 3 * 64 ? 3 * 64 : count;  // 64 experts' worth at least
  SHOAL_CUDA_RETURN_IF_ERROR(
      cudaMallocHost(reinterpret_cast<void**>(&st.host_ptrs), sizeof(void*) * capacity * kPointerSlots));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&st.device_ptrs), sizeof(void*) * capacity));
  st.ptr_capacity = capacity;
  return Status::Ok();
}

// The checks both expert paths share; fills st.active with the experts that have rows, ascending.
Status CheckExperts(const char* fn, const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights,
                    int64_t n, int64_t k, const void* y, ExpertState& st) {
  if (host_offsets.empty())
    return InvalidArgument(std::string(fn) + ": host_offsets is empty (it holds num_experts + 1 entries)");
  SHOAL_RETURN_IF_ERROR(CheckSize(fn, "n", n));
  SHOAL_RETURN_IF_ERROR(CheckSize(fn, "k", k));
  if (host_offsets[0] < 0)
    return InvalidArgument(std::string(fn) + ": host_offsets[0] " + std::to_string(host_offsets[0]) + " is negative");
  st.active.clear();
  const size_t num_experts = host_offsets.size() - 1;
  for (size_t e = 0; e < num_experts; ++e) {
    const int64_t rows = host_offsets[e + 1] - host_offsets[e];
    if (rows < 0)
      return InvalidArgument(std::string(fn) + ": host_offsets decrease at expert " + std::to_string(e) + " (" +
                             std::to_string(host_offsets[e]) + " then " + std::to_string(host_offsets[e + 1]) + ")");
    if (rows == 0) continue;
    if (rows > INT_MAX)
      return InvalidArgument(std::string(fn) + ": expert " + std::to_string(e) + " has " + std::to_string(rows) +
                             " rows, more than INT_MAX (the 32-bit cuBLAS API)");
    if (weights == nullptr || weights[e] == nullptr)
      return InvalidArgument(std::string(fn) + ": no weight for expert " + std::to_string(e) + ", which has " +
                             std::to_string(rows) + " rows");
    st.active.push_back(static_cast<int>(e));
  }
  if (!st.active.empty() && n > 0 && (y == nullptr || (k > 0 && x == nullptr)))
    return InvalidArgument(std::string(fn) + ": null x or y with " +
                           std::to_string(host_offsets.back() - host_offsets[0]) + " rows");
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<Gemm>> Gemm::Create(cudaStream_t stream, int per_expert_streams) {
  if (per_expert_streams < 1 || per_expert_streams > gemm_internal::kMaxPerExpertStreams)
    return InvalidArgument("Gemm::Create: per_expert_streams " + std::to_string(per_expert_streams) +
                           " is outside [1, " + std::to_string(gemm_internal::kMaxPerExpertStreams) + "]");
  // Filled step by step: on an error the destructor releases whatever was created so far.
  std::unique_ptr<Gemm> gemm(new Gemm());
  gemm->stream_ = stream;
  gemm->fork_ = std::make_unique<Fork>();
  Fork& f = *gemm->fork_;
  SHOAL_CUBLAS_RETURN_IF_ERROR(cublasCreate(&gemm->handle_));
  SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetStream(gemm->handle_, stream));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&gemm->workspace_, kWorkspaceBytes));
  SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(gemm->handle_, gemm->workspace_, kWorkspaceBytes));

  SHOAL_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&f.forked, cudaEventDisableTiming));
  for (cudaEvent_t& e : f.slot_done) SHOAL_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  for (int i = 0; i < per_expert_streams; ++i) {
    // Non-blocking: ordering with stream_ is by the fork/join events only, not by the legacy stream.
    cudaStream_t s = nullptr;
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    f.streams.push_back(s);
    cudaEvent_t e = nullptr;
    SHOAL_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    f.joined.push_back(e);
    void* ws = nullptr;
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&ws, kForkWorkspaceBytes));
    f.workspaces.push_back(ws);
  }
  SHOAL_RETURN_IF_ERROR(gemm->ProbeGrouped());
  return StatusOr<std::unique_ptr<Gemm>>(std::move(gemm));
}

Gemm::~Gemm() {
  // Teardown: errors are ignored (nothing can act on them here). cublasDestroy synchronizes the device
  // (cuBLAS documents it), so no queued GEMM or pointer copy still reads what is freed below; stream_
  // is not touched, as its owner may already have destroyed it.
  if (handle_ != nullptr) (void)cublasDestroy(handle_);
  if (fork_ != nullptr) {
    Fork& f = *fork_;
    for (cudaStream_t s : f.streams) (void)cudaStreamDestroy(s);
    for (cudaEvent_t e : f.joined) (void)cudaEventDestroy(e);
    for (void* ws : f.workspaces) (void)cudaFree(ws);
    if (f.forked != nullptr) (void)cudaEventDestroy(f.forked);
    for (cudaEvent_t e : f.slot_done)
      if (e != nullptr) (void)cudaEventDestroy(e);
    if (f.host_ptrs != nullptr) (void)cudaFreeHost(f.host_ptrs);
    if (f.device_ptrs != nullptr) (void)cudaFree(f.device_ptrs);
  }
  if (workspace_ != nullptr) (void)cudaFree(workspace_);
}

Status Gemm::Linear(const bf16* x, int64_t m, int64_t k, const bf16* w, int64_t n, float* y, float beta) {
  SHOAL_RETURN_IF_ERROR(CheckSize("Gemm::Linear", "m", m));
  SHOAL_RETURN_IF_ERROR(CheckSize("Gemm::Linear", "k", k));
  SHOAL_RETURN_IF_ERROR(CheckSize("Gemm::Linear", "n", n));
  if (m == 0 || n == 0) return Status::Ok();
  if (y == nullptr || (k > 0 && (x == nullptr || w == nullptr)))
    return InvalidArgument("Gemm::Linear: null x, w or y for a " + std::to_string(m) + "×" + std::to_string(k) +
                           " · " + std::to_string(n) + "×" + std::to_string(k) + "ᵀ product");
  return GemmTN(handle_, x, m, k, w, n, y, CUDA_R_32F, beta);
}

// Two experts of 16 rows each of a 16 × 16 product per output type, on zeroed device memory: enough
// for cuBLAS to accept or refuse the type combination, and cheap. Any refusal (NOT_SUPPORTED, or
// INVALID_VALUE from a cuBLAS that checks types up front) marks that output type unsupported; only
// a CUDA error (the device is unusable) fails Create.
Status Gemm::ProbeGrouped() {
  constexpr int64_t kDim = 16, kExperts = 2, kRows = kExperts * kDim;
  const size_t x_bytes = kRows * kDim * sizeof(bf16), w_bytes = kExperts * kDim * kDim * sizeof(bf16);
  const size_t y_bytes = kRows * kDim * sizeof(float);
  void* mem = nullptr;
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMalloc(&mem, x_bytes + w_bytes + y_bytes));
  char* base = static_cast<char*>(mem);
  const Status probed = [&]() -> Status {
    SHOAL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(mem, 0, x_bytes + w_bytes + y_bytes, stream_));
    const auto* x = reinterpret_cast<const bf16*>(base);
    const auto* w = reinterpret_cast<const bf16*>(base + x_bytes);
    const bf16* weights[kExperts] = {w, w + kDim * kDim};
    const int64_t offsets[kExperts + 1] = {0, kDim, 2 * kDim};
    for (cudaDataType type : {CUDA_R_32F, CUDA_R_16BF}) {
      cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
      SHOAL_RETURN_IF_ERROR(Grouped(x, offsets, weights, kDim, kDim, base + x_bytes + w_bytes, type, &status));
      (type == CUDA_R_32F ? grouped_.f32_out : grouped_.bf16_out) = status == CUBLAS_STATUS_SUCCESS;
      if (status != CUBLAS_STATUS_SUCCESS) {
        grouped_.why_not += std::string(grouped_.why_not.empty() ? "" : "; ") + "bf16→" + TypeName(type) + ": " +
                            cublasGetStatusName(status);
      }
    }
    // A call that was accepted but faults on the device shows here, not in a later step.
    SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }();
  (void)cudaFree(mem);
  return probed.WithContext("Gemm::Create: probing cublasGemmGroupedBatchedEx");
}

Status Gemm::ExpertLinear(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                          int64_t k, float* y, ExpertGemmMode mode) {
  return ExpertLinearAny(x, host_offsets, weights, n, k, y, CUDA_R_32F, mode);
}

Status Gemm::ExpertLinear(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                          int64_t k, bf16* y, ExpertGemmMode mode) {
  return ExpertLinearAny(x, host_offsets, weights, n, k, y, CUDA_R_16BF, mode);
}

Status Gemm::ExpertLinearAny(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights,
                             int64_t n, int64_t k, void* y, cudaDataType y_type, ExpertGemmMode mode) {
  constexpr const char* kFn = "Gemm::ExpertLinear";
  if (mode != ExpertGemmMode::kGrouped && mode != ExpertGemmMode::kPerExpert)
    return InvalidArgument(std::string(kFn) + ": unknown mode " + std::to_string(static_cast<int>(mode)));
  if (mode == ExpertGemmMode::kGrouped && !(y_type == CUDA_R_32F ? grouped_.f32_out : grouped_.bf16_out))
    return Unimplemented(std::string(kFn) + ": this cuBLAS (" + std::to_string(CUBLAS_VERSION) +
                         ") refused cublasGemmGroupedBatchedEx for bf16 × bf16 → " + TypeName(y_type) +
                         " when probed (" + grouped_.why_not + "); use ExpertGemmMode::kPerExpert");
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  if (mode == ExpertGemmMode::kGrouped) {
    SHOAL_RETURN_IF_ERROR(Grouped(x, host_offsets, weights, n, k, y, y_type, &status));
    SHOAL_CUBLAS_RETURN_IF_ERROR(status);
    return Status::Ok();
  }
  SHOAL_RETURN_IF_ERROR(CheckExperts(kFn, x, host_offsets, weights, n, k, y, *fork_));
  ExpertState& st = *fork_;
  const int groups = static_cast<int>(st.active.size());
  if (groups == 0 || n == 0) return Status::Ok();
  const size_t y_elem = ElementBytes(y_type);

  // kPerExpert. Fork: every used stream waits for what stream_ has queued (x, y producers).
  const int used = groups < static_cast<int>(st.streams.size()) ? groups : static_cast<int>(st.streams.size());
  SHOAL_CUDA_RETURN_IF_ERROR(cudaEventRecord(st.forked, stream_));
  for (int s = 0; s < used; ++s) SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(st.streams[s], st.forked, 0));

  // Expert i of the active list goes to stream i % used; issuing stream by stream gives the same
  // assignment with one cublasSetStream per stream instead of one per expert.
  auto issue = [&]() -> Status {
    for (int s = 0; s < used; ++s) {
      SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle_, st.streams[s]));
      SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(handle_, st.workspaces[s], kForkWorkspaceBytes));
      for (int g = s; g < groups; g += used) {
        const int e = st.active[g];
        const int64_t row0 = host_offsets[e];
        SHOAL_RETURN_IF_ERROR(GemmTN(handle_, x + row0 * k, host_offsets[e + 1] - row0, k, weights[e], n,
                                     static_cast<char*>(y) + row0 * n * static_cast<int64_t>(y_elem), y_type, 0.0f));
      }
    }
    return Status::Ok();
  };
  const Status issued = issue();

  // Join and rebind even after a failure, so that stream_ never runs ahead of work already queued on
  // the forked streams and the handle is left on stream_ with its own workspace.
  auto join = [&]() -> Status {
    for (int s = 0; s < used; ++s) {
      SHOAL_CUDA_RETURN_IF_ERROR(cudaEventRecord(st.joined[s], st.streams[s]));
      SHOAL_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, st.joined[s], 0));
    }
    return Status::Ok();
  };
  const Status joined = join();
  auto rebind = [&]() -> Status {
    SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle_, stream_));
    SHOAL_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes));
    return Status::Ok();
  };
  const Status rebound = rebind();
  if (!issued.ok()) return issued;
  if (!joined.ok()) return joined;
  return rebound;
}

Status Gemm::Grouped(const bf16* x, std::span<const int64_t> host_offsets, const bf16* const* weights, int64_t n,
                     int64_t k, void* y, cudaDataType y_type, cublasStatus_t* status) {
  *status = CUBLAS_STATUS_SUCCESS;
  SHOAL_RETURN_IF_ERROR(CheckExperts("Gemm::ExpertLinear", x, host_offsets, weights, n, k, y, *fork_));
  ExpertState& st = *fork_;
  const int groups = static_cast<int>(st.active.size());
  if (groups == 0 || n == 0) return Status::Ok();
  const int64_t y_elem = static_cast<int64_t>(ElementBytes(y_type));
  // One group per expert with rows (each group one problem, group_size 1): the groups differ in
  // their row count, which is the grouped API's per-group n.
  st.transa.assign(groups, CUBLAS_OP_T);
  st.transb.assign(groups, CUBLAS_OP_N);
  st.m_arr.assign(groups, static_cast<int>(n));
  st.n_arr.resize(groups);
  st.k_arr.assign(groups, static_cast<int>(k));
  st.lda.assign(groups, Ld(k));
  st.ldb.assign(groups, Ld(k));
  st.ldc.assign(groups, Ld(n));
  st.group_size.assign(groups, 1);
  st.alpha.assign(groups, 1.0f);
  st.beta.assign(groups, 0.0f);
  SHOAL_RETURN_IF_ERROR(ReservePointers(st, int64_t{3} * groups, stream_));
  const int slot = st.next_slot;
  st.next_slot = (st.next_slot + 1) % kPointerSlots;
  // The slot's previous copy must have left the host buffer before it is overwritten.
  SHOAL_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(st.slot_done[slot]));
  void** host = st.host_ptrs + static_cast<int64_t>(slot) * st.ptr_capacity;
  for (int g = 0; g < groups; ++g) {
    const int e = st.active[g];
    const int64_t row0 = host_offsets[e];
    st.n_arr[g] = static_cast<int>(host_offsets[e + 1] - row0);
    host[g] = const_cast<bf16*>(weights[e]);
    host[groups + g] = const_cast<bf16*>(x + row0 * k);
    host[2 * groups + g] = static_cast<char*>(y) + row0 * n * y_elem;
  }
  SHOAL_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(st.device_ptrs, host, sizeof(void*) * 3 * groups,
                                             cudaMemcpyHostToDevice, stream_));
  SHOAL_CUDA_RETURN_IF_ERROR(cudaEventRecord(st.slot_done[slot], stream_));
  void* const* dev = st.device_ptrs;
  *status = cublasGemmGroupedBatchedEx(handle_, st.transa.data(), st.transb.data(), st.m_arr.data(), st.n_arr.data(),
                                       st.k_arr.data(), st.alpha.data(), dev, CUDA_R_16BF, st.lda.data(),
                                       dev + groups, CUDA_R_16BF, st.ldb.data(), st.beta.data(), dev + 2 * groups,
                                       y_type, st.ldc.data(), groups, st.group_size.data(), CUBLAS_COMPUTE_32F);
  return Status::Ok();
}

}  // namespace shoal::cuda
