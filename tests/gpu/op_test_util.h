// Shared helpers of the CUDA op tests (cuda_ops_test, cuda_moe_test, cuda_gemm_test): every CUDA op
// (kernels/cuda/cuda_kernels.h, gemm.h) against the CPU backend (kernels/kernels.h).
//
// Inputs are random and fresh per run: the seed comes from std::random_device, is printed first, and
// SHOAL_GPU_TEST_SEED=<n> replays a run (each test derives its generator from the seed and its own
// name, so --gtest_filter reproduces one test alone). Device outputs are poisoned (all bytes 0xFF: NaN)
// before each launch, so an op that writes nothing, or only part of its output, fails. The CPU
// reference always computes on exactly the bf16-rounded values the GPU reads. Each check states its
// tolerance and why; every float comparison prints its worst error as a fraction of the tolerance so
// the margins can be judged from a passing run's log.
//
// Without a CUDA device a test program prints "SKIP: no CUDA device (<why>)" and exits 77 (ctest
// SKIP_RETURN_CODE).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "common/thread_pool.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#include "kernels/kernels.h"
#include "tests/gpu/device_buffer.h"

namespace shoal::cuda::op_test {

using gpu_util::Bits;
using gpu_util::DeviceBuffer;
using gpu_util::Floats;
using gpu_util::Normal;
using gpu_util::ToBits;
using gpu_util::Widen;

inline uint64_t g_seed = 0;
inline cudaStream_t g_stream = nullptr;

#define ASSERT_OK(expr) \
  do { const ::shoal::Status st_ = (expr); ASSERT_TRUE(st_.ok()) << #expr << " -> " << st_.ToString(); } while (0)

inline ThreadPool& Pool() {
  static ThreadPool pool(static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 16u)));
  return pool;
}

// SHOAL_GPU_TEST_QUICK=1 leaves out the cases sized only to exceed the grids' block caps (their
// indexing is the code the small cases run): scripts/gpu-check.sh sets it under compute-sanitizer,
// which would take minutes over them.
inline bool Quick() {
  const char* v = std::getenv("SHOAL_GPU_TEST_QUICK");
  return v != nullptr && *v != '\0' && *v != '0';
}

inline std::mt19937_64 TestRng() {
  const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();  // unique here
  return std::mt19937_64(g_seed ^ std::hash<std::string>{}(name));
}

inline Bits NormalBf16(size_t n, std::mt19937_64& rng, float stddev = 1.0f) { return ToBits(Normal(n, rng, stddev)); }
inline int Uniform(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

template <class T, class U>
DeviceBuffer<T> Dev(const std::vector<U>& host) { return gpu_util::ToDevice<T>(host, g_stream); }
// An output buffer, poisoned (NaN), so anything the op leaves unwritten fails the comparison.
template <class T>
DeviceBuffer<T> Out(size_t n) {
  DeviceBuffer<T> b(n);
  b.Poison(g_stream);
  return b;
}
template <class T>
std::vector<T> Get(const DeviceBuffer<T>& b) { return b.template Download<T>(g_stream); }
inline Bits GetBits(const DeviceBuffer<bf16>& b) { return b.Download<uint16_t>(g_stream); }
inline Floats Get(const DeviceBuffer<bf16>& b) { return Widen(GetBits(b)); }

// |got - want| <= tol(i) for every i (NaN never passes). Prints the worst error relative to its
// tolerance either way: the margins of a passing run are how the tolerances get reviewed.
inline ::testing::AssertionResult Close(const std::string& what, const Floats& got, const Floats& want,
                                 const std::function<double(size_t)>& tol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": " << got.size() << " values";
  size_t bad = 0, worst = 0;
  double worst_ratio = -1.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]), t = tol(i);
    const double ratio = std::isnan(err) ? INFINITY : (t > 0 ? err / t : (err == 0 ? 0.0 : INFINITY));
    if (!(err <= t)) ++bad;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  std::printf("[   info   ] %s: %zu values, worst |err|/tol = %.3g\n", what.c_str(), got.size(), worst_ratio);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size()
                                       << " values outside tolerance; worst at " << worst << ": got " << got[worst]
                                       << ", want " << want[worst] << ", tol " << tol(worst);
}

template <class T>
::testing::AssertionResult Equal(const std::string& what, const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << what << ": " << got.size() << " values";
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ == 0) first = i;
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " differ; first at "
                                       << first << ": got " << +got[first] << ", want " << +want[first];
}

// A bf16 output against the unrounded f32 reference: rounding to bf16 moves a value by at most half
// an ulp = 2^-8 of its magnitude; `rel` covers the f32 differences before rounding, `abs` values near 0.
inline std::function<double(size_t)> Bf16Tol(const Floats& want, double rel, double abs) {
  return [&want, rel, abs](size_t i) { return std::fabs(want[i]) * (std::ldexp(1.0, -8) + rel) + abs; };
}
inline std::function<double(size_t)> F32Tol(const Floats& want, double rel, double abs) {
  return [&want, rel, abs](size_t i) { return std::fabs(want[i]) * rel + abs; };
}
inline std::function<double(size_t)> Exact() { return [](size_t) { return 0.0; }; }
inline std::string Dims(const char* name, std::initializer_list<int64_t> dims) {
  std::string s = name;
  for (int64_t d : dims) s += (s == name ? " " : "x") + std::to_string(d);
  return s;
}


// --- GEMMs ----------------------------------------------------------------------------------------
// y = x · Wᵀ on the CPU from the same bf16 values, and Σ|x·w| per output (the scale of the f32
// accumulation error), both with kernels::MatMul.
inline void CpuGemm(const uint16_t* x, int64_t m, int64_t k, const Bits& w, int64_t n, float* y, float* mag) {
  Floats xf(m * k), xa(m * k), wa = Widen(w);
  for (int64_t i = 0; i < m * k; ++i) xf[i] = Bf16ToF32(x[i]), xa[i] = std::fabs(xf[i]);
  for (float& v : wa) v = std::fabs(v);
  kernels::MatMul(xf.data(), m, {DType::kBF16, w.data(), n, k}, y, Pool());
  kernels::MatMul(xa.data(), m, {DType::kF32, wa.data(), n, k}, mag, Pool());
}

// bf16 products are exact in f32; only the summation order differs (cuBLAS tiles, split-K), which
// moves a sum by ~1e-7·Σ|x·w|. 3e-5·Σ|x·w| leaves room for tensor-core accumulators that truncate
// (a bias of a fraction of an ulp of the running sum per step, k ≤ 2048 here) and the CPU's own
// rounding, while a wrong row, expert or transpose is off by O(1)·Σ|x·w|.
inline constexpr double kGemmRel = 3e-5;


// k distinct experts per token in random order (as a router emits them), drawn from the first
// `used` experts only (so the rest get no rows).
inline std::vector<int32_t> RandomRouting(int64_t m, int k, int used, std::mt19937_64& rng) {
  std::vector<int32_t> all(used), ids(m * k);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < m; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), k, ids.begin() + t * k);
  }
  return ids;
}

struct Plan { std::vector<int64_t> offsets; std::vector<int32_t> row_of, row_token; };
// Pairs (t, j) stably sorted by expert: expert-major, then by token (the CPU exchange's order).
inline Plan CpuPlan(const std::vector<int32_t>& ids, int64_t m, int k, int E) {
  Plan p;
  std::vector<int32_t> order(m * k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  p.offsets.assign(E + 1, 0);
  for (int32_t e : ids) ++p.offsets[e + 1];
  std::partial_sum(p.offsets.begin(), p.offsets.end(), p.offsets.begin());
  p.row_of.resize(m * k), p.row_token.resize(m * k);
  for (int32_t r = 0; r < m * k; ++r) p.row_of[order[r]] = r, p.row_token[r] = order[r] / k;
  return p;
}


// A test program's main: the device check (exit 77 without one), the seed, the stream.
inline int RunOpTests(int argc, char** argv, const char* program) {
  std::string why;
  if (CudaDeviceCount(&why) == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  const char* env = std::getenv("SHOAL_GPU_TEST_SEED");
  std::random_device rd;
  const unsigned long long seed = env && *env ? std::strtoull(env, nullptr, 0) : (uint64_t{rd()} << 32) ^ rd();
  g_seed = seed;
  std::printf("%s seed %llu (replay with SHOAL_GPU_TEST_SEED=%llu)\n", program, seed, seed);
  cudaDeviceProp prop{};
  SHOAL_GPU_CHECK(cudaSetDevice(0));
  SHOAL_GPU_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  std::fflush(stdout);
  // Non-blocking: no implicit sync with the legacy stream; only what the launchers order here counts.
  SHOAL_GPU_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  const int rc = RUN_ALL_TESTS();
  SHOAL_GPU_CHECK(cudaStreamDestroy(g_stream));
  return rc;
}

}  // namespace shoal::cuda::op_test
