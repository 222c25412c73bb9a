// server.metrics_vllm_names: GET /metrics also under vLLM's names (`vllm:` prefix, its label names),
// so a Grafana dashboard or alert written for vLLM reads a shoal cluster unchanged. The shoal_ series
// stay; each listed one is rendered a second time under its vLLM name (Metrics::AddAlias).
#pragma once

#include "coordinator/metrics.h"

namespace shoal::coord {

// Registers every alias on `metrics`. What each maps to (docs/coming-from-vllm.md has the table):
// per-rank series keep their group/rank labels (a dashboard's sum() over them is the cluster's).
void AddVllmMetricNames(Metrics& metrics);

}  // namespace shoal::coord
