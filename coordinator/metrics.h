// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
// exposition format 0.0.4 (what GET /metrics serves; Content-Type "text/plain; version=0.0.4").
//
// Names follow vLLM's metrics with a `shoal_` prefix instead of `vllm:` (shoal_num_requests_running,
// shoal_prompt_tokens_total, shoal_time_to_first_token_seconds, ...); the coordinator owns the names
// and the bucket boundaries (coordinator/request_table.cc).
//
// Thread safety: every method of Metrics, Counter, Gauge and Histogram may be called from any thread.
// Counter and Gauge updates are lock-free atomics; a Histogram observation takes that histogram's own
// mutex (so a render never sees a bucket count that disagrees with _count); Render and registration
// take the registry's mutex.
//
// Errors: a metric name, label name or histogram bucket list that is invalid, or a name reused with
// another type, label names or buckets, is a programming error. The registering call still returns a
// usable object, but a shared detached one that is never rendered, and status() reports the first such
// error (tests assert it is OK), so a typo cannot crash a serving coordinator.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace shoal {

// Label pairs in the order given; a series is identified by its metric name and these pairs.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // Adds v; negative or NaN increments are ignored (a counter only goes up).
  void Inc(double v = 1.0);
  // Sets the running total kept elsewhere (a worker's heartbeat reports its own counts). A smaller
  // value than before is a reset, as Prometheus reads it: the source restarted. Negative or NaN: ignored.
  void SetTotal(double total);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  // Counts v in the first bucket whose bound is >= v (Prometheus's `le`). NaN is ignored.
  void Observe(double v);
  // Replaces the counts with totals kept elsewhere (a worker's lifetime histogram, sent whole in its
  // heartbeat): per-bucket counts, one per bound plus +Inf, and their sum. Ignored when the count
  // doesn't match the buckets.
  void SetTotals(const std::vector<uint64_t>& per_bucket, double sum);

  struct Snapshot {
    std::vector<double> bounds;           // without +Inf
    std::vector<uint64_t> cumulative;     // bounds.size() + 1 entries; the last is the +Inf bucket == count
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // guarded by mu_; per bucket, not cumulative; last = above all bounds
  double sum_ = 0.0;  // guarded by mu_
};

class Metrics {
 public:
  Metrics() = default;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The series `name{labels}`, created at zero on first use; the same name and labels (in any order)
  // return the same object. `help` is taken from the first registration of `name`. Every series of a
  // name must use the same label names. References stay valid for the registry's lifetime, even after
  // RemoveSeries (the removed object is kept but no longer rendered).
  Counter& counter(const std::string& name, const std::string& help, Labels labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, Labels labels = {});
  // Every series of a histogram name must use the same buckets.
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> buckets,
                       Labels labels = {});

  // Stops rendering `name{labels}` (e.g. when a worker leaves); a later registration of the same
  // series starts again from zero. Returns false when no such series exists. The metric's # HELP and
  // # TYPE lines stay.
  bool RemoveSeries(const std::string& name, const Labels& labels);

  // Labels added to every series when rendered, after its own (vLLM puts model_name on each metric).
  void SetConstantLabels(Labels labels);

  // Also render metric `name` as `alias` (same type, help and series), with label names renamed per
  // `label_renames` (from → to): a second, compatible name set, e.g. vLLM's `vllm:` names for its
  // Grafana dashboards. Aliases render after every native family.
  void AddAlias(const std::string& name, const std::string& alias,
                std::vector<std::pair<std::string, std::string>> label_renames = {});

  // The whole registry in text format 0.0.4: metric names in sorted order, series in creation order;
  // then the aliases, in the order added.
  std::string Render() const;

  // OK, or the first registration error (see the file comment).
  Status status() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    Labels labels;  // sorted by name
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::string> label_names;  // sorted
    std::vector<double> buckets;           // histograms only
    std::vector<std::unique_ptr<Series>> series;
  };

  // The series for name{labels}, created if needed; nullptr (and error_ set) on a registration error.
  Series* FindOrCreate(const std::string& name, const std::string& help, Type type, Labels labels,
                       const std::vector<double>* buckets);
  void RecordError(const std::string& message);

  struct Alias {
    std::string name, alias;
    std::vector<std::pair<std::string, std::string>> label_renames;
  };
  void RenderFamily(const std::string& name, const Family& f, const Labels& rename, std::string* out) const;

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;  // guarded by mu_
  Labels constant_labels_;                  // guarded by mu_
  std::vector<Alias> aliases_;              // guarded by mu_
  // Removed series, kept so references to them stay valid.
  std::vector<std::unique_ptr<Series>> retired_;  // guarded by mu_
  Status error_;  // guarded by mu_
  // Handed out by registrations that failed; never rendered.
  Counter detached_counter_;
  Gauge detached_gauge_;
  Histogram detached_histogram_{{}};
};

}  // namespace shoal
