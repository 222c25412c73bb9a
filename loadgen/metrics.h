// Serving metrics of a load-generator run, with vLLM's definitions (benchmarks/benchmark_serving.py)
// so numbers compare across servers:
//   TTFT  time from sending a request to its first generated text
//   TPOT  per request, (E2E − TTFT) / (output tokens − 1): the mean time per token after the first
//   ITL   every gap between consecutive streamed chunks of a request
//   E2E   time from sending a request to its last byte
//   goodput  completed requests per second that met every given SLO (TTFT, TPOT, E2E)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace shoal::loadgen {

struct RequestOutcome {
  bool ok = false;
  std::string error;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double start = 0;            // seconds since the run began
  double ttft = 0, e2e = 0;    // seconds
  std::vector<double> itl;     // seconds
};

struct Slo {
  double ttft_ms = 0, tpot_ms = 0, e2e_ms = 0;  // 0 = not set
};

struct Summary {
  int64_t completed = 0, failed = 0;
  double duration_s = 0;
  double request_throughput = 0, input_throughput = 0, output_throughput = 0;  // per second
  double goodput = 0;  // requests/s meeting every SLO
  struct Stat {
    double mean = 0, median = 0, p90 = 0, p99 = 0;
  };
  Stat ttft_ms, tpot_ms, itl_ms, e2e_ms;
};

Summary Summarize(const std::vector<RequestOutcome>& outcomes, double duration_s, const Slo& slo);
nlohmann::ordered_json ToJson(const Summary& s);
// A fixed-width table in the style of vLLM's benchmark output.
std::string FormatSummary(const Summary& s);

// An SVG line chart of a sweep: p50/p99 TTFT and TPOT, and goodput, against offered request rate.
std::string SweepSvg(const std::vector<double>& offered_rates, const std::vector<Summary>& results, const Slo& slo);

}  // namespace shoal::loadgen
