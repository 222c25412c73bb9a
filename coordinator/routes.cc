// The route table, and the operational endpoints: /health, /ready, /metrics, /v1/models and
// /v1/cluster. The generation endpoints are in generation.cc, the tokenizer ones in tokenize.cc.
#include <time.h>

#include <nlohmann/json.hpp>

#include "coordinator/control_plane.h"
#include "coordinator/generation.h"
#include "coordinator/http_server.h"
#include "coordinator/tokenize.h"

namespace shoal::coord {

namespace {

const std::vector<std::pair<std::string, std::string>> kNoHeaders;

awaitable<bool> Health(HandlerEnv& env, Exchange& x) {
  std::string body = R"({"status":"alive"})";
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

// Built outside the coroutine: GCC 12 miscompiles some initializer lists inside coroutine frames.
struct Reply {
  http::status status;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Ready only when every group is complete and healthy, and at least as many as configured.
Reply ReadyReply(const HandlerEnv& env) {
  const bool ready = env.control.IsReady();
  nlohmann::ordered_json j = {{"status", ready ? "ready" : "unready"},
                              {"ready_groups", env.control.ready_groups()},
                              {"known_groups", env.control.known_groups()},
                              {"expected_groups", std::max(1, env.cfg.cluster.groups)}};
  Reply r{ready ? http::status::ok : http::status::service_unavailable, j.dump(), {}};
  if (!ready) r.headers.emplace_back("Retry-After", "1");
  return r;
}

awaitable<bool> Ready(HandlerEnv& env, Exchange& x) {
  Reply r = ReadyReply(env);
  co_return co_await WriteResponse(x.stream, x.req, r.status, "application/json", std::move(r.body), r.headers);
}

void SetProcessGauges(HandlerEnv& env) {
  env.metrics.gauge("shoal_http_connections", "Open HTTP connections").Set(env.front.connections());
  // CPU time of the whole coordinator process (every thread: control, HTTP sessions, text pool).
  // Divided by the tokens streamed, the coordinator's cost per token, which bench/serve_overhead.py
  // reports beside the workers' step time.
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  env.metrics.counter("shoal_coordinator_cpu_seconds_total", "CPU time of the coordinator process (all its threads)")
      .SetTotal(static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec));
}

awaitable<bool> MetricsEndpoint(HandlerEnv& env, Exchange& x) {
  co_await env.control.RefreshMetrics();
  SetProcessGauges(env);
  std::string body = env.metrics.Render();
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                                   std::move(body), kNoHeaders);
}

awaitable<bool> Models(HandlerEnv& env, Exchange& x) {
  const std::vector<std::string> ids = {env.model.name};
  std::string body = api::ModelsResponse(ids, env.model.created_unix, env.model.max_context);
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

awaitable<bool> ClusterEndpoint(HandlerEnv& env, Exchange& x) {
  std::string body = co_await env.control.DescribeCluster();
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

awaitable<bool> ExpertLoadEndpoint(HandlerEnv& env, Exchange& x) {
  std::string body = co_await env.control.ExpertLoadReport();
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

// POST /v1/expert_load/rebalance[?group=NAME]: re-place every ready group's experts (or one group's)
// from its measured load now (coordinator/expert_rebalance.h). 200 with what was done per group.
awaitable<bool> RebalanceEndpoint(HandlerEnv& env, Exchange& x) {
  std::string group;
  const std::string target(x.req.target().data(), x.req.target().size());
  if (const size_t q = target.find("?group="); q != std::string::npos) group = target.substr(q + 7);
  if (group.size() > 256 || group.find_first_of("&%#") != std::string::npos) {
    api::ApiError e{400, "group: a plain group name (at most 256 characters)", "invalid_request_error", "group", ""};
    co_return co_await WriteError(x.stream, x.req, e);
  }
  std::string body = co_await env.control.RequestRebalance(std::move(group));
  co_return co_await WriteResponse(x.stream, x.req, http::status::ok, "application/json", std::move(body), kNoHeaders);
}

constexpr Route kRoutes[] = {
    {"/health", http::verb::get, Health},
    {"/ready", http::verb::get, Ready},
    {"/metrics", http::verb::get, MetricsEndpoint},
    {"/v1/models", http::verb::get, Models},
    {"/v1/cluster", http::verb::get, ClusterEndpoint},
    {"/v1/expert_load", http::verb::get, ExpertLoadEndpoint},
    {"/v1/expert_load/rebalance", http::verb::post, RebalanceEndpoint},
    {"/v1/completions", http::verb::post, HandleCompletion},
    {"/v1/chat/completions", http::verb::post, HandleChatCompletion},
    {"/tokenize", http::verb::post, HandleTokenize},
    {"/detokenize", http::verb::post, HandleDetokenize},
    {"/version", http::verb::get, HandleVersion},
};

}  // namespace

std::span<const Route> Routes() { return kRoutes; }

}  // namespace shoal::coord
