#include "coordinator/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "common/utf8.h"

namespace shoal {
namespace {

bool ValidName(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Prometheus's float syntax: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Label values come from outside (worker host names, group names from a Hello): the exposition must
// stay valid UTF-8 whatever they hold, so invalid bytes become U+FFFD.
std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s, i, n);
      i += n;
      continue;
    }
    const char c = s[i++];
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}`, with `extra` (the histogram's le pair) last; "" when there are no labels at all.
std::string LabelText(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ',';
    out += labels[i].first + "=\"" + EscapeLabelValue(labels[i].second) + "\"";
  }
  if (!extra.empty()) {
    if (!labels.empty()) out += ',';
    out += extra;
  }
  return out + "}";
}

}  // namespace

void Counter::Inc(double v) {
  if (!(v >= 0.0)) return;  // also drops NaN
  value_.fetch_add(v, std::memory_order_relaxed);
}

void Counter::SetTotal(double total) {
  if (!(total >= 0.0)) return;
  value_.store(total, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += v;
}

void Histogram::SetTotals(const std::vector<uint64_t>& per_bucket, double sum) {
  if (per_bucket.size() != bounds_.size() + 1 || std::isnan(sum)) return;
  std::lock_guard<std::mutex> lock(mu_);
  counts_ = per_bucket;
  sum_ = sum;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  s.cumulative.reserve(counts_.size());
  uint64_t total = 0;
  for (uint64_t c : counts_) {
    total += c;
    s.cumulative.push_back(total);
  }
  s.count = total;
  s.sum = sum_;
  return s;
}

void Metrics::RecordError(const std::string& message) {
  if (error_.ok()) error_ = InvalidArgument(message);
}

Metrics::Series* Metrics::FindOrCreate(const std::string& name, const std::string& help, Type type, Labels labels,
                                       const std::vector<double>* buckets) {
  if (!ValidName(name, /*allow_colon=*/true)) {
    RecordError("metric name \"" + name + "\" is not a valid Prometheus name");
    return nullptr;
  }
  std::sort(labels.begin(), labels.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> label_names;
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& l = labels[i].first;
    if (!ValidName(l, /*allow_colon=*/false) || l.rfind("__", 0) == 0 || (type == Type::kHistogram && l == "le")) {
      RecordError("metric " + name + ": label name \"" + l + "\" is not allowed");
      return nullptr;
    }
    if (i > 0 && labels[i - 1].first == l) {
      RecordError("metric " + name + ": label \"" + l + "\" given twice");
      return nullptr;
    }
    label_names.push_back(l);
  }
  if (buckets != nullptr) {
    for (size_t i = 0; i < buckets->size(); ++i) {
      if (!std::isfinite((*buckets)[i]) || (i > 0 && (*buckets)[i] <= (*buckets)[i - 1])) {
        RecordError("metric " + name + ": buckets must be finite and strictly increasing (bucket " +
                    std::to_string(i) + ")");
        return nullptr;
      }
    }
  }

  auto [it, inserted] = families_.try_emplace(name);
  Family& f = it->second;
  if (inserted) {
    f.type = type;
    f.help = help;
    f.label_names = label_names;
    if (buckets != nullptr) f.buckets = *buckets;
  } else if (f.type != type) {
    RecordError("metric " + name + " registered again with another type");
    return nullptr;
  } else if (f.label_names != label_names) {
    RecordError("metric " + name + " registered again with other label names");
    return nullptr;
  } else if (buckets != nullptr && f.buckets != *buckets) {
    RecordError("metric " + name + " registered again with other buckets");
    return nullptr;
  }
  for (auto& s : f.series) {
    if (s->labels == labels) return s.get();
  }
  auto s = std::make_unique<Series>();
  s->labels = std::move(labels);
  switch (type) {
    case Type::kCounter:
      s->counter = std::make_unique<Counter>();
      break;
    case Type::kGauge:
      s->gauge = std::make_unique<Gauge>();
      break;
    case Type::kHistogram:
      s->histogram = std::make_unique<Histogram>(f.buckets);
      break;
  }
  f.series.push_back(std::move(s));
  return f.series.back().get();
}

Counter& Metrics::counter(const std::string& name, const std::string& help, Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = FindOrCreate(name, help, Type::kCounter, std::move(labels), nullptr);
  return s != nullptr ? *s->counter : detached_counter_;
}

Gauge& Metrics::gauge(const std::string& name, const std::string& help, Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = FindOrCreate(name, help, Type::kGauge, std::move(labels), nullptr);
  return s != nullptr ? *s->gauge : detached_gauge_;
}

Histogram& Metrics::histogram(const std::string& name, const std::string& help, std::vector<double> buckets,
                              Labels labels) {
  // A trailing +Inf is implicit; accept it when given explicitly.
  if (!buckets.empty() && std::isinf(buckets.back()) && buckets.back() > 0) buckets.pop_back();
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = FindOrCreate(name, help, Type::kHistogram, std::move(labels), &buckets);
  return s != nullptr ? *s->histogram : detached_histogram_;
}

bool Metrics::RemoveSeries(const std::string& name, const Labels& labels) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return false;
  auto& series = it->second.series;
  for (auto s = series.begin(); s != series.end(); ++s) {
    if ((*s)->labels == sorted) {
      retired_.push_back(std::move(*s));
      series.erase(s);
      return true;
    }
  }
  return false;
}

void Metrics::SetConstantLabels(Labels labels) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [k, v] : labels) {
    if (!ValidName(k, false)) RecordError("constant label: invalid label name '" + k + "'");
  }
  constant_labels_ = std::move(labels);
}

void Metrics::AddAlias(const std::string& name, const std::string& alias,
                       std::vector<std::pair<std::string, std::string>> label_renames) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ValidName(alias, true)) RecordError("alias of " + name + ": invalid metric name '" + alias + "'");
  aliases_.push_back({name, alias, std::move(label_renames)});
}

// One family under `name`: its series' labels (renamed per `rename`, from → to), then the constant ones.
void Metrics::RenderFamily(const std::string& name, const Family& f, const Labels& rename, std::string* out_ptr) const {
  std::string& out = *out_ptr;
  const char* type = f.type == Type::kCounter ? "counter" : f.type == Type::kGauge ? "gauge" : "histogram";
  out += "# HELP " + name + " " + EscapeHelp(f.help) + "\n";
  out += "# TYPE " + name + " " + type + "\n";
  for (const auto& s : f.series) {
    Labels labels = s->labels;
    for (auto& [k, v] : labels) {
      for (const auto& [from, to] : rename) {
        if (k == from) k = to;
      }
    }
    labels.insert(labels.end(), constant_labels_.begin(), constant_labels_.end());
    if (f.type == Type::kCounter) {
      out += name + LabelText(labels) + " " + FormatValue(s->counter->value()) + "\n";
    } else if (f.type == Type::kGauge) {
      out += name + LabelText(labels) + " " + FormatValue(s->gauge->value()) + "\n";
    } else {
      const Histogram::Snapshot h = s->histogram->snapshot();
      for (size_t i = 0; i <= h.bounds.size(); ++i) {
        const std::string le = i < h.bounds.size() ? FormatValue(h.bounds[i]) : "+Inf";
        out += name + "_bucket" + LabelText(labels, "le=\"" + le + "\"") + " " + std::to_string(h.cumulative[i]) + "\n";
      }
      out += name + "_sum" + LabelText(labels) + " " + FormatValue(h.sum) + "\n";
      out += name + "_count" + LabelText(labels) + " " + std::to_string(h.count) + "\n";
    }
  }
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) RenderFamily(name, f, {}, &out);
  for (const Alias& a : aliases_) {
    auto it = families_.find(a.name);
    if (it != families_.end()) RenderFamily(a.alias, it->second, a.label_renames, &out);
  }
  return out;
}

Status Metrics::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

}  // namespace shoal
