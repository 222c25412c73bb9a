#include "coordinator/vllm_metric_names.h"

namespace shoal::coord {

void AddVllmMetricNames(Metrics& m) {
  struct Name {
    const char* shoal;
    const char* vllm;
  };
  // Gauges and counters: cluster-wide where vLLM's are per engine; per rank where shoal only has those.
  for (const Name& n : {Name{"shoal_requests_running", "vllm:num_requests_running"},
                        Name{"shoal_queue_depth", "vllm:num_requests_waiting"},
                        Name{"shoal_cluster_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"},
                        Name{"shoal_cluster_kv_cache_usage_ratio", "vllm:gpu_cache_usage_perc"},  // vLLM V0's name
                        Name{"shoal_worker_preemptions_total", "vllm:num_preemptions_total"},
                        Name{"shoal_prompt_tokens_total", "vllm:prompt_tokens_total"},
                        Name{"shoal_generation_tokens_total", "vllm:generation_tokens_total"},
                        Name{"shoal_iteration_tokens", "vllm:iteration_tokens_total"},
                        Name{"shoal_request_prompt_tokens", "vllm:request_prompt_tokens"},
                        Name{"shoal_request_generation_tokens", "vllm:request_generation_tokens"},
                        Name{"shoal_time_to_first_token_seconds", "vllm:time_to_first_token_seconds"},
                        Name{"shoal_inter_token_latency_seconds", "vllm:inter_token_latency_seconds"},
                        Name{"shoal_inter_token_latency_seconds", "vllm:time_per_output_token_seconds"},
                        Name{"shoal_e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds"},
                        Name{"shoal_request_queue_time_seconds", "vllm:request_queue_time_seconds"},
                        Name{"shoal_request_prefill_time_seconds", "vllm:request_prefill_time_seconds"},
                        Name{"shoal_request_decode_time_seconds", "vllm:request_decode_time_seconds"}}) {
    m.AddAlias(n.shoal, n.vllm);
  }
  // Outcomes: vLLM labels the finish reason `finished_reason`.
  m.AddAlias("shoal_requests_total", "vllm:request_success_total", {{"finish_reason", "finished_reason"}});
}

}  // namespace shoal::coord
