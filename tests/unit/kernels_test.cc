// CPU kernels against straightforward double-precision references, per op and dtype.
#include <gtest/gtest.h>

#include <cstring>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/kernels.h"

namespace shoal::kernels {
namespace {

struct RandomMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> widened;  // the exact f32 values the kernel sees
  Matrix m;
};

RandomMatrix MakeMatrix(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  RandomMatrix r;
  r.bytes.resize(static_cast<size_t>(rows * cols) * DTypeSize(t));
  r.widened.resize(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = nd(rng);
    if (t == DType::kF32) {
      std::memcpy(r.bytes.data() + 4 * i, &v, 4);
      r.widened[i] = v;
    } else {
      const uint16_t h = t == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
      std::memcpy(r.bytes.data() + 2 * i, &h, 2);
      r.widened[i] = t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    }
  }
  r.m = Matrix{t, r.bytes.data(), rows, cols};
  return r;
}

std::vector<float> RandomVector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

class MatMulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulTest, MatchesDoubleReferenceAcrossShapes) {
  std::mt19937 rng(7);
  ThreadPool pool(3);
  for (int64_t m : {1, 2, 3, 5, 8, 16, 17}) {
    for (int64_t rows : {1, 3, 8, 33, 130}) {
      for (int64_t cols : {8, 13, 64, 100}) {
        RandomMatrix w = MakeMatrix(GetParam(), rows, cols, rng);
        std::vector<float> x = RandomVector(static_cast<size_t>(m * cols), rng);
        std::vector<float> y(static_cast<size_t>(m * rows), NAN), y_generic(y.size(), NAN);
        MatMul(x.data(), m, w.m, y.data(), pool);
        cpu::MatMulRowsGeneric(x.data(), m, w.m, 0, rows, y_generic.data());
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t n = 0; n < rows; ++n) {
            double ref = 0.0, mag = 0.0;
            for (int64_t k = 0; k < cols; ++k) {
              ref += static_cast<double>(x[i * cols + k]) * w.widened[n * cols + k];
              mag += std::fabs(static_cast<double>(x[i * cols + k]) * w.widened[n * cols + k]);
            }
            const double tol = 1e-6 * mag + 1e-6;  // f32 accumulation error bound, loosely
            ASSERT_NEAR(y[i * rows + n], ref, tol) << "m=" << m << " rows=" << rows << " cols=" << cols;
            ASSERT_NEAR(y_generic[i * rows + n], ref, tol) << "generic, m=" << m;
          }
        }
      }
    }
  }
}

// MatMulBatch gives each job exactly MatMul's output (bit for bit), whatever the mix of shapes, token
// counts (0 included) and thread counts — the expert and q/k/v paths rely on it.
TEST_P(MatMulTest, BatchEqualsOneMatMulPerJob) {
  std::mt19937 rng(13);
  struct Case { int64_t m, rows, cols; };
  const std::vector<Case> cases = {{1, 300, 64}, {3, 37, 64}, {0, 50, 64}, {5, 8, 100}, {1, 1, 13}, {17, 130, 64}};
  std::vector<RandomMatrix> ws;
  std::vector<std::vector<float>> xs;
  for (const Case& c : cases) {
    ws.push_back(MakeMatrix(GetParam(), c.rows, c.cols, rng));
    xs.push_back(RandomVector(static_cast<size_t>(std::max<int64_t>(c.m, 1) * c.cols), rng));
  }
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    std::vector<std::vector<float>> want(cases.size()), got(cases.size());
    std::vector<MatMulJob> jobs;
    for (size_t j = 0; j < cases.size(); ++j) {
      want[j].assign(static_cast<size_t>(cases[j].m * cases[j].rows), NAN);
      got[j].assign(want[j].size(), NAN);
      MatMul(xs[j].data(), cases[j].m, ws[j].m, want[j].data(), pool);
      jobs.push_back({xs[j].data(), cases[j].m, &ws[j].m, got[j].data()});
    }
    MatMulBatch(jobs, pool);
    for (size_t j = 0; j < cases.size(); ++j) {
      ASSERT_EQ(std::memcmp(got[j].data(), want[j].data(), got[j].size() * sizeof(float)), 0)
          << "job " << j << " with " << threads << " threads";
    }
  }
}

TEST_P(MatMulTest, ResultDoesNotDependOnThreadCountOrBatchRows) {
  std::mt19937 rng(11);
  RandomMatrix w = MakeMatrix(GetParam(), 300, 256, rng);
  std::vector<float> x = RandomVector(16 * 256, rng);
  ThreadPool one(1), three(3);
  std::vector<float> a(16 * 300), b(16 * 300), single(300);
  MatMul(x.data(), 16, w.m, a.data(), one);
  MatMul(x.data(), 16, w.m, b.data(), three);
  EXPECT_EQ(a, b);
  // Row 5 computed alone equals row 5 of the batch: batching never changes a sequence's numbers.
  MatMul(x.data() + 5 * 256, 1, w.m, single.data(), three);
  EXPECT_EQ(single, std::vector<float>(a.begin() + 5 * 300, a.begin() + 6 * 300));
}

INSTANTIATE_TEST_SUITE_P(DTypes, MatMulTest, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(DType, F16RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), h) << h;
  }
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);   // overflow → +inf
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  float halfway;  // 1 + 2^-8: exactly between two bf16 values, rounds to even (1.0)
  uint32_t bits = 0x3f808000u;
  std::memcpy(&halfway, &bits, 4);
  EXPECT_EQ(F32ToBf16(halfway), 0x3f80);
  bits = 0x3f818000u;  // between 0x3f81 and 0x3f82: rounds to even 0x3f82
  std::memcpy(&halfway, &bits, 4);
  EXPECT_EQ(F32ToBf16(halfway), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
}

// e4m3 "fn": bias 7, no infinities, 0x7f / 0xff NaN, largest 448, subnormals down to 2^-9.
TEST(DType, F8E4M3DecodesLikeTorch) {
  EXPECT_EQ(F8E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(F8E4M3ToF32(0xb8), -1.0f);
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(F8E4M3ToF32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(F8E4M3ToF32(0x00), 0.0f);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7f)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xff)));
}

// Block-scaled FP8 weights (blocks 3 × 4 over a 7 × 10 matrix: partial blocks at both edges, and a row
// slice starting mid-block) against the same product over the dequantised weights in double.
// Shapes: blocks narrower than the 8-wide vector loop (all tails), blocks of 16 over 40 columns (two
// vector chunks per block, a partial last block), and row blocks of 5 under every activation-row count
// the AVX2 kernel blocks differently (1..9, 33, 40: groups of weight rows that would straddle a row
// block, and more activation rows than one scaling pass takes).
TEST(MatMul, Fp8BlockScaledMatchesDequantisedWeights) {
  struct Shape { int64_t rows, cols, m, br, bc; };
  std::vector<Shape> shapes = {Shape{7, 10, 3, 3, 4}, Shape{9, 40, 6, 16, 16}};
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 33, 40}) shapes.push_back(Shape{23, 77, m, 5, 32});
  for (const Shape sh : shapes) {
    std::mt19937 rng(7);
    const int64_t rows = sh.rows, cols = sh.cols, m = sh.m, br = sh.br, bc = sh.bc;
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    std::vector<uint8_t> w(rows * cols);
    for (auto& v : w) {
      do v = static_cast<uint8_t>(rng()); while ((v & 0x7f) == 0x7f);  // no NaNs
    }
    std::vector<float> scales(sr * sc), x(m * cols);
    for (auto& v : scales) v = std::ldexp(1.0f, static_cast<int>(rng() % 7) - 3);
    for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
    Matrix mat{DType::kF8E4M3, w.data(), rows, cols, scales.data(), 0, sc, static_cast<int>(br), static_cast<int>(bc)};
    ThreadPool pool(2);
    for (int64_t r0 : {int64_t{0}, int64_t{2}}) {
      const Matrix view = mat.RowSlice(r0, rows - r0);
      std::vector<float> y(m * view.rows);
      MatMul(x.data(), m, view, y.data(), pool);
      std::vector<float> row(cols);
      for (int64_t r = 0; r < view.rows; ++r) {
        GatherRow(view, r, row.data());
        for (int64_t i = 0; i < m; ++i) {
          double want = 0;
          for (int64_t c = 0; c < cols; ++c) {
            const double wv = F8E4M3ToF32(w[(r0 + r) * cols + c]) * scales[((r0 + r) / br) * sc + c / bc];
            EXPECT_EQ(row[c], static_cast<float>(wv));
            want += x[i * cols + c] * wv;
          }
          EXPECT_NEAR(y[i * view.rows + r], want, 1e-4 * (1 + std::fabs(want)))
              << "m " << m << " slice " << r0 << " row " << r << " input " << i;
        }
      }
    }
  }
}

TEST(RmsNorm, MatchesFormula) {
  std::mt19937 rng(3);
  const int64_t m = 3, d = 37;
  auto x = RandomVector(m * d, rng), w = RandomVector(d, rng);
  std::vector<float> y(m * d);
  RmsNorm(x.data(), m, d, w.data(), 1e-5f, y.data());
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[i * d + j] * x[i * d + j];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int64_t j = 0; j < d; ++j) EXPECT_NEAR(y[i * d + j], w[j] * x[i * d + j] * inv, 1e-5);
  }
}

TEST(Rope, RotatesHalvesByPositionTimesFrequency) {
  const int heads = 2, dim = 8;
  std::vector<float> inv = {1.0f, 0.5f, 0.25f, 0.125f};
  std::mt19937 rng(5);
  auto x = RandomVector(2 * heads * dim, rng);
  auto y = x;
  const int32_t pos[2] = {0, 3};
  std::vector<float> cos(2 * dim / 2), sin(2 * dim / 2);
  RopeTable(pos, 2, inv.data(), dim / 2, 1.0f, cos.data(), sin.data());
  ApplyRope(y.data(), 2, heads, dim, cos.data(), sin.data());
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < dim; ++i) EXPECT_FLOAT_EQ(y[h * dim + i], x[h * dim + i]) << "position 0 is the identity";
  for (int h = 0; h < heads; ++h) {
    const float* a = x.data() + (heads + h) * dim;
    const float* b = y.data() + (heads + h) * dim;
    for (int i = 0; i < dim / 2; ++i) {
      const double th = 3.0 * inv[i];
      EXPECT_NEAR(b[i], a[i] * std::cos(th) - a[i + 4] * std::sin(th), 1e-5);
      EXPECT_NEAR(b[i + 4], a[i + 4] * std::cos(th) + a[i] * std::sin(th), 1e-5);
    }
  }
}

TEST(RouterTopK, SoftmaxTopKAndRenormalisation) {
  const float logits[2][4] = {{1.0f, 3.0f, 2.0f, 0.0f}, {0.5f, 0.5f, 0.5f, 0.1f}};
  int32_t ids[4];
  float w[4];
  RouterTopK(&logits[0][0], 2, 4, 2, /*renormalize=*/false, ids, w);
  double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + std::exp(0.0);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(w[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(w[1], std::exp(2.0) / z, 1e-6);
  EXPECT_EQ(ids[2], 0) << "ties go to the lower expert id";
  EXPECT_EQ(ids[3], 1);
  RouterTopK(&logits[0][0], 2, 4, 2, /*renormalize=*/true, ids, w);
  EXPECT_NEAR(w[0] + w[1], 1.0, 1e-6);
  EXPECT_NEAR(w[0], std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-6);
}

// Paged attention against dense causal attention on the same keys, with a shuffled block table, GQA
// and a sliding window.
TEST(PagedAttention, MatchesDenseAttention) {
  std::mt19937 rng(9);
  const int heads = 4, kv_heads = 2, d = 16, block = 4, len = 19, blocks = 8;
  const int64_t kvw = kv_heads * d;
  std::vector<float> kc(blocks * block * kvw, NAN), vc(blocks * block * kvw, NAN);
  PagedKvLayer layer{kc.data(), vc.data(), block, kv_heads, d};
  std::vector<int32_t> table = {6, 2, 7, 0, 4};  // 5 blocks cover 19 tokens
  auto K = RandomVector(len * kvw, rng), V = RandomVector(len * kvw, rng), Q = RandomVector(len * heads * d, rng);
  std::vector<int64_t> slots(len);
  std::vector<int32_t> pos(len);
  std::vector<const int32_t*> tables(len, table.data());
  for (int p = 0; p < len; ++p) {
    slots[p] = table[p / block] * block + p % block;
    pos[p] = p;
  }
  WriteKv(layer, K.data(), V.data(), len, slots.data());
  ThreadPool pool(2);
  for (int window : {0, 5}) {
    std::vector<float> out(len * heads * d);
    PagedAttention(Q.data(), len, heads, pos.data(), tables.data(), layer, 0.25f, window, out.data(), pool);
    for (int t = 0; t < len; ++t) {
      for (int h = 0; h < heads; ++h) {
        const int kvh = h / (heads / kv_heads);
        const int first = window ? std::max(0, t - window + 1) : 0;
        std::vector<double> s;
        double mx = -1e30, z = 0;
        for (int j = first; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += Q[(t * heads + h) * d + i] * K[j * kvw + kvh * d + i];
          s.push_back(dot * 0.25);
          mx = std::max(mx, s.back());
        }
        for (double& v : s) z += v = std::exp(v - mx);
        for (int i = 0; i < d; ++i) {
          double ref = 0;
          for (int j = first; j <= t; ++j) ref += s[j - first] / z * V[j * kvw + kvh * d + i];
          ASSERT_NEAR(out[(t * heads + h) * d + i], ref, 1e-5) << "t=" << t << " h=" << h << " window=" << window;
        }
      }
    }
  }
}

TEST(Sampling, GreedyTopKTopPAndSeeds) {
  std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f, 0.5f};
  std::mt19937_64 rng(1);
  auto draw = [&](SamplingParams p, std::mt19937_64& g) {
    auto l = logits;
    return SampleToken(l.data(), static_cast<int>(l.size()), p, g);
  };
  EXPECT_EQ(draw({0.0f, 0, 1.0f}, rng), 1) << "temperature 0 is greedy";
  for (int i = 0; i < 200; ++i) EXPECT_EQ(draw({1.5f, 1, 1.0f}, rng), 1) << "top-k 1 is greedy";
  for (int i = 0; i < 200; ++i) EXPECT_EQ(draw({1.0f, 0, 0.01f}, rng), 1) << "tiny top-p keeps only the best";
  for (int i = 0; i < 500; ++i) {
    const int t = draw({5.0f, 2, 1.0f}, rng);
    EXPECT_TRUE(t == 1 || t == 2) << "top-k 2 keeps tokens 1 and 2, got " << t;
  }
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(draw({1.0f, 0, 0.9f}, a), draw({1.0f, 0, 0.9f}, b)) << "same seed, same tokens";
}

TEST(Sampling, FollowsTheSoftmaxDistribution) {
  // p(token 1) = 3/4 at temperature 1 when logit1 - logit0 = ln 3.
  std::mt19937_64 rng(123);
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    float l[2] = {0.0f, std::log(3.0f)};
    ones += SampleToken(l, 2, {1.0f, 0, 1.0f}, rng) == 1;
  }
  EXPECT_NEAR(ones / static_cast<double>(n), 0.75, 0.015);
}

// Logprobs are the log-softmax of what the sampler draws from; where the sampler falls back to the
// argmax (a +inf logit, overflow at the temperature, no finite logit) the argmax has log-probability
// 0 and every other token -inf — never NaN, which the wire rejects as "not a log-probability".
TEST(Sampling, LogSoftmaxIsALogProbabilityForEveryRow) {
  const std::vector<float> plain = {0.0f, std::log(3.0f)};
  const LogSoftmax a(plain.data(), 2, 1.0f);
  EXPECT_NEAR(a.At(1), std::log(0.75), 1e-6);
  EXPECT_NEAR(a.At(0), std::log(0.25), 1e-6);
  const LogSoftmax hot(plain.data(), 2, 0.5f);  // T = 0.5 doubles the gap: 9:1
  EXPECT_NEAR(hot.At(1), std::log(0.9), 1e-6);
  const LogSoftmax greedy(plain.data(), 2, 0.0f);  // greedy reports the distribution at T = 1
  EXPECT_NEAR(greedy.At(1), std::log(0.75), 1e-6);

  struct Row { std::vector<float> logits; float temperature; int32_t argmax; };
  const std::vector<Row> degenerate = {
      {{1.0f, INFINITY, 2.0f}, 1.0f, 1},
      {{INFINITY, 0.0f, INFINITY}, 0.7f, 0},              // ties: the lowest index, as ArgMax
      {{-INFINITY, -INFINITY, -INFINITY}, 1.0f, 0},
      {{NAN, NAN, NAN}, 1.0f, 0},
      {{NAN, -INFINITY, NAN}, 1.0f, 0},                   // the sampler's sort: NaN is -inf, ties to 0
      {{NAN, -INFINITY, NAN}, 0.0f, 1},                   // greedy's ArgMax: the first non-NaN
      {{1.0f, 1e34f, 2e34f}, kGreedyBelowTemperature, 2},  // both overflow at T; the raw order decides
  };
  for (const Row& r : degenerate) {
    const LogSoftmax l(r.logits.data(), static_cast<int>(r.logits.size()), r.temperature);
    for (int32_t t = 0; t < static_cast<int32_t>(r.logits.size()); ++t) {
      if (t == r.argmax) {
        EXPECT_EQ(l.At(t), 0.0f) << "row " << &r - degenerate.data() << " token " << t;
      } else {
        EXPECT_EQ(l.At(t), -INFINITY) << "row " << &r - degenerate.data() << " token " << t;
      }
    }
    std::mt19937_64 rng(3);
    auto copy = r.logits;
    EXPECT_EQ(SampleToken(copy.data(), static_cast<int>(copy.size()), {r.temperature, 0, 1.0f}, rng), r.argmax)
        << "the sampler's pick is the token reported at log-probability 0";
  }
  const std::vector<float> with_nan = {NAN, 0.0f, 0.0f};
  const LogSoftmax n(with_nan.data(), 3, 1.0f);
  EXPECT_EQ(n.At(0), -INFINITY);
  EXPECT_NEAR(n.At(1), std::log(0.5), 1e-6);
}

int32_t Draw(std::vector<float> logits, SamplingParams p, std::mt19937_64& rng) {
  return SampleToken(logits.data(), static_cast<int>(logits.size()), p, rng);
}

// Below kGreedyBelowTemperature sampling is greedy: 1e-38 used to overflow logit/T, turn the softmax
// into NaN and return the least likely kept token. NaN temperatures are greedy too.
TEST(Sampling, TinyTemperaturesAreGreedy) {
  const std::vector<float> logits = {0.1f, 2.0f, 1.9f, -1.0f, 0.5f};
  std::mt19937_64 rng(7);
  for (float t : {1e-45f, 1e-38f, 1e-20f, 1e-6f, NAN})
    for (SamplingParams p : {SamplingParams{t, 0, 1.0f}, SamplingParams{t, 3, 1.0f}, SamplingParams{t, 0, 0.9f}})
      for (int i = 0; i < 100; ++i)
        ASSERT_EQ(Draw(logits, p, rng), 1) << "T=" << t << " top_k=" << p.top_k << " top_p=" << p.top_p;
  // A logit/T that overflows above the cutoff is greedy too (1e34 / 1e-5 > FLT_MAX).
  for (int i = 0; i < 100; ++i) ASSERT_EQ(Draw({1.0f, 1e34f, 0.0f}, {kGreedyBelowTemperature, 0, 1.0f}, rng), 1);
  // T = 2 still samples: 200 draws over these logits are not all the argmax.
  int not_argmax = 0;
  for (int i = 0; i < 200; ++i) {
    const int32_t tok = Draw(logits, {2.0f, 0, 1.0f}, rng);
    ASSERT_TRUE(tok >= 0 && tok < 5) << tok;
    not_argmax += tok != 1;
  }
  EXPECT_GT(not_argmax, 0) << "T=2 always drew the argmax";
}

TEST(Sampling, HugeInfiniteAndEqualLogits) {
  std::mt19937_64 rng(11);
  for (float t : {1e-38f, 1e-9f, 1e-5f, 1.0f, 2.0f})
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(Draw({1e30f, -1e30f, 0.0f}, {t, 0, 1.0f}, rng), 0) << "T=" << t;
      ASSERT_EQ(Draw({-1e30f, 3e38f, -3e38f}, {t, 0, 0.5f}, rng), 1) << "T=" << t;
      ASSERT_EQ(Draw({1.0f, INFINITY, 2.0f, INFINITY}, {t, 0, 1.0f}, rng), 1) << "T=" << t << ": the first +inf";
      ASSERT_EQ(Draw({-INFINITY, -INFINITY, 5.0f}, {t, 0, 1.0f}, rng), 2) << "T=" << t;
      ASSERT_EQ(Draw({-INFINITY, -INFINITY, -INFINITY}, {t, 2, 0.9f}, rng), 0) << "T=" << t << ": all -inf";
    }
  // All equal at a tiny temperature: greedy, ties → lowest index.
  for (float t : {1e-45f, 1e-38f, 1e-6f})
    for (float v : {0.0f, 3.5f, -7.0f, 1e30f}) ASSERT_EQ(Draw({v, v, v, v}, {t, 0, 1.0f}, rng), 0) << "T=" << t;
}

// NaN logits (a diverged model) are never drawn; an all-NaN row gives token 0, as ArgMax does.
TEST(Sampling, NaNLogitsAreNeverDrawn) {
  const std::vector<float> logits = {NAN, 0.5f, NAN, 0.4f, 0.3f, NAN, -0.2f};
  std::mt19937_64 rng(5);
  const SamplingParams kinds[] = {{1.0f, 0, 1.0f}, {2.0f, 0, 1.0f}, {1.0f, 2, 1.0f}, {1.0f, 6, 1.0f},
                                  {1.0f, 0, 0.9f}, {0.5f, 5, 0.95f}, {1e-38f, 0, 1.0f}, {0.0f, 0, 1.0f}};
  for (const SamplingParams& p : kinds) {
    std::vector<int> count(logits.size(), 0);
    for (int i = 0; i < 500; ++i) {
      const int32_t tok = Draw(logits, p, rng);
      ASSERT_TRUE(tok >= 0 && tok < static_cast<int32_t>(logits.size())) << tok;
      ++count[tok];
      ASSERT_FALSE(std::isnan(logits[tok])) << "T=" << p.temperature << " top_k=" << p.top_k << " top_p=" << p.top_p
                                            << ": drew NaN token " << tok;
    }
    if (p.temperature >= 1.0f && p.top_k != 2) {
      EXPECT_GT(count[6], 0) << "the real tokens are still sampled";
    }
  }
  for (const SamplingParams& p : kinds)
    for (int i = 0; i < 20; ++i) ASSERT_EQ(Draw({NAN, NAN, NAN}, p, rng), 0) << "all NaN, T=" << p.temperature;
  // The contract: NaNs are overwritten in place with -inf when sampling.
  std::vector<float> l = {NAN, 1.0f};
  SampleToken(l.data(), 2, {1.0f, 0, 1.0f}, rng);
  EXPECT_EQ(l[0], -INFINITY);
}

// min-p: after temperature, a token below min_p × the top token's probability is never drawn; the
// others keep their relative odds.
TEST(Sampling, MinPDropsTheUnlikely) {
  // p ∝ {4, 2, 1, 0.5} at T = 1: relative to the top, 1, 0.5, 0.25, 0.125.
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), std::log(1.0f), std::log(0.5f)};
  std::mt19937_64 rng(9);
  SamplingParams p{1.0f, 0, 1.0f};
  p.min_p = 0.3f;  // keeps tokens 0 and 1 only
  int count[4] = {0, 0, 0, 0};
  const int n = 12000;
  for (int i = 0; i < n; ++i) ++count[Draw(logits, p, rng)];
  EXPECT_EQ(count[2] + count[3], 0);
  EXPECT_NEAR(count[0] / static_cast<double>(n), 2.0 / 3.0, 0.02);
  // At T = 2 the relative probabilities are square roots: 1, 0.71, 0.5, 0.35 — min_p 0.4 keeps three.
  p.temperature = 2.0f;
  p.min_p = 0.4f;
  std::fill(count, count + 4, 0);
  for (int i = 0; i < 4000; ++i) ++count[Draw(logits, p, rng)];
  EXPECT_EQ(count[3], 0);
  EXPECT_GT(count[2], 0);
  // min_p 1 keeps only the top token (ties included: equal logits stay).
  p.min_p = 1.0f;
  for (int i = 0; i < 200; ++i) ASSERT_EQ(Draw(logits, p, rng), 0);
  // min_p with top-k and top-p: each takes a prefix of the sorted tokens.
  p = SamplingParams{1.0f, 3, 0.5f};
  p.min_p = 0.1f;
  for (int i = 0; i < 200; ++i) ASSERT_EQ(Draw(logits, p, rng), 0) << "top-p 0.5 keeps the top token (4/7.5)";
}

TEST(ArgMax, SkipsNaNTiesToLowestIndex) {
  auto argmax = [](std::vector<float> x) { return ArgMax(x.data(), static_cast<int>(x.size())); };
  EXPECT_EQ(argmax({NAN, 1.0f, 2.0f}), 2);
  EXPECT_EQ(argmax({1.0f, NAN, 2.0f, NAN}), 2);
  EXPECT_EQ(argmax({NAN, 3.0f, NAN, 3.0f}), 1);
  EXPECT_EQ(argmax({NAN, NAN, NAN}), 0);
  EXPECT_EQ(argmax({-INFINITY, NAN, -INFINITY}), 0);
  EXPECT_EQ(argmax({NAN, -INFINITY, -INFINITY}), 1);
  EXPECT_EQ(argmax({2.0f, 2.0f, 1.0f}), 0);
  EXPECT_EQ(argmax({1.0f, INFINITY, INFINITY}), 1);
}

}  // namespace
}  // namespace shoal::kernels
