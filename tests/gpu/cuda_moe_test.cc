// MoE routing, the permutation plan, the combine and the expert kernels with device offsets against
// the CPU backend (conventions: tests/gpu/op_test_util.h).
#include "tests/gpu/op_test_util.h"

namespace shoal::cuda::op_test {
namespace {

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

// RouteAndPlan equals RouterTopK followed by MoePermutePlan bit for bit (the same routing code, the
// same stable plan): decode sizes, up to its 512-pair limit, 1024 experts, tied and NaN logits, and no
// tokens at all.
TEST(CudaOps, RouteAndPlanEqualsTheTwoStepPath) {
  auto rng = TestRng();
  struct Case { int64_t m; int E, k; bool renorm; };
  for (Case c : {Case{1, 8, 2, false}, Case{5, 128, 8, true}, Case{16, 1024, 8, true}, Case{64, 64, 8, false},
                 Case{0, 32, 4, true}}) {
    SCOPED_TRACE(Dims("m E k", {c.m, c.E, c.k}));
    Floats logits = Normal(std::max<int64_t>(c.m, 1) * c.E, rng, 2.0f);
    if (c.m >= 3) {
      std::fill_n(logits.begin(), c.E, 0.25f);                               // all tied
      logits[c.E + Uniform(rng, 0, c.E - 1)] = NAN;                          // a NaN among values
      std::fill_n(logits.begin() + 2 * c.E, c.E, NAN);                       // all NaN
    }
    auto dl = Dev<float>(logits);
    const int64_t pairs = std::max<int64_t>(c.m * c.k, 1);
    auto ids_a = Out<int32_t>(pairs), ids_b = Out<int32_t>(pairs);
    auto w_a = Out<float>(pairs), w_b = Out<float>(pairs);
    auto off_a = Out<int64_t>(c.E + 1), off_b = Out<int64_t>(c.E + 1);
    auto row_of_a = Out<int32_t>(pairs), row_of_b = Out<int32_t>(pairs);
    auto tok_a = Out<int32_t>(pairs), tok_b = Out<int32_t>(pairs);
    auto scratch = Out<uint8_t>(MoePlanScratchBytes(c.E));
    ASSERT_OK(RouterTopK(dl.get(), c.m, c.E, c.k, c.renorm, ids_a.get(), w_a.get(), g_stream));
    ASSERT_OK(MoePermutePlan(ids_a.get(), c.m, c.k, c.E, off_a.get(), row_of_a.get(), tok_a.get(), scratch.get(),
                             g_stream));
    ASSERT_OK(RouteAndPlan(dl.get(), c.m, c.E, c.k, c.renorm, ids_b.get(), w_b.get(), off_b.get(), row_of_b.get(),
                           tok_b.get(), g_stream));
    EXPECT_TRUE(Equal("expert_offsets", Get(off_b), Get(off_a)));
    if (c.m == 0) continue;
    EXPECT_TRUE(Equal("ids", Get(ids_b), Get(ids_a)));
    const auto bits = [](const Floats& f) {  // bitwise, NaN included (an all-NaN row's weights are NaN)
      std::vector<uint32_t> b(f.size());
      std::transform(f.begin(), f.end(), b.begin(), [](float x) { return std::bit_cast<uint32_t>(x); });
      return b;
    };
    EXPECT_TRUE(Equal("weights (bits)", bits(Get(w_b)), bits(Get(w_a))));
    EXPECT_TRUE(Equal("row_of", Get(row_of_b), Get(row_of_a)));
    EXPECT_TRUE(Equal("row_token", Get(tok_b), Get(tok_a)));
  }
  // Past the one-block limit the call refuses rather than computing a partial plan.
  DeviceBuffer<float> l(1);
  EXPECT_EQ(RouteAndPlan(l.get(), 65, 64, 8, true, nullptr, nullptr, nullptr, nullptr, nullptr, g_stream).code(),
            StatusCode::kInvalidArgument);
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


// --- Expert GEMVs with device offsets ------------------------------------------------------------
// The device-offset expert kernels (MoeGateUpSilu, MoeDown, and their tensor-core variants) against the
// CPU on the plan's layout:
// decode shapes, experts with no rows (null weights), more rows per expert than one pass takes, and
// widths that leave the last block partly idle.
TEST(CudaOps, MoeGateUpSiluAndDown) {
  auto rng = TestRng();
  struct Case { int64_t m; int k, E, used; int64_t H, I; };
  for (Case c : {Case{1, 8, 32, 32, 2048, 1024}, Case{16, 8, 64, 12, 512, 256}, Case{5, 2, 8, 8, 24, 40},
                 Case{64, 4, 16, 16, 1024, 200}}) {
    SCOPED_TRACE(Dims("m k E H I", {c.m, c.k, c.E, c.H, c.I}));
    const std::vector<int32_t> ids = RandomRouting(c.m, c.k, c.used, rng);
    const Plan plan = CpuPlan(ids, c.m, c.k, c.E);
    const int64_t rows = c.m * c.k;
    const Bits x = NormalBf16(c.m * c.H, rng);
    std::vector<Bits> gu(c.E), dn(c.E);
    std::vector<DeviceBuffer<bf16>> dgu, ddn;
    std::vector<const bf16*> gu_ptr(c.E, nullptr), dn_ptr(c.E, nullptr);
    for (int e = 0; e < c.E; ++e) {
      gu[e] = NormalBf16(2 * c.I * c.H, rng, 0.05f), dn[e] = NormalBf16(c.H * c.I, rng, 0.05f);
      dgu.push_back(Dev<bf16>(gu[e])), ddn.push_back(Dev<bf16>(dn[e]));
      if (plan.offsets[e + 1] > plan.offsets[e]) gu_ptr[e] = dgu.back().get(), dn_ptr[e] = ddn.back().get();
    }
    // CPU: h = silu(x·Wg)·(x·Wu) per permuted row, from f32 GEMMs of the same bf16 values.
    Floats want_h(rows * c.I), tol_h(rows * c.I), want_y(rows * c.H), mag_y(rows * c.H);
    Bits h_bits(rows * c.I);
    Floats g(2 * c.I), gmag(2 * c.I);
    for (int e = 0; e < c.E; ++e) {
      for (int64_t r = plan.offsets[e]; r < plan.offsets[e + 1]; ++r) {
        CpuGemm(x.data() + plan.row_token[r] * c.H, 1, c.H, gu[e], 2 * c.I, g.data(), gmag.data());
        for (int64_t i = 0; i < c.I; ++i) {
          const float gate = g[i], up = g[c.I + i], silu = gate / (1.0f + std::exp(-gate));
          want_h[r * c.I + i] = silu * up;
          // The two dot products each within kGemmRel of their Σ|x·w| (summation order), carried
          // through silu(g)·u (|silu'| ≤ 1.1), then half an ulp of bf16 rounding.
          tol_h[r * c.I + i] = std::ldexp(std::fabs(silu * up), -8) +
                               kGemmRel * (1.1f * gmag[i] * std::fabs(up) + std::fabs(silu) * gmag[c.I + i]) + 1e-6;
        }
      }
    }
    h_bits = ToBits(want_h);  // MoeDown is checked on its own, from the CPU's rounded h
    for (int e = 0; e < c.E; ++e) {
      const int64_t r0 = plan.offsets[e], nr = plan.offsets[e + 1] - r0;
      if (nr > 0) CpuGemm(h_bits.data() + r0 * c.I, nr, c.I, dn[e], c.H, want_y.data() + r0 * c.H, mag_y.data() + r0 * c.H);
    }
    auto dx = Dev<bf16>(x);
    auto drow_token = Dev<int32_t>(plan.row_token);
    auto doff = Dev<int64_t>(plan.offsets);
    auto dgu_ptr = Dev<const bf16*>(gu_ptr), ddn_ptr = Dev<const bf16*>(dn_ptr);
    auto dh = Dev<bf16>(h_bits);
    // The CUDA-core kernels the engine runs, then the experimental tensor-core ones.
    for (const bool tc : {false, true}) {
      const std::string suffix = tc ? "Tc" : "";
      auto h = Out<bf16>(rows * c.I);
      ASSERT_OK(tc ? MoeGateUpSiluTc(dx.get(), c.H, drow_token.get(), doff.get(), c.E, dgu_ptr.get(), c.I, h.get(), g_stream)
                   : MoeGateUpSilu(dx.get(), c.H, drow_token.get(), doff.get(), c.E, dgu_ptr.get(), c.I, h.get(), g_stream));
      EXPECT_TRUE(Close("MoeGateUpSilu" + suffix, Get(h), want_h, [&](size_t i) { return tol_h[i]; }));
      auto y = Out<float>(rows * c.H);
      ASSERT_OK(tc ? MoeDownTc(dh.get(), c.I, doff.get(), c.E, ddn_ptr.get(), c.H, y.get(), g_stream)
                   : MoeDown(dh.get(), c.I, doff.get(), c.E, ddn_ptr.get(), c.H, y.get(), g_stream));
      EXPECT_TRUE(Close("MoeDown" + suffix, Get(y), want_y, [&](size_t i) { return kGemmRel * mag_y[i] + 1e-6; }));
    }
  }
}

// SkinnyLinear against the CPU: three outputs of one input in one launch (widths that are and are not
// multiples of the 16-column tile, one with a bias, one accumulating into its output), row counts
// below, at and above the 8 rows of one pass, and input widths that are not multiples of 32.

}  // namespace
}  // namespace shoal::cuda::op_test

int main(int argc, char** argv) { return shoal::cuda::op_test::RunOpTests(argc, argv, "cuda_moe_test"); }
