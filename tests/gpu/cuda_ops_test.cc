// Every CUDA op (kernels/cuda/cuda_kernels.h, gemm.h) against the CPU backend (kernels/kernels.h).
//
// Inputs are random and fresh per run: the seed comes from std::random_device, is printed first, and
// SHOAL_GPU_TEST_SEED=<n> replays a run (each test derives its generator from the seed and its own
// name, so --gtest_filter reproduces one test alone). Device outputs are poisoned (all bytes 0xFF: NaN)
// before each launch, so an op that writes nothing, or only part of its output, fails. The CPU
// reference always computes on exactly the bf16-rounded values the GPU reads. Each check states its
// tolerance and why; every float comparison prints its worst error as a fraction of the tolerance so
// the margins can be judged from a passing run's log.
//
// Without a CUDA device it prints "SKIP: no CUDA device (<why>)" and exits 77 (ctest SKIP_RETURN_CODE).
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

namespace shoal::cuda {
namespace {

using gpu_util::Bits;
using gpu_util::DeviceBuffer;
using gpu_util::Floats;
using gpu_util::Normal;
using gpu_util::ToBits;
using gpu_util::Widen;

uint64_t g_seed = 0;
cudaStream_t g_stream = nullptr;

#define ASSERT_OK(expr) \
  do { const ::shoal::Status st_ = (expr); ASSERT_TRUE(st_.ok()) << #expr << " -> " << st_.ToString(); } while (0)

ThreadPool& Pool() {
  static ThreadPool pool(static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 16u)));
  return pool;
}

// SHOAL_GPU_TEST_QUICK=1 leaves out the cases sized only to exceed the grids' block caps (their
// indexing is the code the small cases run): scripts/gpu-check.sh sets it under compute-sanitizer,
// which would take minutes over them.
bool Quick() {
  const char* v = std::getenv("SHOAL_GPU_TEST_QUICK");
  return v != nullptr && *v != '\0' && *v != '0';
}

std::mt19937_64 TestRng() {
  const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();  // unique here
  return std::mt19937_64(g_seed ^ std::hash<std::string>{}(name));
}

Bits NormalBf16(size_t n, std::mt19937_64& rng, float stddev = 1.0f) { return ToBits(Normal(n, rng, stddev)); }
int Uniform(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

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
Bits GetBits(const DeviceBuffer<bf16>& b) { return b.Download<uint16_t>(g_stream); }
Floats Get(const DeviceBuffer<bf16>& b) { return Widen(GetBits(b)); }

// |got - want| <= tol(i) for every i (NaN never passes). Prints the worst error relative to its
// tolerance either way: the margins of a passing run are how the tolerances get reviewed.
::testing::AssertionResult Close(const std::string& what, const Floats& got, const Floats& want,
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
std::function<double(size_t)> Bf16Tol(const Floats& want, double rel, double abs) {
  return [&want, rel, abs](size_t i) { return std::fabs(want[i]) * (std::ldexp(1.0, -8) + rel) + abs; };
}
std::function<double(size_t)> F32Tol(const Floats& want, double rel, double abs) {
  return [&want, rel, abs](size_t i) { return std::fabs(want[i]) * rel + abs; };
}
std::function<double(size_t)> Exact() { return [](size_t) { return 0.0; }; }
std::string Dims(const char* name, std::initializer_list<int64_t> dims) {
  std::string s = name;
  for (int64_t d : dims) s += (s == name ? " " : "x") + std::to_string(d);
  return s;
}

// --- Element-wise and normalisation ---------------------------------------------------------------
void EmbedCase(const DeviceBuffer<bf16>& dtable, const Bits& table, int64_t vocab, int64_t d, int64_t m,
               std::mt19937_64& rng) {
  std::vector<int32_t> ids(m);
  for (auto& id : ids) id = Uniform(rng, 0, vocab - 1);
  ids[0] = vocab - 1, ids[1] = 0, ids[m - 1] = ids[1];  // both ends of the table and a repeated id
  auto dids = Dev<int32_t>(ids);
  auto out = Out<float>(m * d);
  ASSERT_OK(Embed(dtable.get(), d, dids.get(), m, out.get(), g_stream));
  Floats want(m * d);
  for (int64_t t = 0; t < m; ++t)
    kernels::GatherRow({DType::kBF16, table.data(), vocab, d}, ids[t], want.data() + t * d);
  EXPECT_TRUE(Close(Dims("Embed", {m, d}), Get(out), want, Exact()));  // widening bf16 is exact
}

TEST(CudaOps, Embed) {
  auto rng = TestRng();
  const int64_t vocab = 5000, d = 1024;
  const Bits table = NormalBf16(vocab * d, rng);
  auto dtable = Dev<bf16>(table);
  for (int64_t m : {3, 300}) EmbedCase(dtable, table, vocab, d, m, rng);
  // Short rows, more than the 65,536 blocks the grid is capped at (the grid-stride loop), and an odd
  // width (scalar loads).
  const Bits narrow = NormalBf16(vocab * 8, rng), odd = NormalBf16(vocab * 13, rng);
  EmbedCase(Dev<bf16>(narrow), narrow, vocab, 8, 600000, rng);
  EmbedCase(Dev<bf16>(odd), odd, vocab, 13, 40, rng);
}

TEST(CudaOps, RmsNorm) {
  auto rng = TestRng();
  struct Shape { int64_t m, d; };
  // Decode- and prefill-sized hidden rows, then Qwen3's per-head q/k norm (rows = tokens × heads).
  // Then the edges of the two kernels: 1024 (the widest row a warp takes), 1025 (the block kernel,
  // unaligned, scalar loads), a wide odd row, and 600,000 short rows (more than the 65,536 blocks the
  // grid is capped at: the grid-stride loop).
  for (Shape s : {Shape{4, 2048}, Shape{257, 3584}, Shape{7 * 8, 128}, Shape{300 * 16, 128}, Shape{9, 1024},
                  Shape{9, 1025}, Shape{3, 8195}, Shape{600000, 8}}) {
    Floats x = Normal(s.m * s.d, rng), w = Normal(s.d, rng, 0.2f);
    for (int64_t r = 0; r < s.m; ++r) {  // rows of very different scale: the norm must remove it
      const float scale = std::exp(std::uniform_real_distribution<float>(-3.0f, 3.0f)(rng));
      for (int64_t i = 0; i < s.d; ++i) x[r * s.d + i] *= scale;
    }
    for (float& v : w) v += 1.0f;
    const float eps = 1e-6f;
    Floats want(x.size());
    kernels::RmsNorm(x.data(), s.m, s.d, w.data(), eps, want.data());
    auto dx = Dev<float>(x), dw = Dev<float>(w);
    auto ybf = Out<bf16>(s.m * s.d);
    ASSERT_OK(RmsNormToBf16(dx.get(), s.m, s.d, dw.get(), eps, ybf.get(), g_stream));
    // bf16 output: half an ulp (2^-8) + 2e-5 rel for the f32 sum of squares in another order (the CPU
    // sums in double; a per-lane f32 sum of ~100 squares is off by ≤ ~1e-5) and rsqrtf's 2 ulp.
    EXPECT_TRUE(Close(Dims("RmsNormToBf16", {s.m, s.d}), Get(ybf), want, Bf16Tol(want, 2e-5, 1e-6)));
    auto y = Out<float>(s.m * s.d);
    ASSERT_OK(RmsNormF32(dx.get(), s.m, s.d, dw.get(), eps, y.get(), g_stream));
    // f32 output: the same 2e-5 rel for the reduction order and rsqrtf.
    EXPECT_TRUE(Close(Dims("RmsNormF32", {s.m, s.d}), Get(y), want, F32Tol(want, 2e-5, 1e-6)));
    // In place (y == x), as the q/k norm runs.
    ASSERT_OK(RmsNormF32(dx.get(), s.m, s.d, dw.get(), eps, dx.get(), g_stream));
    EXPECT_TRUE(Close(Dims("RmsNormF32 in place", {s.m, s.d}), Get(dx), want, F32Tol(want, 2e-5, 1e-6)));
  }
}

TEST(CudaOps, RopeTableAndApplyRope) {
  auto rng = TestRng();
  struct Case { int head_dim; double base; float factor; int64_t m; int heads; };
  for (Case c : {Case{128, 1e6, 1.0f, 5, 32}, Case{128, 1e4, 1.0f, 300, 8}, Case{64, 1e4, 1.25f, 40, 4}}) {
    const int half = c.head_dim / 2;
    Floats inv_freq(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = static_cast<float>(1.0 / std::pow(c.base, 2.0 * i / c.head_dim));
    std::vector<int32_t> pos(c.m);
    for (auto& p : pos) p = Uniform(rng, 0, 40959);
    pos[0] = 0;  // angle 0: cos = factor exactly
    Floats cos(c.m * half), sin(c.m * half);
    kernels::RopeTable(pos.data(), c.m, inv_freq.data(), half, c.factor, cos.data(), sin.data());
    auto dpos = Dev<int32_t>(pos);
    auto dfreq = Dev<float>(inv_freq);
    auto dcos = Out<float>(cos.size()), dsin = Out<float>(sin.size());
    ASSERT_OK(RopeTable(dpos.get(), c.m, dfreq.get(), half, c.factor, dcos.get(), dsin.get(), g_stream));
    // The same f32 angle (one f32 multiply) on both sides; CUDA's cosf/sinf are within 2 ulp of the
    // CPU's rounded double (≤ 2.4e-7 here), plus the factor's rounding. 2e-6 is far below the ~1e-2 a
    // fast-math __sinf or an angle in another precision gives at positions ~40k.
    const auto rope_tol = [&](size_t) { return 2e-6 * c.factor; };
    EXPECT_TRUE(Close(Dims("RopeTable cos", {c.m, c.head_dim}), Get(dcos), cos, rope_tol));
    EXPECT_TRUE(Close(Dims("RopeTable sin", {c.m, c.head_dim}), Get(dsin), sin, rope_tol));

    // ApplyRope on the CPU's table (uploaded), so only the rotation is compared here.
    const Floats x = Normal(c.m * c.heads * c.head_dim, rng);
    Floats want = x;
    kernels::ApplyRope(want.data(), c.m, c.heads, c.head_dim, cos.data(), sin.data());
    auto dx = Dev<float>(x);
    dcos.Upload(cos, g_stream), dsin.Upload(sin, g_stream);
    ASSERT_OK(ApplyRope(dx.get(), c.m, c.heads, c.head_dim, dcos.get(), dsin.get(), g_stream));
    // a·c − b·s in f32 with or without fma: within ~2 ulp of |a·c| + |b·s| ≤ (|a| + |b|)·factor.
    const auto rot_tol = [&](size_t i) {
      const size_t row = i / c.head_dim, j = i % c.head_dim % half;
      const float a = x[row * c.head_dim + j], b = x[row * c.head_dim + j + half];
      return 1e-6 * (std::fabs(a) + std::fabs(b)) * c.factor + 1e-7;
    };
    EXPECT_TRUE(Close(Dims("ApplyRope", {c.m, c.heads, c.head_dim}), Get(dx), want, rot_tol));
  }
}

TEST(CudaOps, AddBiasAndAddSigmoidGated) {
  auto rng = TestRng();
  // The last shape needs more than the 65,536 blocks the grid is capped at (the grid-stride loop).
  for (auto [m, n] : {std::pair<int64_t, int64_t>{5, 4096}, {300, 640}, {7, 6}, {600000, 4}}) {
    const Floats y = Normal(m * n, rng), bias = Normal(n, rng);
    Floats want = y;
    kernels::AddBias(want.data(), m, n, bias.data());
    auto dy = Dev<float>(y), db = Dev<float>(bias);
    ASSERT_OK(AddBias(dy.get(), m, n, db.get(), g_stream));
    // Exact: one correctly rounded f32 addition per element on both sides.
    EXPECT_TRUE(Close(Dims("AddBias", {m, n}), Get(dy), want, Exact()));

    const Floats shared = Normal(m * n, rng), gate = Normal(m, rng, 3.0f);
    Floats gated(y.size());
    for (int64_t t = 0; t < m; ++t) {
      const float g = 1.0f / (1.0f + std::exp(-gate[t]));  // worker/moe.cc
      for (int64_t i = t * n; i < (t + 1) * n; ++i) gated[i] = g * shared[i], want[i] = y[i] + gated[i];
    }
    auto ds = Dev<float>(shared), dg = Dev<float>(gate);
    dy.Upload(y, g_stream);
    ASSERT_OK(AddSigmoidGated(ds.get(), dg.get(), m, n, dy.get(), g_stream));
    // One add (1e-6 of the residual) and the sigmoid with another exp (2e-5 rel of the gated term,
    // fast-math __expf included).
    EXPECT_TRUE(Close(Dims("AddSigmoidGated", {m, n}), Get(dy), want, [&](size_t i) {
      return 1e-6 * std::fabs(y[i]) + 2e-5 * std::fabs(gated[i]) + 1e-7;
    }));
  }
}

TEST(CudaOps, SiluMulToBf16) {
  auto rng = TestRng();
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{5, 768}, {1030, 1408}, {3, 7}, {600000, 4}}) {
    const Floats gu = Normal(rows * 2 * n, rng, 3.0f);
    Floats want(rows * n);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) {  // the CPU formula (kernels::SiluMul)
        const float g = gu[r * 2 * n + i], u = gu[r * 2 * n + n + i];
        want[r * n + i] = g / (1.0f + std::exp(-g)) * u;
      }
    auto dgu = Dev<float>(gu);
    auto h = Out<bf16>(rows * n);
    ASSERT_OK(SiluMulToBf16(dgu.get(), rows, n, h.get(), g_stream));
    // bf16 output: half an ulp, + 2e-5 rel for expf (or __expf: ~20 ulp at |g| ≤ 15) and the division.
    EXPECT_TRUE(Close(Dims("SiluMulToBf16", {rows, n}), Get(h), want, Bf16Tol(want, 2e-5, 1e-6)));
  }
}

TEST(CudaOps, ToBf16) {
  auto rng = TestRng();
  Floats x = Normal(100003, rng);  // odd count: a vectorised kernel's tail
  for (float& v : x) v *= std::pow(10.0f, std::uniform_real_distribution<float>(-3.0f, 3.0f)(rng));
  // 1 + 2^-8 rounds to even (down), 1 + 3·2^-8 rounds to even (up).
  const float tie_down = std::bit_cast<float>(0x3f808000u), tie_up = std::bit_cast<float>(0x3f818000u);
  // Specials (3.39e38 rounds to bf16's largest finite value, 3.4e38 overflows to +inf); subnormals
  // are left out, as a flush-to-zero build may legitimately flush them.
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, tie_down, tie_up, -tie_up, 65504.0f, 3.39e38f,
                            3.4e38f, 1e-20f};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  auto dx = Dev<float>(x);
  auto y = Out<bf16>(x.size());
  ASSERT_OK(ToBf16(dx.get(), static_cast<int64_t>(x.size()), y.get(), g_stream));
  // Exact bits: round-to-nearest-even is fully specified (common/dtype.h F32ToBf16).
  EXPECT_TRUE(Equal("ToBf16 bits", GetBits(y), ToBits(x)));
}

// --- Attention ------------------------------------------------------------------------------------
struct AttnSeq { int length, queries; };  // the last `queries` positions are this step's tokens
struct AttnCase {
  std::string name;
  int heads, kv_heads, head_dim, block_size, window;
  std::vector<AttnSeq> seqs;
  int broken_seq = -1;  // ≥ 0: this sequence's first table entry is -1 (no block), so its outputs are NaN
};

// Writes each sequence's cached prefix (one WriteKv), then the step's tokens (a second WriteKv), into
// blocks drawn at random from a pool (non-contiguous tables); then attends for every query token.
void CheckAttention(const AttnCase& c, std::mt19937_64& rng) {
  SCOPED_TRACE(c.name);
  const int bs = c.block_size, num_seqs = static_cast<int>(c.seqs.size());
  const int64_t kv_w = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int max_blocks = 0, used_blocks = 0;
  for (const auto& s : c.seqs) max_blocks = std::max(max_blocks, (s.length + bs - 1) / bs);
  for (const auto& s : c.seqs) used_blocks += (s.length + bs - 1) / bs;
  const int num_blocks = used_blocks + 5;  // spare blocks stay poisoned: nobody may read them
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  // Table padding is -1, as the engine pads (kernels/cuda/cuda_kernels.h): never read for a valid
  // position. The spare blocks stay NaN-filled, so a read of any block not in a table fails too.
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, -1);
  for (int s = 0, next = 0; s < num_seqs; ++s)
    for (int b = 0; b < (c.seqs[s].length + bs - 1) / bs; ++b) tables[s * max_blocks + b] = ids[next++];

  // Tokens of the two WriteKv calls and the queries (the step's tokens, sequence by sequence).
  std::vector<int64_t> prefix_slots, step_slots;
  std::vector<int32_t> positions, token_seq;
  for (int s = 0; s < num_seqs; ++s) {
    const int first_query = c.seqs[s].length - c.seqs[s].queries;
    for (int p = 0; p < c.seqs[s].length; ++p) {
      const int64_t slot = static_cast<int64_t>(tables[s * max_blocks + p / bs]) * bs + p % bs;
      (p < first_query ? prefix_slots : step_slots).push_back(slot);
      if (p >= first_query) positions.push_back(p), token_seq.push_back(s);
    }
  }
  const int64_t m = static_cast<int64_t>(positions.size());
  const int max_positions = *std::max_element(positions.begin(), positions.end()) + 1;

  // The GPU cache is bf16 and starts as NaN: real cache memory holds whatever it held before (vLLM's
  // paged attention zeroes masked V values for exactly this reason), so masked or foreign slots must
  // contribute nothing, not 0 × NaN. The CPU cache holds the same bf16 values widened.
  const int64_t cache_elems = static_cast<int64_t>(num_blocks) * bs * kv_w;
  auto dk = Out<bf16>(cache_elems), dv = Out<bf16>(cache_elems);
  const PagedKvLayer layer{dk.get(), dv.get(), bs, c.kv_heads, c.head_dim};
  Floats ck(cache_elems, NAN), cv(cache_elems, NAN);
  const kernels::PagedKvLayer cpu_layer{ck.data(), cv.data(), bs, c.kv_heads, c.head_dim};
  Bits want_k(cache_elems, 0xFFFF), want_v(cache_elems, 0xFFFF);
  for (const std::vector<int64_t>* slots : {&prefix_slots, &step_slots}) {
    const int64_t n = static_cast<int64_t>(slots->size());
    if (n == 0) continue;
    const Floats k = Normal(n * kv_w, rng), v = Normal(n * kv_w, rng);
    auto dkin = Dev<float>(k), dvin = Dev<float>(v);
    auto dslots = Dev<int64_t>(*slots);
    ASSERT_OK(WriteKv(layer, dkin.get(), dvin.get(), n, dslots.get(), g_stream));
    const Bits kb = ToBits(k), vb = ToBits(v);
    kernels::WriteKv(cpu_layer, Widen(kb).data(), Widen(vb).data(), n, slots->data());
    for (int64_t t = 0; t < n; ++t) {
      std::copy_n(kb.begin() + t * kv_w, kv_w, want_k.begin() + (*slots)[t] * kv_w);
      std::copy_n(vb.begin() + t * kv_w, kv_w, want_v.begin() + (*slots)[t] * kv_w);
    }
  }
  // Exact: WriteKv rounds f32 to bf16 (RNE) into its slots and touches no other slot (still 0xFFFF).
  EXPECT_TRUE(Equal("WriteKv k cache", GetBits(dk), want_k));
  EXPECT_TRUE(Equal("WriteKv v cache", GetBits(dv), want_v));

  // q scaled ×2 so softmaxes are peaked: a mask, window or block-table mistake then moves some
  // outputs by ≫ the tolerance instead of averaging away over long sequences.
  const Floats q = Normal(m * c.heads * c.head_dim, rng, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<const int32_t*> cpu_tables(m);
  for (int64_t t = 0; t < m; ++t) cpu_tables[t] = tables.data() + token_seq[t] * max_blocks;
  Floats want(q.size());
  kernels::PagedAttention(q.data(), m, c.heads, positions.data(), cpu_tables.data(), cpu_layer, scale, c.window,
                          want.data(), Pool());
  // A broken table (after the CPU reference, which needs the real one): the broken sequence's
  // tokens must come out NaN in every element, whatever its window; the other tokens are unaffected.
  if (c.broken_seq >= 0) {
    tables[static_cast<size_t>(c.broken_seq) * max_blocks] = -1;
    for (int64_t t = 0; t < m; ++t)
      if (token_seq[t] == c.broken_seq)
        std::fill_n(want.begin() + t * c.heads * c.head_dim, c.heads * c.head_dim, NAN);
  }
  auto dq = Dev<float>(q);
  auto dpos = Dev<int32_t>(positions), dseq = Dev<int32_t>(token_seq), dtables = Dev<int32_t>(tables);
  auto out = Out<bf16>(q.size());
  ASSERT_OK(PagedAttention(dq.get(), m, c.heads, dpos.get(), dseq.get(), dtables.get(), max_blocks, max_positions,
                           layer, scale, c.window, out.get(), g_stream));
  Floats got = Get(out);
  if (c.broken_seq >= 0) {
    size_t not_nan = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (std::isnan(want[i])) not_nan += !std::isnan(got[i]), got[i] = want[i] = 0.0f;
    EXPECT_EQ(not_nan, 0u) << "outputs of the sequence with a -1 block that are not NaN";
  }
  // bf16 output (2^-8 rel) + 1e-2 abs (values ~N(0,1)): f32 reordering of the softmax (online vs two
  // pass) is ~1e-6, and a tensor-core kernel rounding q and P to bf16 stays ≲ 5e-3 here, while a
  // wrong mask, window, head mapping or block lookup moves some outputs by ≥ 5e-2.
  EXPECT_TRUE(Close("PagedAttention " + c.name, got, want, Bf16Tol(want, 0.0, 1e-2)));
}

TEST(CudaOps, PagedAttention) {
  auto rng = TestRng();
  // Decode, GQA 32/4, one query per sequence; lengths include 1, one block, one block + 1.
  AttnCase decode{"decode", 32, 4, 128, 16, 0, {{1, 1}, {16, 1}, {17, 1}}};
  for (int i = 0; i < 5; ++i) decode.seqs.push_back({Uniform(rng, 2, 1500), 1});
  std::shuffle(decode.seqs.begin(), decode.seqs.end(), rng);
  CheckAttention(decode, rng);
  // Prefill: 256 new tokens of one sequence after a cached prefix that ends mid-block.
  CheckAttention({"prefill chunk", 16, 4, 128, 16, 0, {{Uniform(rng, 300, 360) + 256, 256}}}, rng);
  // A first chunk (no prefix) at the largest head_dim, one kv head for four query heads.
  CheckAttention({"first chunk hd256", 4, 1, 256, 16, 0, {{70, 70}}}, rng);
  // Decode tokens and a prefill chunk in one batch, window 64 (shorter than most contexts here).
  CheckAttention({"mixed sliding window", 8, 2, 64, 32, 64,
                  {{Uniform(rng, 100, 400), 1}, {40, 1}, {1, 1}, {Uniform(rng, 120, 180) + 100, 100}}},
                 rng);
}

// The narrower load paths: head_dim % 8 ≠ 0 takes 4-byte loads (VEC = 2) and an odd head_dim single
// elements (VEC = 1, where a head wider than the block's 128 threads gives each thread two columns);
// odd block sizes; more (token, head) items than the 2^20 blocks the grid is capped at.
TEST(CudaOps, PagedAttentionNarrowLoadsAndLargeGrids) {
  auto rng = TestRng();
  CheckAttention({"hd36 (VEC 2)", 6, 3, 36, 16, 0, {{Uniform(rng, 20, 200), 1}, {50, 50}}}, rng);
  CheckAttention({"hd18 bs5 (VEC 2)", 4, 2, 18, 5, 0, {{33, 1}, {12, 12}, {1, 1}}}, rng);
  CheckAttention({"hd255 (VEC 1, two columns a thread)", 2, 1, 255, 8, 0, {{40, 40}, {Uniform(rng, 100, 300), 1}}},
                 rng);
  CheckAttention({"hd33 window 7 (VEC 1)", 3, 3, 33, 4, 7, {{30, 30}, {9, 1}}}, rng);
  if (Quick()) return;
  AttnCase many{"1.1M items (grid-stride)", 16, 1, 8, 1, 0, {}};
  many.seqs.assign(70000, AttnSeq{1, 1});
  CheckAttention(many, rng);
}

// A table entry of -1 inside a sequence's range (a broken table; the engine pads with -1 only past
// it) gives that sequence's tokens NaN outputs instead of a read outside the cache.
TEST(CudaOps, PagedAttentionNegativeBlockGivesNaN) {
  auto rng = TestRng();
  CheckAttention({"decode, broken table", 8, 2, 64, 16, 0, {{40, 1}, {70, 1}, {5, 1}}, 1}, rng);
  CheckAttention({"prefill, broken table", 8, 2, 64, 16, 0, {{20, 20}, {64, 64}}, 0}, rng);
}

// --- MoE routing, permutation, combine ------------------------------------------------------------
TEST(CudaOps, RouterTopK) {
  auto rng = TestRng();
  for (auto [E, k] : {std::pair<int, int>{8, 2}, {128, 8}})
    // 300,000 tokens of 8 experts need more than the 65,536 blocks the grid is capped at.
    for (int64_t m : {int64_t{5}, int64_t{600}, E == 8 ? int64_t{300000} : int64_t{0}})
      for (bool renorm : {false, true}) {
        if (m == 0) continue;
        SCOPED_TRACE(Dims(renorm ? "renormalised, m E k" : "m E k", {m, E, k}));
        Floats logits = Normal(m * E, rng, 2.0f);
        std::fill_n(logits.begin(), E, 0.5f);  // row 0: all tied → experts 0..k-1
        for (int i = 0; i < 3; ++i) logits[E + Uniform(rng, 0, E - 1)] = 9.0f;  // row 1: tied maxima
        std::vector<int32_t> want_ids(m * k);
        Floats want_w(m * k);
        kernels::RouterTopK(logits.data(), m, E, k, renorm, want_ids.data(), want_w.data());
        auto dl = Dev<float>(logits);
        auto ids = Out<int32_t>(m * k);
        auto w = Out<float>(m * k);
        ASSERT_OK(RouterTopK(dl.get(), m, E, k, renorm, ids.get(), w.get(), g_stream));
        const auto got_ids = Get(ids);
        const auto got_w = Get(w);
        int bad = 0;
        for (int64_t t = 0; t < m; ++t) {
          // The CPU router's probabilities (f32 softmax, max subtracted).
          const float* l = logits.data() + t * E;
          const float mx = *std::max_element(l, l + E);
          Floats p(E);
          float sum = 0.0f, chosen = 0.0f;
          for (int e = 0; e < E; ++e) sum += p[e] = std::exp(l[e] - mx);
          for (float& v : p) v /= sum;
          for (int j = 0; j < k; ++j) chosen += p[want_ids[t * k + j]];
          for (int j = 0; j < k; ++j) {
            const int a = got_ids[t * k + j], b = want_ids[t * k + j];
            bool ok = a >= 0 && a < E && std::count(&got_ids[t * k], &got_ids[t * k] + k, a) == 1;
            // Order: exact, except that two experts whose (distinct) logits give probabilities within
            // 1e-6 rel may swap — the GPU's expf rounds differently. Exact logit ties are never excused.
            if (ok && a != b) ok = l[a] != l[b] && std::fabs(p[a] - p[b]) <= 1e-6f * p[b];
            // Weights: f32 softmax with another exp and summation order, ≤ 2e-5 rel.
            const double want_weight = renorm ? p[ok ? a : b] / chosen : p[ok ? a : b];
            ok = ok && std::fabs(got_w[t * k + j] - want_weight) <= 2e-5 * want_weight + 1e-7;
            if (!ok && bad++ < 5)
              ADD_FAILURE() << "token " << t << " choice " << j << ": got expert " << a << " weight "
                            << got_w[t * k + j] << ", want expert " << b << " weight " << want_w[t * k + j];
          }
        }
      }
}

// k distinct experts per token in random order (as a router emits them), drawn from the first
// `used` experts only (so the rest get no rows).
std::vector<int32_t> RandomRouting(int64_t m, int k, int used, std::mt19937_64& rng) {
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
Plan CpuPlan(const std::vector<int32_t>& ids, int64_t m, int k, int E) {
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

// Decode-sized (Mixtral routing), prefill-sized (Qwen3 routing), a skewed one where only 6 of 64
// experts get rows, more experts than the router's 1024 (the plan has no such limit), and enough
// short rows that PermuteRows and UnpermuteCombine need more than the 65,536 blocks their grids are
// capped at (their grid-stride loops).
struct MoeCase { int64_t m; int k, E, used; int64_t d; };
const MoeCase kMoeCases[] = {{5, 2, 8, 8, 2048},
                             {1000, 8, 128, 128, 1024},
                             {64, 4, 64, 6, 3584},
                             {1000, 4, 2048, 2048, 64},
                             {300000, 2, 8, 8, 8}};

TEST(CudaOps, MoePermutePlanAndPermuteRows) {
  auto rng = TestRng();
  for (const MoeCase& c : kMoeCases) {
    if (Quick() && c.m * c.k > 100000) continue;
    SCOPED_TRACE(Dims("m k E d", {c.m, c.k, c.E, c.d}));
    const std::vector<int32_t> ids = RandomRouting(c.m, c.k, c.used, rng);
    const Plan want = CpuPlan(ids, c.m, c.k, c.E);
    auto dids = Dev<int32_t>(ids);
    auto offsets = Out<int64_t>(c.E + 1);
    auto row_of = Out<int32_t>(c.m * c.k), row_token = Out<int32_t>(c.m * c.k);
    // Scratch is poisoned too: the plan may not rely on it arriving zeroed.
    auto scratch = Out<uint8_t>(std::max<int64_t>(MoePlanScratchBytes(c.E), 1));
    ASSERT_OK(MoePermutePlan(dids.get(), c.m, c.k, c.E, offsets.get(), row_of.get(), row_token.get(), scratch.get(),
                             g_stream));
    // Exact: the plan is a permutation fully specified by the stable order.
    EXPECT_TRUE(Equal("expert_offsets", Get(offsets), want.offsets));
    EXPECT_TRUE(Equal("row_of", Get(row_of), want.row_of));
    EXPECT_TRUE(Equal("row_token", Get(row_token), want.row_token));

    const Bits x = NormalBf16(c.m * c.d, rng);
    auto dx = Dev<bf16>(x);
    auto drow_token = Dev<int32_t>(want.row_token);  // the CPU plan: PermuteRows is checked on its own
    const int64_t rows = c.m * c.k;
    auto out = Out<bf16>(rows * c.d);
    ASSERT_OK(PermuteRows(dx.get(), c.d, drow_token.get(), rows, out.get(), g_stream));
    Bits want_out(rows * c.d);
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(x.begin() + want.row_token[r] * c.d, c.d, want_out.begin() + r * c.d);
    EXPECT_TRUE(Equal("PermuteRows bits", GetBits(out), want_out));  // exact: a copy
  }
}

// No tokens (a rank of an expert-parallel group with nothing this step): every expert's range is
// empty, written even though nothing is launched.
TEST(CudaOps, MoePermutePlanWithNoTokens) {
  for (int E : {8, 2048}) {
    auto offsets = Out<int64_t>(E + 1);
    auto scratch = Out<uint8_t>(MoePlanScratchBytes(E));
    ASSERT_OK(MoePermutePlan(nullptr, 0, 2, E, offsets.get(), nullptr, nullptr, scratch.get(), g_stream));
    EXPECT_TRUE(Equal(Dims("expert_offsets, no tokens, E", {E}), Get(offsets), std::vector<int64_t>(E + 1, 0)));
  }
}

TEST(CudaOps, UnpermuteCombine) {
  auto rng = TestRng();
  for (const MoeCase& c : kMoeCases) {
    if (Quick() && c.m * c.k > 100000) continue;
    SCOPED_TRACE(Dims("m k E d", {c.m, c.k, c.E, c.d}));
    std::vector<int32_t> ids = RandomRouting(c.m, c.k, c.used, rng);
    Plan plan = CpuPlan(ids, c.m, c.k, c.E);
    Floats w(c.m * c.k);
    for (float& v : w) v = std::uniform_real_distribution<float>(0.01f, 1.0f)(rng);
    const Floats eo = Normal(c.m * c.k * c.d, rng), residual = Normal(c.m * c.d, rng);
    Floats want(residual.size()), mag(residual.size());
    for (int64_t t = 0; t < c.m; ++t) {
      std::vector<int> js(c.k);
      std::iota(js.begin(), js.end(), 0);
      std::sort(js.begin(), js.end(), [&](int a, int b) { return ids[t * c.k + a] < ids[t * c.k + b]; });
      for (int64_t i = 0; i < c.d; ++i) {
        float acc = 0.0f, abs_sum = std::fabs(residual[t * c.d + i]);
        for (int j : js) {  // ascending expert id, as the CPU WeightedSum
          const float term = eo[plan.row_of[t * c.k + j] * c.d + i] * w[t * c.k + j];
          acc += term, abs_sum += std::fabs(term);
        }
        want[t * c.d + i] = residual[t * c.d + i] + acc;
        mag[t * c.d + i] = abs_sum;
      }
    }
    auto deo = Dev<float>(eo), dres = Dev<float>(residual);
    auto run = [&] {
      auto di = Dev<int32_t>(ids), dr = Dev<int32_t>(plan.row_of);
      auto dw = Dev<float>(w);
      dres.Upload(residual, g_stream);
      const Status st = UnpermuteCombine(deo.get(), c.d, dr.get(), di.get(), dw.get(), c.m, c.k, dres.get(), g_stream);
      EXPECT_TRUE(st.ok()) << st.ToString();
      return Get(dres);
    };
    const Floats got = run();
    // k+1 f32 additions in another association (or fused): each rounding ≤ 2^-24 of the running sum
    // ≤ Σ|terms|, so ≤ 2·9·2^-24·Σ|terms| ≈ 1.1e-6·Σ|terms| between the two sides; 2e-6 of it.
    EXPECT_TRUE(Close("UnpermuteCombine", got, want, [&](size_t i) { return 2e-6 * mag[i] + 1e-7; }));
    // The sum runs in ascending expert id whatever order the router listed the choices in: the same
    // choices listed in another order must give the same bits.
    std::vector<int> perm(c.k);
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t t = 0; t < c.m; ++t) {
      std::shuffle(perm.begin(), perm.end(), rng);
      auto permute = [&](auto& v) {
        const auto row = std::vector(v.begin() + t * c.k, v.begin() + (t + 1) * c.k);
        for (int j = 0; j < c.k; ++j) v[t * c.k + j] = row[perm[j]];
      };
      permute(ids), permute(plan.row_of), permute(w);
    }
    EXPECT_TRUE(Close("UnpermuteCombine, choices reordered (bitwise)", run(), got, Exact()));
  }
}

// --- Sampling -------------------------------------------------------------------------------------
TEST(CudaOps, ArgMax) {
  auto rng = TestRng();
  for (int vocab : {32000, 151936})
    for (int64_t m : {1, 64}) {
      Floats l = Normal(m * vocab, rng, 3.0f);
      if (m > 4) {
        std::fill_n(l.begin(), vocab, 1.5f);  // row 0: all equal → 0
        for (int i = 0; i < 3; ++i) l[vocab + Uniform(rng, 0, vocab - 1)] = 50.0f;  // row 1: the lowest of 3
        l[3 * vocab - 1] = 60.0f;                                                   // row 2: the last index
        for (int i = 0; i < vocab; ++i)  // row 3: all negative, some -inf
          l[3 * vocab + i] = i % 7 == 0 ? -INFINITY : l[3 * vocab + i] - 100.0f;
      }
      std::vector<int32_t> want(m);
      for (int64_t r = 0; r < m; ++r) want[r] = kernels::ArgMax(l.data() + r * vocab, vocab);
      auto dl = Dev<float>(l);
      auto out = Out<int32_t>(m);
      ASSERT_OK(ArgMax(dl.get(), m, vocab, out.get(), g_stream));
      EXPECT_TRUE(Equal(Dims("ArgMax", {m, vocab}), Get(out), want));  // exact, ties → lowest index
    }
  // More rows than the 65,536 blocks the grid is capped at, with an odd vocabulary (scalar loads).
  const int64_t m = 70000;
  const int vocab = 13;
  const Floats l = Normal(m * vocab, rng);
  std::vector<int32_t> want(m);
  for (int64_t r = 0; r < m; ++r) want[r] = kernels::ArgMax(l.data() + r * vocab, vocab);
  auto dl = Dev<float>(l);
  auto out = Out<int32_t>(m);
  ASSERT_OK(ArgMax(dl.get(), m, vocab, out.get(), g_stream));
  EXPECT_TRUE(Equal(Dims("ArgMax", {m, vocab}), Get(out), want));
}

// The tokens SampleToken (kernels/cpu/sampling.cc) could return for this row: the top_k largest
// (any token tied with the k-th too: the tie-break is not part of the contract), then the top_p
// prefix by probability, with 1e-3 of slack on the cumulative sum because the GPU sums up to 150k
// small f32 probabilities in its own order.
std::vector<char> Allowed(const float* logits, int vocab, const SamplingRow& r) {
  std::vector<char> ok(vocab, 0);
  if (r.temperature <= 0.0f) return ok[kernels::ArgMax(logits, vocab)] = 1, ok;
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; });
  const int keep = r.top_k > 0 && r.top_k < vocab ? r.top_k : vocab;
  std::vector<double> p(keep);
  double sum = 0.0, cum = 0.0;
  const double temp = r.temperature;
  for (int i = 0; i < keep; ++i) sum += p[i] = std::exp((logits[idx[i]] - logits[idx[0]]) / temp);
  for (int i = 0; i < vocab; ++i) {
    const bool in_k = i < keep || logits[idx[i]] == logits[idx[keep - 1]];
    if (!in_k || (r.top_p < 1.0f && cum >= r.top_p + 1e-3)) break;
    ok[idx[i]] = 1;
    if (i < keep) cum += p[i] / sum;
  }
  return ok;
}

std::vector<int32_t> Sample(const Floats& logits, int vocab, const std::vector<SamplingRow>& rows) {
  auto dl = Dev<float>(logits);  // a fresh upload each time: SampleRows modifies the logits
  auto drows = Dev<SamplingRow>(rows);
  auto out = Out<int32_t>(rows.size());
  const Status st = SampleRows(dl.get(), static_cast<int64_t>(rows.size()), vocab, drows.get(), out.get(), g_stream);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return Get(out);
}

TEST(CudaOps, SampleRowsGreedyAndFilters) {
  auto rng = TestRng();
  const int vocab = 151936;
  // temperature, top_k, top_p: greedy (filters ignored), top-k only, top-p only, both, top_k = 1
  // (deterministic), unfiltered, top_k ≥ vocab (off).
  const SamplingRow kinds[] = {{0.0f, 0, 1.0f}, {0.0f, 40, 0.5f}, {0.8f, 50, 1.0f}, {1.0f, 0, 0.9f},
                               {0.6f, 20, 0.8f}, {1.3f, 1, 1.0f}, {1.0f, 0, 1.0f}, {0.7f, vocab + 5, 0.95f}};
  std::vector<SamplingRow> rows;
  for (int rep = 0; rep < 2; ++rep)
    for (SamplingRow r : kinds) r.seed = rng(), r.offset = rng() % 1000, rows.push_back(r);
  const Floats logits = Normal(rows.size() * vocab, rng, 2.0f);
  const std::vector<int32_t> got = Sample(logits, vocab, rows);
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* l = logits.data() + r * vocab;
    ASSERT_TRUE(got[r] >= 0 && got[r] < vocab) << "row " << r << ": token " << got[r];
    if (rows[r].temperature == 0.0f || rows[r].top_k == 1)
      EXPECT_EQ(got[r], kernels::ArgMax(l, vocab)) << "row " << r << " is deterministic: the argmax";
    else
      EXPECT_TRUE(Allowed(l, vocab, rows[r])[got[r]]) << "row " << r << ": token " << got[r]
                                                      << " is outside the top-k/top-p set";
  }
  // Same seed and offset → same token, and a row's draw does not depend on its batch (the same rows
  // in reverse order).
  EXPECT_EQ(Sample(logits, vocab, rows), got) << "same logits, seeds and offsets";
  std::vector<SamplingRow> rev(rows.rbegin(), rows.rend());
  Floats rev_logits(logits.size());
  for (size_t r = 0; r < rows.size(); ++r)
    std::copy_n(logits.begin() + r * vocab, vocab, rev_logits.begin() + (rows.size() - 1 - r) * vocab);
  std::vector<int32_t> got_rev = Sample(rev_logits, vocab, rev);
  std::reverse(got_rev.begin(), got_rev.end());
  EXPECT_EQ(got_rev, got) << "the same rows in another batch order";
}

// NaN logits (a diverged model): every row still gets a token inside the vocabulary, the same one for
// the same seed, and an all-NaN row gets token 0 (the CPU ArgMax's answer). Each row is drawn without
// filters over a vocabulary larger than the shared-memory cap (the in-order draw) and with top-k.
TEST(CudaOps, SampleRowsWithNaNLogits) {
  auto rng = TestRng();
  const int vocab = 32000;
  std::vector<SamplingRow> rows;
  for (SamplingRow r : {SamplingRow{1.0f, 0, 1.0f}, SamplingRow{0.8f, 40, 1.0f}, SamplingRow{1.0f, 0, 0.9f}})
    for (int kind = 0; kind < 3; ++kind) r.seed = rng(), rows.push_back(r);
  Floats logits = Normal(rows.size() * vocab, rng, 2.0f);
  for (size_t r = 0; r < rows.size(); ++r) {
    float* l = logits.data() + r * vocab;
    if (r % 3 == 0) std::fill_n(l, vocab, NAN);                                // all NaN
    if (r % 3 == 1) for (int i = 0; i < 50; ++i) l[Uniform(rng, 0, vocab - 1)] = NAN;  // some NaN
    if (r % 3 == 2) for (int i = 0; i < vocab; i += 2) l[i] = NAN;                     // every other
  }
  const std::vector<int32_t> got = Sample(logits, vocab, rows);
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_TRUE(got[r] >= 0 && got[r] < vocab) << "row " << r << ": token " << got[r];
    if (r % 3 == 0) {
      EXPECT_EQ(got[r], 0) << "row " << r << " is all NaN";
    }
  }
  EXPECT_EQ(Sample(logits, vocab, rows), got) << "same logits and seeds";
}

// Wilson–Hilferty upper bound of χ² with `dof` degrees of freedom at z = 6.5: P(exceed) < 1e-10 for
// dof 1..15 (checked against the exact tail), so an unbiased sampler never fails it.
double ChiSquareBound(int dof) {
  const double a = 2.0 / (9.0 * dof);
  return dof * std::pow(1.0 - a + 6.5 * std::sqrt(a), 3.0);
}

TEST(CudaOps, SampleRowsFrequencies) {
  auto rng = TestRng();
  const int vocab = 8, draws = 2000;
  // Designed logits (shuffled over the vocab each run): group B's top-p boundary (cum 0.782 → 0.908
  // at p = 0.9) is far from the slack, and every expected count is ≥ 14.
  Floats base = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -2.0f};
  std::shuffle(base.begin(), base.end(), rng);
  const SamplingRow groups[] = {{1.0f, 0, 1.0f}, {0.7f, 5, 0.9f}};
  std::vector<SamplingRow> rows;
  for (SamplingRow g : groups) {
    g.seed = rng();
    for (int i = 0; i < draws; ++i) g.offset = i, rows.push_back(g);  // one sequence's successive steps
  }
  Floats logits;
  for (size_t r = 0; r < rows.size(); ++r) logits.insert(logits.end(), base.begin(), base.end());
  const std::vector<int32_t> got = Sample(logits, vocab, rows);
  for (int gi = 0; gi < 2; ++gi) {
    SCOPED_TRACE(gi == 0 ? "T=1 unfiltered" : "T=0.7 top_k=5 top_p=0.9");
    // Expected probabilities: SampleToken's kept set, renormalised at this temperature.
    const std::vector<char> kept = Allowed(base.data(), vocab, groups[gi]);
    std::vector<double> p(vocab, 0.0);
    double sum = 0.0, chi2 = 0.0;
    for (int v = 0; v < vocab; ++v)
      if (kept[v]) sum += p[v] = std::exp(base[v] / static_cast<double>(groups[gi].temperature));
    std::vector<int> count(vocab, 0);
    for (int i = 0; i < draws; ++i) ++count.at(got[gi * draws + i]);  // out of range: throws, and fails
    int dof = -1;
    for (int v = 0; v < vocab; ++v) {
      const double e = draws * p[v] / sum;
      if (kept[v]) chi2 += (count[v] - e) * (count[v] - e) / e, ++dof;
      else EXPECT_EQ(count[v], 0) << "token " << v << " is outside the kept set";
    }
    std::printf("[   info   ] SampleRows group %d: chi2 %.2f, dof %d, bound %.1f\n", gi, chi2, dof,
                ChiSquareBound(dof));
    EXPECT_LT(chi2, ChiSquareBound(dof)) << "the frequencies do not follow softmax(logits / T) over the kept set";
  }
  // The Philox offset and the seed both matter: a flat row drawn at 64 offsets (or 64 seeds) is not
  // always the same token (probability 8^-63 for a correct sampler).
  std::vector<SamplingRow> by_offset(64, SamplingRow{1.0f, 0, 1.0f, rng(), 0}), by_seed = by_offset;
  for (int i = 0; i < 64; ++i) by_offset[i].offset = i, by_seed[i].seed = rng();
  const Floats flat(64 * vocab, 0.25f);
  for (const auto* rs : {&by_offset, &by_seed}) {
    const std::vector<int32_t> t = Sample(flat, vocab, *rs);
    EXPECT_NE(std::count(t.begin(), t.end(), t[0]), 64) << (rs == &by_offset ? "offset" : "seed") << " ignored";
  }
}

// --- GEMMs ----------------------------------------------------------------------------------------
// y = x · Wᵀ on the CPU from the same bf16 values, and Σ|x·w| per output (the scale of the f32
// accumulation error), both with kernels::MatMul.
void CpuGemm(const uint16_t* x, int64_t m, int64_t k, const Bits& w, int64_t n, float* y, float* mag) {
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
constexpr double kGemmRel = 3e-5;

TEST(CudaGemm, Linear) {
  auto rng = TestRng();
  auto created = Gemm::Create(g_stream);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Gemm* gemm = created->get();
  struct Shape { int64_t m, k, n; };
  for (Shape s : {Shape{1, 2048, 1024}, Shape{7, 1024, 1536}, Shape{300, 2048, 768}}) {
    const Bits x = NormalBf16(s.m * s.k, rng), w = NormalBf16(s.n * s.k, rng, 0.05f);
    Floats want(s.m * s.n), mag(s.m * s.n);
    CpuGemm(x.data(), s.m, s.k, w, s.n, want.data(), mag.data());
    auto dx = Dev<bf16>(x), dw = Dev<bf16>(w);
    auto y = Out<float>(s.m * s.n);  // poisoned: beta = 0 must not read y (cuBLAS: C need not be valid)
    ASSERT_OK(gemm->Linear(dx.get(), s.m, s.k, dw.get(), s.n, y.get()));
    EXPECT_TRUE(Close(Dims("Linear", {s.m, s.k, s.n}), Get(y), want,
                      [&](size_t i) { return kGemmRel * mag[i] + 1e-6; }));
    // beta = 1 accumulates into y (the residual stream); one more f32 add: 1e-6 of |y0|.
    const Floats y0 = Normal(s.m * s.n, rng);
    y.Upload(y0, g_stream);
    ASSERT_OK(gemm->Linear(dx.get(), s.m, s.k, dw.get(), s.n, y.get(), 1.0f));
    for (size_t i = 0; i < want.size(); ++i) want[i] += y0[i];
    EXPECT_TRUE(Close(Dims("Linear beta=1", {s.m, s.k, s.n}), Get(y), want,
                      [&](size_t i) { return kGemmRel * mag[i] + 1e-6 * std::fabs(y0[i]) + 1e-6; }));
  }
  DeviceBuffer<float> none(1);  // m = 0 is a no-op that succeeds
  ASSERT_OK(gemm->Linear(nullptr, 0, 64, nullptr, 64, none.get()));
}

TEST(CudaGemm, ExpertLinearBothModes) {
  auto rng = TestRng();
  auto created = Gemm::Create(g_stream);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Gemm* gemm = created->get();
  const int E = 8;
  const int64_t k = 1024, n = 768;
  std::vector<Bits> w(E);
  std::vector<DeviceBuffer<bf16>> dw;
  for (int e = 0; e < E; ++e) w[e] = NormalBf16(n * k, rng, 0.05f), dw.push_back(Dev<bf16>(w[e]));
  // Decode-sized (1–3 rows per expert) and prefill-sized (up to 150); the first, a middle and the
  // last expert get none (null weight pointers, as for experts that are not loaded).
  for (int max_rows : {3, 150}) {
    std::vector<int64_t> offsets(E + 1, 0);
    std::vector<const bf16*> ptrs(E, nullptr);
    for (int e = 0; e < E; ++e) {
      const bool empty = e == 0 || e == 5 || e == E - 1;
      offsets[e + 1] = offsets[e] + (empty ? 0 : Uniform(rng, 1, max_rows));
      if (!empty) ptrs[e] = dw[e].get();
    }
    const int64_t rows = offsets[E];
    const Bits x = NormalBf16(rows * k, rng);
    Floats want(rows * n), mag(rows * n);
    for (int e = 0; e < E; ++e) {
      const int64_t r0 = offsets[e], nr = offsets[e + 1] - r0;
      if (nr > 0) CpuGemm(x.data() + r0 * k, nr, k, w[e], n, want.data() + r0 * n, mag.data() + r0 * n);
    }
    auto dx = Dev<bf16>(x);
    const GroupedGemmSupport& grouped = gemm->grouped_support();
    for (ExpertGemmMode mode : {ExpertGemmMode::kGrouped, ExpertGemmMode::kPerExpert}) {
      const bool is_grouped = mode == ExpertGemmMode::kGrouped;
      const std::string name = is_grouped ? "ExpertLinear grouped" : "ExpertLinear per-expert";
      // f32 output (the engine's), then bf16 output (the grouped API's documented combination).
      for (bool bf16_out : {false, true}) {
        const std::string what = Dims((name + (bf16_out ? " bf16 out" : "")).c_str(), {rows, k, n});
        if (is_grouped && !(bf16_out ? grouped.bf16_out : grouped.f32_out)) {
          // A refusal the probe saw must be reported as Unimplemented, never as a wrong result.
          auto y = Out<float>(rows * n);
          const Status st = gemm->ExpertLinear(dx.get(), offsets, ptrs.data(), n, k, y.get(), mode);
          if (!bf16_out) {
            EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.ToString();
          }
          std::printf("[  SKIPPED ] %s: cuBLAS refused it when Gemm::Create probed (%s)\n", what.c_str(),
                      grouped.why_not.c_str());
          continue;
        }
        if (!bf16_out) {
          auto y = Out<float>(rows * n);
          ASSERT_OK(gemm->ExpertLinear(dx.get(), offsets, ptrs.data(), n, k, y.get(), mode));
          // Downloaded on the caller's stream only: the per-expert streams must have been joined to it.
          EXPECT_TRUE(Close(what, Get(y), want, [&](size_t i) { return kGemmRel * mag[i] + 1e-6; }));
        } else {
          auto y = Out<bf16>(rows * n);
          ASSERT_OK(gemm->ExpertLinear(dx.get(), offsets, ptrs.data(), n, k, y.get(), mode));
          // The f32 result rounded once to bf16: half an ulp of |y| on top of the f32 bound.
          EXPECT_TRUE(Close(what, Get(y), want,
                            [&](size_t i) { return kGemmRel * mag[i] + std::ldexp(std::fabs(want[i]), -8) + 1e-6; }));
        }
      }
    }
  }
  const GroupedGemmSupport& g = gemm->grouped_support();
  std::printf("[   info   ] grouped GEMM: bf16→f32 %s, bf16→bf16 %s\n", g.f32_out ? "yes" : "no", g.bf16_out ? "yes" : "no");
}

}  // namespace
}  // namespace shoal::cuda

int main(int argc, char** argv) {
  std::string why;
  if (shoal::cuda::CudaDeviceCount(&why) == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  const char* env = std::getenv("SHOAL_GPU_TEST_SEED");
  std::random_device rd;
  const unsigned long long seed = env && *env ? std::strtoull(env, nullptr, 0) : (uint64_t{rd()} << 32) ^ rd();
  shoal::cuda::g_seed = seed;
  std::printf("cuda_ops_test seed %llu (replay with SHOAL_GPU_TEST_SEED=%llu)\n", seed, seed);
  cudaDeviceProp prop{};
  SHOAL_GPU_CHECK(cudaSetDevice(0));
  SHOAL_GPU_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  std::fflush(stdout);
  // Non-blocking: no implicit sync with the legacy stream; only what the launchers order here counts.
  SHOAL_GPU_CHECK(cudaStreamCreateWithFlags(&shoal::cuda::g_stream, cudaStreamNonBlocking));
  const int rc = RUN_ALL_TESTS();
  SHOAL_GPU_CHECK(cudaStreamDestroy(shoal::cuda::g_stream));
  return rc;
}
