// Histograms the engine side measures and the coordinator exports (GET /metrics): each rank keeps
// per-bucket counts over its lifetime and sends them whole in every heartbeat (control/wire.h), so a
// lost heartbeat loses nothing and the coordinator only copies totals. Both sides use these bounds
// (vLLM's, so its dashboards' bucket queries read the same); a count vector of another length is
// refused at decode.
#pragma once

#include <cstdint>
#include <vector>

namespace shoal::control {

// Tokens a step fed (prompt chunks + one per decoding request): vllm:iteration_tokens_total.
inline const std::vector<double>& IterationTokenBuckets() {
  static const std::vector<double> b = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  return b;
}

// A request's phases on the rank, in seconds: queue (arrival → first scheduled), prefill (first
// scheduled → first token), decode (first token → last): vllm:request_{queue,prefill,decode}_time_seconds.
inline const std::vector<double>& RequestPhaseBuckets() {
  static const std::vector<double> b = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                        30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}

// Per-bucket (not cumulative) counts, the last one above every bound, and the sum of observations.
struct HistogramTotals {
  std::vector<uint64_t> counts;
  double sum = 0;

  void Observe(double v, const std::vector<double>& bounds) {
    if (counts.size() != bounds.size() + 1) counts.assign(bounds.size() + 1, 0);
    if (!(v == v)) return;  // NaN
    size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
  }
};

}  // namespace shoal::control
