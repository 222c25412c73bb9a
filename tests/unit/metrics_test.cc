// The Prometheus registry: text format 0.0.4 checked line by line, series identity, removal,
// registration errors, and concurrent updates.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/metrics.h"

namespace shoal {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "exposition must end with a newline";
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Metrics, EmptyRegistryRendersNothing) {
  Metrics m;
  EXPECT_EQ(m.Render(), "");
  EXPECT_TRUE(m.status().ok());
}

TEST(Metrics, CounterAndGaugeFormat) {
  Metrics m;
  m.counter("shoal_prompt_tokens_total", "Number of prefill tokens processed.").Inc(5);
  m.counter("shoal_prompt_tokens_total", "ignored second help").Inc(2.5);
  Gauge& running = m.gauge("shoal_num_requests_running", "Requests on workers.", {{"model", "m"}});
  running.Set(3);
  running.Inc();
  running.Dec(2);
  m.counter("shoal_request_success_total", "Finished requests.", {{"finished_reason", "stop"}, {"model", "m"}}).Inc();
  // Same labels in another order: the same series.
  m.counter("shoal_request_success_total", "", {{"model", "m"}, {"finished_reason", "stop"}}).Inc();
  m.counter("shoal_request_success_total", "", {{"finished_reason", "length"}, {"model", "m"}});
  EXPECT_EQ(Lines(m.Render()), (std::vector<std::string>{
                                   "# HELP shoal_num_requests_running Requests on workers.",
                                   "# TYPE shoal_num_requests_running gauge",
                                   "shoal_num_requests_running{model=\"m\"} 2",
                                   "# HELP shoal_prompt_tokens_total Number of prefill tokens processed.",
                                   "# TYPE shoal_prompt_tokens_total counter",
                                   "shoal_prompt_tokens_total 7.5",
                                   "# HELP shoal_request_success_total Finished requests.",
                                   "# TYPE shoal_request_success_total counter",
                                   "shoal_request_success_total{finished_reason=\"stop\",model=\"m\"} 2",
                                   "shoal_request_success_total{finished_reason=\"length\",model=\"m\"} 0",
                               }));
  EXPECT_TRUE(m.status().ok()) << m.status().ToString();
}

TEST(Metrics, CounterIgnoresNegativeAndNaN) {
  Metrics m;
  Counter& c = m.counter("c_total", "h");
  c.Inc(-1);
  c.Inc(std::nan(""));
  c.Inc(0.5);
  EXPECT_EQ(c.value(), 0.5);
}

TEST(Metrics, Escaping) {
  Metrics m;
  m.gauge("g", "line one\nback\\slash \"quotes\" stay", {{"path", "a\\b \"q\"\nz"}}).Set(-1.25);
  EXPECT_EQ(Lines(m.Render()), (std::vector<std::string>{
                                   "# HELP g line one\\nback\\\\slash \"quotes\" stay",
                                   "# TYPE g gauge",
                                   "g{path=\"a\\\\b \\\"q\\\"\\nz\"} -1.25",
                               }));
}

// Label values come from outside: invalid UTF-8 (a stray byte, a truncated or overlong sequence, a
// surrogate) becomes U+FFFD so the exposition stays valid; valid multi-byte characters pass through.
TEST(Metrics, LabelValuesStayValidUtf8) {
  Metrics m;
  m.gauge("g", "h", {{"v", std::string("ok \xc3\xa9 \xff \xc3 \xe0\x80\x80 \xed\xa0\x80 \xf0\x9f\x98\x80")}}).Set(1);
  const auto lines = Lines(m.Render());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "g{v=\"ok \xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xf0\x9f\x98\x80\"} 1");
}

// Totals kept elsewhere (a worker's heartbeat) are set as they come; a smaller value is a reset.
TEST(Metrics, CounterSetTotal) {
  Metrics m;
  Counter& c = m.counter("steps_total", "h");
  c.SetTotal(10);
  EXPECT_EQ(c.value(), 10);
  c.SetTotal(3);  // the rank restarted
  EXPECT_EQ(c.value(), 3);
  c.SetTotal(-1);
  c.SetTotal(std::nan(""));
  EXPECT_EQ(c.value(), 3);
}

TEST(Metrics, SpecialValues) {
  Metrics m;
  m.gauge("a", "h").Set(std::numeric_limits<double>::infinity());
  m.gauge("b", "h").Set(-std::numeric_limits<double>::infinity());
  m.gauge("c", "h").Set(std::nan(""));
  m.gauge("d", "h").Set(1e21);
  m.gauge("e", "h").Set(0.1);
  auto lines = Lines(m.Render());
  ASSERT_EQ(lines.size(), 15u);
  EXPECT_EQ(lines[2], "a +Inf");
  EXPECT_EQ(lines[5], "b -Inf");
  EXPECT_EQ(lines[8], "c NaN");
  EXPECT_EQ(lines[11], "d 1e+21");
  EXPECT_EQ(lines[14], "e 0.1");
}

TEST(Metrics, HistogramFormat) {
  Metrics m;
  Histogram& h = m.histogram("shoal_request_ttft_seconds", "Time to first token.", {0.125, 0.5, 2.5},
                             {{"model", "m"}});
  h.Observe(0.0625);
  h.Observe(0.125);  // le is inclusive
  h.Observe(0.25);
  h.Observe(100);
  h.Observe(std::nan(""));  // ignored
  EXPECT_EQ(Lines(m.Render()), (std::vector<std::string>{
                                   "# HELP shoal_request_ttft_seconds Time to first token.",
                                   "# TYPE shoal_request_ttft_seconds histogram",
                                   "shoal_request_ttft_seconds_bucket{model=\"m\",le=\"0.125\"} 2",
                                   "shoal_request_ttft_seconds_bucket{model=\"m\",le=\"0.5\"} 3",
                                   "shoal_request_ttft_seconds_bucket{model=\"m\",le=\"2.5\"} 3",
                                   "shoal_request_ttft_seconds_bucket{model=\"m\",le=\"+Inf\"} 4",
                                   "shoal_request_ttft_seconds_sum{model=\"m\"} 100.4375",
                                   "shoal_request_ttft_seconds_count{model=\"m\"} 4",
                               }));
  // Without labels, and with an explicit +Inf (dropped, it is implicit).
  Metrics n;
  n.histogram("lat", "h", {1, std::numeric_limits<double>::infinity()}).Observe(2);
  EXPECT_EQ(Lines(n.Render()), (std::vector<std::string>{
                                   "# HELP lat h",
                                   "# TYPE lat histogram",
                                   "lat_bucket{le=\"1\"} 0",
                                   "lat_bucket{le=\"+Inf\"} 1",
                                   "lat_sum 2",
                                   "lat_count 1",
                               }));
  EXPECT_TRUE(n.status().ok());
}

// vLLM's layout: model_name on every series (after the series' own labels, before le), and a second
// name set rendered after the native one, with a label renamed.
TEST(Metrics, ConstantLabelsAndAliases) {
  Metrics m;
  m.SetConstantLabels({{"model_name", "m1"}});
  m.counter("shoal_requests_total", "Requests", {{"finish_reason", "stop"}}).Inc(3);
  m.histogram("shoal_lat", "Latency", {1}).Observe(0.5);
  m.AddAlias("shoal_requests_total", "vllm:request_success_total", {{"finish_reason", "finished_reason"}});
  m.AddAlias("shoal_lat", "vllm:lat");
  m.AddAlias("shoal_absent", "vllm:absent");  // nothing registered under it yet: not rendered
  EXPECT_EQ(Lines(m.Render()), (std::vector<std::string>{
                                   "# HELP shoal_lat Latency",
                                   "# TYPE shoal_lat histogram",
                                   "shoal_lat_bucket{model_name=\"m1\",le=\"1\"} 1",
                                   "shoal_lat_bucket{model_name=\"m1\",le=\"+Inf\"} 1",
                                   "shoal_lat_sum{model_name=\"m1\"} 0.5",
                                   "shoal_lat_count{model_name=\"m1\"} 1",
                                   "# HELP shoal_requests_total Requests",
                                   "# TYPE shoal_requests_total counter",
                                   "shoal_requests_total{finish_reason=\"stop\",model_name=\"m1\"} 3",
                                   "# HELP vllm:request_success_total Requests",
                                   "# TYPE vllm:request_success_total counter",
                                   "vllm:request_success_total{finished_reason=\"stop\",model_name=\"m1\"} 3",
                                   "# HELP vllm:lat Latency",
                                   "# TYPE vllm:lat histogram",
                                   "vllm:lat_bucket{model_name=\"m1\",le=\"1\"} 1",
                                   "vllm:lat_bucket{model_name=\"m1\",le=\"+Inf\"} 1",
                                   "vllm:lat_sum{model_name=\"m1\"} 0.5",
                                   "vllm:lat_count{model_name=\"m1\"} 1",
                               }));
  EXPECT_TRUE(m.status().ok());
  m.AddAlias("x", "bad name");
  m.SetConstantLabels({{"bad-label", "v"}});
  EXPECT_FALSE(m.status().ok());
}

// Totals kept elsewhere (a worker's lifetime histogram) replace the counts; a mismatched length is ignored.
TEST(Metrics, HistogramSetTotals) {
  Metrics m;
  Histogram& h = m.histogram("h", "h", {1, 10});
  h.SetTotals({2, 0, 1}, 25.5);
  h.SetTotals({9, 9}, 1);  // two counts for three buckets: ignored
  const Histogram::Snapshot s = h.snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 2, 3}));
  EXPECT_EQ(s.count, 3u);
  EXPECT_DOUBLE_EQ(s.sum, 25.5);
}

TEST(Metrics, ManyBuckets) {
  // vLLM's TTFT boundaries: each le label in shortest form, cumulative counts.
  const std::vector<double> ttft = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
                                    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
  Metrics m;
  Histogram& h = m.histogram("shoal_time_to_first_token_seconds", "h", ttft);
  h.Observe(0.003);
  h.Observe(3000);
  auto lines = Lines(m.Render());
  ASSERT_EQ(lines.size(), 2 + ttft.size() + 1 + 2);
  EXPECT_EQ(lines[2], "shoal_time_to_first_token_seconds_bucket{le=\"0.001\"} 0");
  EXPECT_EQ(lines[3], "shoal_time_to_first_token_seconds_bucket{le=\"0.005\"} 1");
  EXPECT_EQ(lines[2 + ttft.size() - 1], "shoal_time_to_first_token_seconds_bucket{le=\"2560\"} 1");
  EXPECT_EQ(lines[2 + ttft.size()], "shoal_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2");
  EXPECT_EQ(lines.back(), "shoal_time_to_first_token_seconds_count 2");
}

TEST(Metrics, RemoveSeries) {
  Metrics m;
  Gauge& w0 = m.gauge("shoal_worker_up", "h", {{"worker", "0"}});
  m.gauge("shoal_worker_up", "h", {{"worker", "1"}}).Set(1);
  w0.Set(1);
  EXPECT_TRUE(m.RemoveSeries("shoal_worker_up", {{"worker", "0"}}));
  EXPECT_FALSE(m.RemoveSeries("shoal_worker_up", {{"worker", "0"}}));
  EXPECT_FALSE(m.RemoveSeries("nope", {}));
  w0.Set(5);  // a stale reference stays valid, just unrendered
  EXPECT_EQ(Lines(m.Render()), (std::vector<std::string>{
                                   "# HELP shoal_worker_up h",
                                   "# TYPE shoal_worker_up gauge",
                                   "shoal_worker_up{worker=\"1\"} 1",
                               }));
  // Registered again: a fresh series from zero.
  EXPECT_EQ(m.gauge("shoal_worker_up", "h", {{"worker", "0"}}).value(), 0);
  EXPECT_NE(&m.gauge("shoal_worker_up", "h", {{"worker", "0"}}), &w0);
}

TEST(Metrics, RegistrationErrorsAreReportedNotFatal) {
  {
    Metrics m;
    m.counter("bad name", "h").Inc();
    EXPECT_FALSE(m.status().ok());
    EXPECT_NE(m.status().message().find("bad name"), std::string::npos);
    EXPECT_EQ(m.Render(), "");
  }
  {
    Metrics m;
    m.counter("x", "h").Inc();
    m.gauge("x", "h").Set(3);  // another type
    EXPECT_FALSE(m.status().ok());
    EXPECT_EQ(Lines(m.Render()).back(), "x 1");
  }
  {
    Metrics m;
    m.counter("x", "h", {{"a", "1"}});
    m.counter("x", "h", {{"b", "1"}});  // other label names
    EXPECT_FALSE(m.status().ok());
  }
  {
    Metrics m;
    m.histogram("x", "h", {1, 2});
    m.histogram("x", "h", {1, 3}, {});  // other buckets
    EXPECT_FALSE(m.status().ok());
  }
  for (const char* label : {"le", "__x", "9a", "a-b", ""}) {
    Metrics m;
    m.histogram("x", "h", {1}, {{label, "v"}}).Observe(1);
    EXPECT_FALSE(m.status().ok()) << label;
  }
  {
    Metrics m;
    m.histogram("x", "h", {2, 1});
    EXPECT_FALSE(m.status().ok());
  }
  {
    Metrics m;
    m.gauge("x", "h", {{"a", "1"}, {"a", "2"}});
    EXPECT_FALSE(m.status().ok());
  }
  Metrics ok;
  ok.counter("vllm:colon_is_allowed_total", "h");
  ok.gauge("_x9", "h", {{"_y9", ""}});
  EXPECT_TRUE(ok.status().ok()) << ok.status().ToString();
}

TEST(Metrics, ConcurrentUpdatesAndRenders) {
  Metrics m;
  constexpr int kThreads = 4, kIters = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kIters; ++i) {
        m.counter("c_total", "h").Inc();
        m.gauge("g", "h", {{"t", std::to_string(t)}}).Inc();
        m.histogram("h", "h", {0.5}).Observe(i % 2);
        if (i % 5000 == 0) (void)m.Render();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(m.counter("c_total", "h").value(), kThreads * kIters);
  auto s = m.histogram("h", "h", {0.5}).snapshot();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kIters));
  EXPECT_EQ(s.cumulative[0], static_cast<uint64_t>(kThreads * kIters / 2));
  EXPECT_EQ(s.sum, kThreads * kIters / 2);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(m.gauge("g", "h", {{"t", std::to_string(t)}}).value(), kIters);
  EXPECT_TRUE(m.status().ok());
}

}  // namespace
}  // namespace shoal
