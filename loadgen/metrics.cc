#include "loadgen/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace shoal::loadgen {

namespace {

// Percentiles by linear interpolation between closest ranks (numpy's default, which vLLM uses).
double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

Summary::Stat Stats(const std::vector<double>& seconds) {
  Summary::Stat s;
  if (seconds.empty()) return s;
  std::vector<double> ms(seconds.size());
  std::transform(seconds.begin(), seconds.end(), ms.begin(), [](double x) { return 1e3 * x; });
  s.mean = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  s.median = Percentile(ms, 0.5);
  s.p90 = Percentile(ms, 0.9);
  s.p99 = Percentile(ms, 0.99);
  return s;
}

nlohmann::ordered_json StatJson(const Summary::Stat& s) {
  return {{"mean", s.mean}, {"median", s.median}, {"p90", s.p90}, {"p99", s.p99}};
}

}  // namespace

Summary Summarize(const std::vector<RequestOutcome>& outcomes, double duration_s, const Slo& slo) {
  Summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  int64_t in = 0, out = 0, good = 0;
  for (const RequestOutcome& o : outcomes) {
    if (!o.ok) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    in += o.prompt_tokens;
    out += o.output_tokens;
    ttft.push_back(o.ttft);
    e2e.push_back(o.e2e);
    itl.insert(itl.end(), o.itl.begin(), o.itl.end());
    double per_token = 0;
    if (o.output_tokens > 1) {
      per_token = (o.e2e - o.ttft) / static_cast<double>(o.output_tokens - 1);
      tpot.push_back(per_token);
    }
    const bool met = (slo.ttft_ms <= 0 || 1e3 * o.ttft <= slo.ttft_ms) &&
                     (slo.tpot_ms <= 0 || 1e3 * per_token <= slo.tpot_ms) && (slo.e2e_ms <= 0 || 1e3 * o.e2e <= slo.e2e_ms);
    good += met ? 1 : 0;
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.input_throughput = static_cast<double>(in) / duration_s;
    s.output_throughput = static_cast<double>(out) / duration_s;
    s.goodput = static_cast<double>(good) / duration_s;
  }
  s.ttft_ms = Stats(ttft);
  s.tpot_ms = Stats(tpot);
  s.itl_ms = Stats(itl);
  s.e2e_ms = Stats(e2e);
  return s;
}

nlohmann::ordered_json ToJson(const Summary& s) {
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"duration_s", s.duration_s},
          {"request_throughput", s.request_throughput},
          {"input_token_throughput", s.input_throughput},
          {"output_token_throughput", s.output_throughput},
          {"goodput", s.goodput},
          {"ttft_ms", StatJson(s.ttft_ms)},
          {"tpot_ms", StatJson(s.tpot_ms)},
          {"itl_ms", StatJson(s.itl_ms)},
          {"e2e_latency_ms", StatJson(s.e2e_ms)}};
}

std::string FormatSummary(const Summary& s) {
  std::string out;
  char line[160];
  auto row = [&](const char* name, double v, const char* fmt = "%-40s %12.2f\n") {
    std::snprintf(line, sizeof(line), fmt, name, v);
    out += line;
  };
  auto stat = [&](const char* what, const Summary::Stat& st) {
    std::snprintf(line, sizeof(line), "%-40s %12.2f\n", (std::string("Mean ") + what + " (ms):").c_str(), st.mean);
    out += line;
    std::snprintf(line, sizeof(line), "%-40s %12.2f\n", (std::string("Median ") + what + " (ms):").c_str(), st.median);
    out += line;
    std::snprintf(line, sizeof(line), "%-40s %12.2f\n", (std::string("P90 ") + what + " (ms):").c_str(), st.p90);
    out += line;
    std::snprintf(line, sizeof(line), "%-40s %12.2f\n", (std::string("P99 ") + what + " (ms):").c_str(), st.p99);
    out += line;
  };
  out += "============ Serving Benchmark Result ============\n";
  row("Successful requests:", static_cast<double>(s.completed), "%-40s %12.0f\n");
  row("Failed requests:", static_cast<double>(s.failed), "%-40s %12.0f\n");
  row("Benchmark duration (s):", s.duration_s);
  row("Request throughput (req/s):", s.request_throughput);
  row("Goodput (req/s):", s.goodput);
  row("Input token throughput (tok/s):", s.input_throughput);
  row("Output token throughput (tok/s):", s.output_throughput);
  stat("TTFT", s.ttft_ms);
  stat("TPOT", s.tpot_ms);
  stat("ITL", s.itl_ms);
  stat("E2E latency", s.e2e_ms);
  out += "==================================================\n";
  return out;
}

std::string SweepSvg(const std::vector<double>& rates, const std::vector<Summary>& results, const Slo& slo) {
  // Two panels side by side: latency (ms, log scale) and goodput (req/s), against offered load.
  const double W = 960, H = 420, pad = 60, panel = (W - 3 * pad) / 2, plot_h = H - 2 * pad;
  double max_rate = 0, max_good = 0, max_lat = 1, min_lat = 1e9;
  for (size_t i = 0; i < rates.size(); ++i) {
    max_rate = std::max(max_rate, rates[i]);
    max_good = std::max({max_good, results[i].goodput, results[i].request_throughput});
    for (double v : {results[i].ttft_ms.median, results[i].ttft_ms.p99, results[i].tpot_ms.median, results[i].tpot_ms.p99}) {
      if (v > 0) {
        max_lat = std::max(max_lat, v);
        min_lat = std::min(min_lat, v);
      }
    }
  }
  if (min_lat > max_lat) min_lat = 1;
  const double lo = std::floor(std::log10(std::max(min_lat, 1e-3))), hi = std::ceil(std::log10(max_lat) + 1e-9);
  max_rate = max_rate > 0 ? max_rate : 1;
  max_good = max_good > 0 ? max_good * 1.1 : 1;
  auto x = [&](double x0, double r) { return x0 + panel * r / max_rate; };
  auto y_lat = [&](double v) {
    const double t = (std::log10(std::max(v, std::pow(10.0, lo))) - lo) / std::max(hi - lo, 1.0);
    return pad + plot_h * (1 - t);
  };
  auto y_good = [&](double v) { return pad + plot_h * (1 - v / max_good); };
  std::string svg;
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' "
                "font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
                W, H);
  svg += buf;
  auto axes = [&](double x0, const char* title, const char* ylabel) {
    std::snprintf(buf, sizeof(buf),
                  "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#444'/>\n"
                  "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='14'>%s</text>\n"
                  "<text x='%.1f' y='%.1f' text-anchor='middle'>offered load (requests/s)</text>\n"
                  "<text x='%.1f' y='%.1f' text-anchor='middle' transform='rotate(-90 %.1f %.1f)'>%s</text>\n",
                  x0, pad, panel, plot_h, x0 + panel / 2, pad - 20, title, x0 + panel / 2, H - 15, x0 - 45,
                  pad + plot_h / 2, x0 - 45, pad + plot_h / 2, ylabel);
    svg += buf;
    for (int k = 0; k <= 4; ++k) {
      const double r = max_rate * k / 4;
      std::snprintf(buf, sizeof(buf), "<text x='%.1f' y='%.1f' text-anchor='middle'>%.3g</text>\n", x(x0, r),
                    pad + plot_h + 16, r);
      svg += buf;
    }
  };
  const double x_lat = pad, x_good = 2 * pad + panel;
  axes(x_lat, "latency percentiles", "ms (log scale)");
  axes(x_good, "throughput and goodput", "requests/s");
  for (double e = lo; e <= hi; e += 1) {
    std::snprintf(buf, sizeof(buf), "<text x='%.1f' y='%.1f' text-anchor='end'>%.3g</text>\n", x_lat - 4,
                  y_lat(std::pow(10.0, e)) + 4, std::pow(10.0, e));
    svg += buf;
  }
  for (int k = 0; k <= 4; ++k) {
    std::snprintf(buf, sizeof(buf), "<text x='%.1f' y='%.1f' text-anchor='end'>%.3g</text>\n", x_good - 4,
                  y_good(max_good * k / 4) + 4, max_good * k / 4);
    svg += buf;
  }
  struct Series {
    const char* name;
    const char* color;
    bool dashed;
    bool latency;
    double (*get)(const Summary&);
  };
  const Series series[] = {
      {"TTFT p50", "#1f77b4", false, true, [](const Summary& s) { return s.ttft_ms.median; }},
      {"TTFT p99", "#1f77b4", true, true, [](const Summary& s) { return s.ttft_ms.p99; }},
      {"TPOT p50", "#d62728", false, true, [](const Summary& s) { return s.tpot_ms.median; }},
      {"TPOT p99", "#d62728", true, true, [](const Summary& s) { return s.tpot_ms.p99; }},
      {"throughput", "#2ca02c", false, false, [](const Summary& s) { return s.request_throughput; }},
      {"goodput", "#9467bd", false, false, [](const Summary& s) { return s.goodput; }},
  };
  int legend = 0;
  for (const Series& s : series) {
    std::string pts;
    for (size_t i = 0; i < rates.size(); ++i) {
      const double v = s.get(results[i]);
      std::snprintf(buf, sizeof(buf), "%.1f,%.1f ", x(s.latency ? x_lat : x_good, rates[i]),
                    s.latency ? y_lat(v) : y_good(v));
      pts += buf;
    }
    std::snprintf(buf, sizeof(buf), "<polyline fill='none' stroke='%s' stroke-width='2'%s points='%s'/>\n", s.color,
                  s.dashed ? " stroke-dasharray='6,4'" : "", pts.c_str());
    svg += buf;
    const double lx = (s.latency ? x_lat : x_good) + 10, ly = pad + 14 + 16 * (s.latency ? legend : legend - 4);
    std::snprintf(buf, sizeof(buf),
                  "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2'%s/>"
                  "<text x='%.1f' y='%.1f'>%s</text>\n",
                  lx, ly - 4, lx + 20, ly - 4, s.color, s.dashed ? " stroke-dasharray='6,4'" : "", lx + 26, ly, s.name);
    svg += buf;
    ++legend;
  }
  if (slo.ttft_ms > 0 || slo.tpot_ms > 0) {
    for (double v : {slo.ttft_ms, slo.tpot_ms}) {
      if (v <= 0) continue;
      std::snprintf(buf, sizeof(buf),
                    "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#888' stroke-dasharray='2,3'/>"
                    "<text x='%.1f' y='%.1f' fill='#666'>SLO %.0f ms</text>\n",
                    x_lat, y_lat(v), x_lat + panel, y_lat(v), x_lat + panel - 80, y_lat(v) - 4, v);
      svg += buf;
    }
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace shoal::loadgen
