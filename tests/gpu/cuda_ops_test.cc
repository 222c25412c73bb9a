// The element-wise, normalisation, attention and sampling ops of the CUDA backend against the CPU
// backend (conventions: tests/gpu/op_test_util.h).
#include "tests/gpu/op_test_util.h"

namespace shoal::cuda::op_test {
namespace {

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
  // One pass, then the key ranges split across blocks (flash-decoding): 3 parts, and the most parts,
  // which leaves many of them empty on short sequences.
  for (int splits : {1, 3, kMaxAttentionSplits}) {
    if (splits > 1 && m * c.heads > 100000) continue;  // the grid-stride case: one pass is the point there
    auto out = Out<bf16>(q.size());
    auto scratch = Out<float>(std::max<int64_t>(PagedAttentionScratchFloats(m * c.heads, splits, c.head_dim), 1));
    ASSERT_OK(PagedAttention(dq.get(), m, c.heads, dpos.get(), dseq.get(), dtables.get(), max_blocks, max_positions,
                             layer, scale, c.window, out.get(), g_stream, splits, splits > 1 ? scratch.get() : nullptr));
    Floats got = Get(out), expected = want;
    if (c.broken_seq >= 0) {
      size_t not_nan = 0;
      for (size_t i = 0; i < got.size(); ++i)
        if (std::isnan(expected[i])) not_nan += !std::isnan(got[i]), got[i] = expected[i] = 0.0f;
      EXPECT_EQ(not_nan, 0u) << "outputs of the sequence with a -1 block that are not NaN (" << splits << " splits)";
    }
    // bf16 output (2^-8 rel) + 1e-2 abs (values ~N(0,1)): f32 reordering of the softmax (online vs two
    // pass, split partials) is ~1e-6, and a tensor-core kernel rounding q and P to bf16 stays ≲ 5e-3
    // here, while a wrong mask, window, head mapping or block lookup moves some outputs by ≥ 5e-2.
    EXPECT_TRUE(Close("PagedAttention " + c.name + (splits > 1 ? ", " + std::to_string(splits) + " splits" : ""),
                      got, expected, Bf16Tol(expected, 0.0, 1e-2)));
  }
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

// AttentionPrologue against the CPU's RmsNorm (per head), ApplyRope and WriteKv: with and without the
// q/k norm, a head_dim whose half is not a multiple of the warp, and padding rows (slot -1) that must
// leave the cache untouched.
TEST(CudaOps, AttentionPrologue) {
  auto rng = TestRng();
  struct Case { int64_t m; int heads, kv_heads, head_dim; bool norm; };
  for (Case c : {Case{5, 8, 2, 128, true}, Case{3, 4, 4, 36, false}, Case{300, 16, 4, 64, true}}) {
    SCOPED_TRACE(Dims("m heads kv hd", {c.m, c.heads, c.kv_heads, c.head_dim}));
    const int half = c.head_dim / 2;
    const int64_t kv_w = int64_t{c.kv_heads} * c.head_dim, slots_n = c.m + 7;
    const Floats q = Normal(c.m * c.heads * c.head_dim, rng), k = Normal(c.m * kv_w, rng), v = Normal(c.m * kv_w, rng);
    const Floats qn = Normal(c.head_dim, rng, 0.2f), kn = Normal(c.head_dim, rng, 0.2f);
    std::vector<int32_t> pos(c.m);
    for (auto& p : pos) p = Uniform(rng, 0, 30000);
    Floats inv_freq(half), cos(c.m * half), sin(c.m * half);
    for (int i = 0; i < half; ++i) inv_freq[i] = static_cast<float>(1.0 / std::pow(1e6, 2.0 * i / c.head_dim));
    kernels::RopeTable(pos.data(), c.m, inv_freq.data(), half, 1.0f, cos.data(), sin.data());
    std::vector<int64_t> slots(c.m);
    std::vector<int64_t> order(slots_n);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t t = 0; t < c.m; ++t) slots[t] = t % 4 == 3 ? -1 : order[t];  // every fourth row is padding
    // CPU: the three steps the kernel fuses.
    Floats want_q = q, want_k = k;
    const float eps = 1e-6f;
    if (c.norm) {
      kernels::RmsNorm(want_q.data(), c.m * c.heads, c.head_dim, qn.data(), eps, want_q.data());
      kernels::RmsNorm(want_k.data(), c.m * c.kv_heads, c.head_dim, kn.data(), eps, want_k.data());
    }
    kernels::ApplyRope(want_q.data(), c.m, c.heads, c.head_dim, cos.data(), sin.data());
    kernels::ApplyRope(want_k.data(), c.m, c.kv_heads, c.head_dim, cos.data(), sin.data());
    Floats want_kc(slots_n * kv_w, NAN), want_vc(slots_n * kv_w, NAN);
    for (int64_t t = 0; t < c.m; ++t) {
      if (slots[t] < 0) continue;
      for (int64_t i = 0; i < kv_w; ++i) {
        want_kc[slots[t] * kv_w + i] = want_k[t * kv_w + i];
        want_vc[slots[t] * kv_w + i] = Bf16ToF32(F32ToBf16(v[t * kv_w + i]));
      }
    }
    auto dq = Dev<float>(q), dk = Dev<float>(k), dv = Dev<float>(v), dqn = Dev<float>(qn), dkn = Dev<float>(kn);
    auto dcos = Dev<float>(cos), dsin = Dev<float>(sin);
    auto dslots = Dev<int64_t>(slots);
    auto kc = Out<bf16>(slots_n * kv_w), vc = Out<bf16>(slots_n * kv_w);
    const PagedKvLayer layer{kc.get(), vc.get(), 1, c.kv_heads, c.head_dim};
    ASSERT_OK(AttentionPrologue(dq.get(), dk.get(), dv.get(), c.m, c.heads, c.norm ? dqn.get() : nullptr,
                                c.norm ? dkn.get() : nullptr, eps, dcos.get(), dsin.get(), dslots.get(), layer, g_stream));
    // f32: the norm's sum of squares in another order (2e-5 rel, as RmsNormF32's test) carried through
    // the rotation (|cos| + |sin| ≤ 1.5 of the row's values).
    const auto row_tol = [&](const Floats& want, int64_t width) {
      return [&want, width](size_t i) {
        const size_t r = i / width * width;
        float mx = 0.0f;
        for (int64_t j = 0; j < width; ++j) mx = std::max(mx, std::fabs(want[r + j]));
        return 4e-5 * mx + 1e-6;
      };
    };
    EXPECT_TRUE(Close("AttentionPrologue q", Get(dq), want_q, row_tol(want_q, c.head_dim)));
    EXPECT_TRUE(Close("AttentionPrologue k", Get(dk), want_k, row_tol(want_k, c.head_dim)));
    // The cache: k rounded to bf16 (half an ulp more), v exact; untouched slots still NaN.
    Floats got_kc = Get(kc), got_vc = Get(vc);
    size_t written_nan = 0;
    for (size_t i = 0; i < got_kc.size(); ++i) {
      if (std::isnan(want_kc[i])) {
        written_nan += !std::isnan(got_kc[i]) || !std::isnan(got_vc[i]);
        got_kc[i] = want_kc[i] = got_vc[i] = want_vc[i] = 0.0f;
      }
    }
    EXPECT_EQ(written_nan, 0u) << "slots that no row (or only a padding row) owns were written";
    EXPECT_TRUE(Close("AttentionPrologue k cache", got_kc, want_kc, Bf16Tol(want_kc, 4e-5, 1e-6)));
    EXPECT_TRUE(Close("AttentionPrologue v cache", got_vc, want_vc, Exact()));
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
// small f32 probabilities in its own order. Greedy rows, and rows whose scaled maximum overflows,
// allow only the argmax; NaN logits count as -inf and are never allowed.
std::vector<char> Allowed(const float* raw, int vocab, const SamplingRow& r) {
  std::vector<char> ok(vocab, 0);
  const int32_t best = kernels::ArgMax(raw, vocab);
  if (!(r.temperature >= kGreedyBelowTemperature) || !std::isfinite(raw[best] / r.temperature))
    return ok[best] = 1, ok;
  Floats l(raw, raw + vocab);
  for (float& v : l)
    if (std::isnan(v)) v = -INFINITY;
  const float* logits = l.data();
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
    ok[idx[i]] = !std::isnan(raw[idx[i]]);
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

// NaN logits (a diverged model): every row still gets a token inside the vocabulary, never a NaN one
// (a positive NaN's bits rank above +inf), the same one for the same seed, and an all-NaN row gets
// token 0 (the CPU ArgMax's answer). Each row is drawn without filters over a vocabulary larger than
// the shared-memory cap (the in-order draw), with top-k (also above the count of real logits), with
// top-p, and greedily.
TEST(CudaOps, SampleRowsWithNaNLogits) {
  auto rng = TestRng();
  const int vocab = 32000, kinds = 4;
  std::vector<SamplingRow> rows;
  for (SamplingRow r : {SamplingRow{1.0f, 0, 1.0f}, SamplingRow{0.8f, 40, 1.0f}, SamplingRow{1.0f, 0, 0.9f},
                        SamplingRow{1.0f, 3000, 0.95f}, SamplingRow{0.0f, 0, 1.0f}, SamplingRow{1e-38f, 40, 1.0f}})
    for (int kind = 0; kind < kinds; ++kind) r.seed = rng(), rows.push_back(r);
  Floats logits = Normal(rows.size() * vocab, rng, 2.0f);
  const float neg_nan = std::copysign(NAN, -1.0f);
  for (size_t r = 0; r < rows.size(); ++r) {
    float* l = logits.data() + r * vocab;
    if (r % kinds == 0) std::fill_n(l, vocab, NAN);  // all NaN
    if (r % kinds == 1)                              // some NaN, either sign, one at index 0
      for (int i = 0; i < 50; ++i) l[i == 0 ? 0 : Uniform(rng, 0, vocab - 1)] = i % 2 ? neg_nan : NAN;
    if (r % kinds == 2) for (int i = 0; i < vocab; i += 2) l[i] = NAN;  // every other
    if (r % kinds == 3)  // 10 real logits: fewer than top_k, and the kept set is smaller than asked
      for (int i = 0; i < vocab; ++i) l[i] = i % (vocab / 10) == 7 ? l[i] : NAN;
  }
  const std::vector<int32_t> got = Sample(logits, vocab, rows);
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* l = logits.data() + r * vocab;
    ASSERT_TRUE(got[r] >= 0 && got[r] < vocab) << "row " << r << ": token " << got[r];
    if (r % kinds == 0) {
      EXPECT_EQ(got[r], 0) << "row " << r << " is all NaN";
      continue;
    }
    EXPECT_FALSE(std::isnan(l[got[r]])) << "row " << r << ": token " << got[r] << " has a NaN logit";
    EXPECT_TRUE(Allowed(l, vocab, rows[r])[got[r]]) << "row " << r << ": token " << got[r]
                                                    << " is outside the top-k/top-p set";
    if (!(rows[r].temperature >= kGreedyBelowTemperature)) {
      EXPECT_EQ(got[r], kernels::ArgMax(l, vocab)) << "row " << r << " is greedy";
    }
  }
  EXPECT_EQ(Sample(logits, vocab, rows), got) << "same logits and seeds";
}

// Temperatures below kGreedyBelowTemperature (down to the smallest denormal, and NaN) are greedy:
// 1e-38 used to overflow logit/T, and the draw then fell through to a least likely token. So are
// rows whose scaled maximum overflows (huge or infinite logits); all-equal rows at a tiny temperature
// give token 0. T = 2 still samples. Each over a vocabulary within the shared-memory cap and one
// beyond it, with and without filters.
TEST(CudaOps, SampleRowsExtremeTemperaturesAndLogits) {
  auto rng = TestRng();
  for (int vocab : {5, 32000}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    const std::pair<int, float> filters[] = {{0, 1.0f}, {40, 1.0f}, {0, 0.9f}, {3000, 0.95f}};
    std::vector<SamplingRow> rows;
    Floats logits;
    auto add = [&](const Floats& l, float t) {
      for (auto [k, p] : filters) {
        rows.push_back(SamplingRow{t, k, p, rng(), static_cast<uint64_t>(Uniform(rng, 0, 999))});
        logits.insert(logits.end(), l.begin(), l.end());
      }
    };
    const Floats normal = vocab == 5 ? Floats{0.1f, 2.0f, 1.9f, -1.0f, 0.5f} : Normal(vocab, rng, 2.0f);
    Floats huge = Normal(vocab, rng, 2.0f), inf = huge, equal(vocab, 1.5f);
    for (float& v : huge) v = v < 0.0f ? -1e30f : v;
    huge[Uniform(rng, 0, vocab - 1)] = 1e30f;         // mass 1 at any temperature: exp(−1e30) is 0
    inf[vocab - 1] = INFINITY, inf[vocab / 2] = INFINITY;  // the first +inf
    for (float t : {1e-45f, 1e-38f, 1e-20f, 1e-6f, NAN}) add(normal, t), add(equal, t);
    for (float t : {1e-38f, 1e-9f, kGreedyBelowTemperature, 1.0f, 2.0f}) add(huge, t), add(inf, t);
    Floats over = normal;  // 3e38 / 1e-5 overflows a float
    over[vocab / 3] = 3e38f;
    add(over, kGreedyBelowTemperature);
    const size_t deterministic = rows.size();
    for (int i = 0; i < 64; ++i) add(normal, 2.0f);
    const std::vector<int32_t> got = Sample(logits, vocab, rows);
    size_t not_argmax = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      const float* l = logits.data() + r * vocab;
      const int32_t want = kernels::ArgMax(l, vocab);
      ASSERT_TRUE(got[r] >= 0 && got[r] < vocab) << "row " << r << ": token " << got[r];
      if (r < deterministic) {
        EXPECT_EQ(got[r], want) << "row " << r << " (T " << rows[r].temperature << ", top_k " << rows[r].top_k
                                << ", top_p " << rows[r].top_p << ") is greedy";
      } else {
        EXPECT_TRUE(Allowed(l, vocab, rows[r])[got[r]]) << "row " << r << ": token " << got[r]
                                                        << " is outside the top-k/top-p set";
        not_argmax += got[r] != want;
      }
    }
    EXPECT_GT(not_argmax, 0u) << "T=2 always drew the argmax";
  }
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

}  // namespace
}  // namespace shoal::cuda::op_test

int main(int argc, char** argv) { return shoal::cuda::op_test::RunOpTests(argc, argv, "cuda_ops_test"); }
