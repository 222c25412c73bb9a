// The load generator's arithmetic and workloads (loadgen/): vLLM's metric definitions, percentiles
// as numpy computes them, goodput under SLOs, random and ShareGPT workloads, the sweep picture.
#include <gtest/gtest.h>

#include <cmath>

#include "loadgen/metrics.h"
#include "loadgen/runner.h"

namespace shoal::loadgen {
namespace {

RequestOutcome Ok(double ttft, double e2e, int64_t out, std::vector<double> itl = {}) {
  RequestOutcome o;
  o.ok = true;
  o.ttft = ttft;
  o.e2e = e2e;
  o.output_tokens = out;
  o.prompt_tokens = 10;
  o.itl = std::move(itl);
  return o;
}

TEST(Loadgen, MetricsFollowVllmDefinitions) {
  std::vector<RequestOutcome> v = {Ok(0.1, 1.1, 11, {0.1, 0.1}), Ok(0.2, 2.2, 21), Ok(0.3, 0.3, 1)};
  RequestOutcome bad;
  bad.error = "HTTP 503";
  v.push_back(bad);
  const Summary s = Summarize(v, 2.0, Slo{});
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, (11 + 21 + 1) / 2.0);
  EXPECT_DOUBLE_EQ(s.input_throughput, 30 / 2.0);
  // TPOT = (E2E - TTFT) / (out - 1): 100 ms for both requests with more than one token.
  EXPECT_NEAR(s.tpot_ms.mean, 100.0, 1e-9);
  EXPECT_NEAR(s.ttft_ms.mean, 200.0, 1e-9);
  EXPECT_NEAR(s.ttft_ms.median, 200.0, 1e-9);
  // numpy.percentile([100, 200, 300], 90) == 280 (linear interpolation).
  EXPECT_NEAR(s.ttft_ms.p90, 280.0, 1e-9);
  EXPECT_NEAR(s.ttft_ms.p99, 298.0, 1e-9);
  EXPECT_NEAR(s.itl_ms.mean, 100.0, 1e-9);
}

TEST(Loadgen, GoodputCountsRequestsMeetingEverySlo) {
  std::vector<RequestOutcome> v = {Ok(0.05, 1.05, 11), Ok(0.5, 1.5, 11), Ok(0.05, 3.05, 11)};
  Slo slo;
  slo.ttft_ms = 100;
  slo.tpot_ms = 150;  // TPOTs: 100, 100, 300 ms
  const Summary s = Summarize(v, 1.0, slo);
  EXPECT_DOUBLE_EQ(s.goodput, 1.0);
  EXPECT_DOUBLE_EQ(s.request_throughput, 3.0);
  const auto j = ToJson(s);
  EXPECT_EQ(j["completed"], 3);
  EXPECT_TRUE(j["ttft_ms"].contains("p99"));
  EXPECT_NE(FormatSummary(s).find("Goodput (req/s):"), std::string::npos);
}

TEST(Loadgen, RandomWorkloadStaysInItsRanges) {
  const auto w = RandomWorkload(200, 100, 50, 0.5, 320, 32, 7);
  ASSERT_EQ(w.size(), 200u);
  for (const auto& r : w) {
    EXPECT_GE(r.prompt_ids.size(), 50u);
    EXPECT_LE(r.prompt_ids.size(), 150u);
    EXPECT_GE(r.output_len, 25);
    EXPECT_LE(r.output_len, 75);
    for (int32_t t : r.prompt_ids) {
      EXPECT_GE(t, 32);
      EXPECT_LT(t, 320);
    }
  }
  EXPECT_EQ(RandomWorkload(5, 10, 10, 0, 320, 0, 7)[3].prompt_ids, RandomWorkload(5, 10, 10, 0, 320, 0, 7)[3].prompt_ids);
}

TEST(Loadgen, ShareGptWorkload) {
  const std::string path = std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/loadgen/sharegpt-sample.json";
  auto w = ShareGptWorkload(path, 10, 1, 2048);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->size(), 10u);
  for (const auto& r : *w) {
    EXPECT_FALSE(r.prompt_text.empty());
    EXPECT_TRUE(r.prompt_ids.empty());
    EXPECT_GE(r.output_len, 4);
  }
  auto all = ShareGptWorkload(path, 1000, 1, 2048);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 24u);  // the conversation without a reply is left out
  EXPECT_EQ(ShareGptWorkload("/nonexistent.json", 1, 1, 2048).status().code(), StatusCode::kNotFound);
}

TEST(Loadgen, SweepPictureIsWellFormed) {
  std::vector<Summary> r(3);
  for (int i = 0; i < 3; ++i) {
    r[i].ttft_ms.median = 10 * (i + 1);
    r[i].ttft_ms.p99 = 40 * (i + 1);
    r[i].tpot_ms.median = 5;
    r[i].tpot_ms.p99 = 9;
    r[i].request_throughput = i + 1;
    r[i].goodput = 0.5 * (i + 1);
  }
  Slo slo;
  slo.ttft_ms = 50;
  const std::string svg = SweepSvg({1, 2, 4}, r, slo);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("goodput"), std::string::npos);
  EXPECT_NE(svg.find("SLO 50 ms"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

}  // namespace
}  // namespace shoal::loadgen
