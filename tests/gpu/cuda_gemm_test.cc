// The cuBLAS GEMMs (gemm.h) and the skinny tensor-core GEMM (SkinnyLinear) against the CPU backend
// (conventions: tests/gpu/op_test_util.h).
#include "tests/gpu/op_test_util.h"

namespace shoal::cuda::op_test {
namespace {

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


TEST(CudaOps, SkinnyLinear) {
  auto rng = TestRng();
  for (int64_t m : {1, 5, 8, 13}) {
    for (int64_t k : {24, 64, 2048}) {
      SCOPED_TRACE(Dims("m k", {m, k}));
      const int64_t widths[3] = {16, 40, k == 2048 ? 2048 : 7};
      const Bits x = NormalBf16(m * k, rng);
      std::vector<Bits> w(3);
      std::vector<DeviceBuffer<bf16>> dw;
      std::vector<Floats> want(3), mag(3), y0(3);
      std::vector<DeviceBuffer<float>> dy;
      const Floats bias = Normal(widths[1], rng);
      auto dbias = Dev<float>(bias);
      for (int i = 0; i < 3; ++i) {
        w[i] = NormalBf16(widths[i] * k, rng, 0.05f);
        dw.push_back(Dev<bf16>(w[i]));
        want[i].resize(m * widths[i]), mag[i].resize(m * widths[i]);
        CpuGemm(x.data(), m, k, w[i], widths[i], want[i].data(), mag[i].data());
        if (i == 1) for (int64_t r = 0; r < m; ++r) for (int64_t c = 0; c < widths[1]; ++c) want[1][r * widths[1] + c] += bias[c];
        y0[i] = i == 2 ? Normal(m * widths[i], rng) : Floats(m * widths[i], NAN);  // poisoned unless accumulated
        if (i == 2) for (size_t j = 0; j < want[2].size(); ++j) want[2][j] += y0[2][j];
        dy.push_back(Dev<float>(y0[i]));
      }
      auto dx = Dev<bf16>(x);
      const SkinnyOutput outs[3] = {{dw[0].get(), widths[0], dy[0].get()},
                                    {dw[1].get(), widths[1], dy[1].get(), dbias.get()},
                                    {dw[2].get(), widths[2], dy[2].get(), nullptr, true}};
      ASSERT_OK(SkinnyLinear(dx.get(), m, k, outs, g_stream));
      for (int i = 0; i < 3; ++i) {
        // The f32 GEMM bound (kGemmRel of Σ|x·w|), plus one rounding of the bias or accumulated value.
        EXPECT_TRUE(Close(Dims("SkinnyLinear output", {i, m, k, widths[i]}), Get(dy[i]), want[i], [&](size_t j) {
          return kGemmRel * mag[i][j] + 1e-6 * std::fabs(want[i][j]) + 1e-6;
        }));
      }
    }
  }
}

}  // namespace
}  // namespace shoal::cuda::op_test

int main(int argc, char** argv) { return shoal::cuda::op_test::RunOpTests(argc, argv, "cuda_gemm_test"); }
