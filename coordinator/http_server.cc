// The coordinator's HTTP/1.1 server: connections, limits, authentication and the operational
// endpoints (/health, /ready, /metrics, /v1/models, /v1/cluster). Generation endpoints are in
// coordinator/generation.cc.
#include <time.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/secret.h"
#include "coordinator/generation.h"
#include "coordinator/http_util.h"
#include "coordinator/state.h"

namespace shoal {

using namespace coord;

namespace coord {

awaitable<bool> WriteResponse(beast::tcp_stream& stream, const Request& req, http::status status,
                              const char* content_type, std::string body,
                              const std::vector<std::pair<std::string, std::string>>& headers) {
  http::response<http::string_body> res{status, req.version()};
  res.set(http::field::server, "shoal");
  res.set(http::field::content_type, content_type);
  for (const auto& [k, v] : headers) res.set(k, v);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  boost::system::error_code ec;
  stream.expires_after(std::chrono::seconds(60));  // a client that stops reading must not hold the session
  co_await http::async_write(stream, res, asio::redirect_error(use_awaitable, ec));
  stream.expires_never();
  co_return !ec;
}

awaitable<bool> WriteError(beast::tcp_stream& stream, const Request& req, const api::ApiError& e) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (e.http_status == 429 || e.http_status == 503) headers.emplace_back("Retry-After", "1");
  if (e.http_status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
  std::string body = api::ErrorBody(e);
  co_return co_await WriteResponse(stream, req, static_cast<http::status>(e.http_status), "application/json",
                                   std::move(body), headers);
}

}  // namespace coord

namespace {

const std::vector<std::pair<std::string, std::string>> kNoHeaders;

nlohmann::ordered_json ClusterJson(const Coordinator::Impl& c) {
  using nlohmann::ordered_json;
  ordered_json groups = ordered_json::array();
  const auto now = Clock::now();
  for (const auto& [name, g] : c.groups) {
    ordered_json ranks = ordered_json::array();
    for (size_t i = 0; i < g.ranks.size(); ++i) {
      const auto& r = g.ranks[i];
      ordered_json j = {{"rank", i}};
      if (!r) {
        j["state"] = "not connected";
        ranks.push_back(j);
        continue;
      }
      j["state"] = r->dead ? "dead" : "up";
      if (r->dead) j["error"] = r->dead_reason;
      j["host"] = r->hello.host;
      j["pid"] = r->hello.pid;
      j["experts"] = r->hello.local_experts;
      j["last_heartbeat_ms_ago"] = std::chrono::duration_cast<std::chrono::milliseconds>(now - r->last_seen).count();
      j["requests_in_flight"] = r->requests.size();
      j["running"] = r->hb.running;
      j["waiting"] = r->hb.waiting;
      j["kv_blocks_used"] = r->hb.kv_blocks_used;
      j["kv_blocks_total"] = r->hello.kv_blocks;
      j["kv_block_size"] = r->hello.block_size;
      j["max_num_seqs"] = r->hello.max_num_seqs;
      j["steps"] = r->hb.steps;
      j["last_step_seconds"] = r->hb.last_step_seconds;
      j["preemptions"] = r->hb.preemptions;
      ranks.push_back(j);
    }
    groups.push_back({{"name", name},
                      {"incarnation", g.incarnation},
                      {"size", g.size},
                      {"ready", g.Complete()},
                      {"error", g.broken ? ordered_json(g.broken_reason) : ordered_json(nullptr)},
                      {"requests_in_flight", g.in_flight},
                      {"ranks", ranks}});
  }
  boost::system::error_code ec;
  const auto control = c.control_acceptor.local_endpoint(ec);
  return {{"model", c.model_name},
          {"control_address", ec ? std::string() : c.cfg.server.control_host + ":" + std::to_string(control.port())},
          {"max_context", c.max_context},
          {"ready_groups", c.ready_groups.load()},
          {"requests_in_flight", c.requests.size()},
          {"groups", groups}};
}

// Brings the per-rank series up to date from the latest heartbeats.
void RefreshWorkerMetrics(Coordinator::Impl& c) {
  for (const auto& [name, g] : c.groups) {
    for (const auto& r : g.ranks) {
      if (!r) continue;
      const Labels l = {{"group", name}, {"rank", std::to_string(r->hello.rank)}};
      c.metrics.gauge("shoal_worker_up", "1 while the rank is connected and heartbeating", l).Set(r->dead ? 0 : 1);
      c.metrics.gauge("shoal_kv_cache_blocks_used", "KV cache blocks in use", l).Set(static_cast<double>(r->hb.kv_blocks_used));
      c.metrics.gauge("shoal_kv_cache_blocks_capacity", "KV cache blocks", l).Set(static_cast<double>(r->hello.kv_blocks));
      c.metrics.gauge("shoal_kv_cache_usage_ratio", "Share of KV cache blocks in use", l)
          .Set(r->hello.kv_blocks ? static_cast<double>(r->hb.kv_blocks_used) / static_cast<double>(r->hello.kv_blocks) : 0);
      c.metrics.gauge("shoal_num_requests_running", "Requests in the rank's running batch", l).Set(r->hb.running);
      c.metrics.gauge("shoal_num_requests_waiting", "Requests queued on the rank (waiting for KV or a slot)", l)
          .Set(r->hb.waiting);
      // The rank's running totals, as counters (they reset when the rank restarts).
      c.metrics.counter("shoal_worker_steps_total", "Steps the rank has taken", l).SetTotal(static_cast<double>(r->hb.steps));
      c.metrics.counter("shoal_worker_step_seconds_total", "Wall time inside steps", l).SetTotal(r->hb.step_seconds_total);
      c.metrics.gauge("shoal_worker_last_step_seconds", "Duration of the rank's latest step", l).Set(r->hb.last_step_seconds);
      c.metrics.counter("shoal_worker_preemptions_total", "Requests preempted for KV blocks", l)
          .SetTotal(static_cast<double>(r->hb.preemptions));
      const auto& experts = r->hello.local_experts;
      for (size_t i = 0; i < experts.size() && i < r->hb.expert_tokens.size(); ++i) {
        c.metrics.counter("shoal_expert_tokens_total", "Token rows each expert processed (all layers)",
                          {{"group", name}, {"expert", std::to_string(experts[i])}})
            .SetTotal(static_cast<double>(r->hb.expert_tokens[i]));
      }
    }
  }
  int64_t queued = 0;
  for (const auto& [name, g] : c.groups) {
    for (const auto& r : g.ranks) {
      if (r && !r->dead) queued += r->hb.waiting;
    }
  }
  c.metrics.gauge("shoal_queue_depth", "Requests waiting on all ranks for a slot or KV blocks").Set(static_cast<double>(queued));
  c.metrics.gauge("shoal_http_connections", "Open HTTP connections").Set(c.http_connections);
  c.metrics.gauge("shoal_control_connections", "Open control-plane connections").Set(c.control_connections);
  c.metrics.gauge("shoal_ready_groups", "Engine groups complete and healthy").Set(c.ready_groups.load());
  // CPU time of the coordinator's I/O thread (this function runs on it): divided by the steps taken,
  // the coordinator's cost per step, which `bench/serve_overhead.py` compares with the step time.
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  c.metrics.counter("shoal_coordinator_cpu_seconds_total", "CPU time of the coordinator's I/O thread")
      .SetTotal(static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec));
}

// The request counter's path label comes from this fixed set, never from the request: counted before
// any API key is checked, a label per distinct path would let anyone grow /metrics without bound.
constexpr const char* kRoutes[] = {"/health",    "/ready",          "/metrics",           "/v1/models",
                                   "/v1/cluster", "/v1/completions", "/v1/chat/completions"};

void CountHttpRequest(Metrics& m, const std::string& path) {
  const char* label = "other";
  for (const char* r : kRoutes) {
    if (path == r) label = r;
  }
  m.counter("shoal_http_requests_total", "HTTP requests received", {{"path", label}}).Inc();
}

// API keys guard /v1 (like vLLM's --api-key); /health, /ready and /metrics stay open for probes.
bool HasApiKey(const http::request_header<>& head, const std::vector<std::string>& keys) {
  const auto field = head[http::field::authorization];
  const std::string_view auth(field.data(), field.size());
  bool allowed = false;
  if (auth.size() > 7 && auth.substr(0, 7) == "Bearer ") {
    for (const std::string& k : keys) allowed = allowed || SecretsEqual(k, auth.substr(7));
  }
  return allowed;
}

// A connection over server.max_connections: a short 503 (best effort, bounded in time) and close.
awaitable<void> RefuseConnection(tcp::socket socket) {
  const std::string body =
      R"json({"error":{"message":"too many connections (server.max_connections)","type":"server_error","code":503}})json"
      "\n";
  const std::string reply = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                            "Content-Type: application/json\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(std::chrono::seconds(2));
  boost::system::error_code ec;
  co_await asio::async_write(stream, asio::buffer(reply), asio::redirect_error(use_awaitable, ec));
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
}

// Built outside the coroutine: GCC 12 miscompiles some initializer lists inside coroutine frames.
struct Reply {
  http::status status;
  const char* content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Ready only when every group is complete and healthy, and at least as many as configured.
Reply ReadyReply(const Coordinator::Impl& c) {
  const int expected = std::max(1, c.cfg.cluster.groups);
  const int n = c.ready_groups.load();
  const bool ready = c.IsReady();
  nlohmann::ordered_json j = {{"status", ready ? "ready" : "unready"},
                              {"ready_groups", n},
                              {"known_groups", c.groups.size()},
                              {"expected_groups", expected}};
  Reply r{ready ? http::status::ok : http::status::service_unavailable, "application/json", j.dump(), {}};
  if (!ready) r.headers.emplace_back("Retry-After", "1");
  return r;
}

}  // namespace

bool Coordinator::Impl::IsReady() const {
  const int n = ready_groups.load();
  return !stopping && n >= std::max(1, cfg.cluster.groups) && n == static_cast<int>(groups.size());
}

awaitable<void> Coordinator::Impl::AcceptHttp() {
  int backoff_ms = 0;
  while (!stopping) {
    boost::system::error_code ec;
    tcp::socket s = co_await http_acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) co_return;
      // Out of descriptors (EMFILE) or another transient failure: the listener stays readable, so
      // retrying at once would spin. Wait, longer each time, until an accept succeeds again.
      co_await AcceptBackoff(io, &backoff_ms, "HTTP", ec);
      continue;
    }
    backoff_ms = 0;
    s.set_option(tcp::no_delay(true), ec);
    if (http_connections >= cfg.server.max_connections) {
      metrics.counter("shoal_http_connections_rejected_total", "HTTP connections refused at server.max_connections").Inc();
      asio::co_spawn(io, RefuseConnection(std::move(s)), asio::detached);
      continue;
    }
    asio::co_spawn(io, HttpSession(std::move(s)), asio::detached);
  }
}

awaitable<void> Coordinator::Impl::HttpSession(tcp::socket socket) {
  const ConnectionCount counted(&http_connections);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  while (!stopping) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(static_cast<uint64_t>(cfg.server.max_body_bytes));
    // The header first, within the keep-alive timeout (an idle connection and a slow sender alike):
    // the API key is checked before any body is read.
    stream.expires_after(std::chrono::seconds(cfg.server.keepalive_timeout_s));
    boost::system::error_code ec;
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      const auto& head = parser.get();
      const std::string target(head.target().data(), head.target().size());
      const std::string path = target.substr(0, target.find('?'));
      if (!api_keys.empty() && path.rfind("/v1/", 0) == 0 && !HasApiKey(head, api_keys)) {
        stream.expires_never();
        CountHttpRequest(metrics, path);
        Request stub;
        stub.version(head.version());
        stub.keep_alive(false);  // the body (if any) is never read: the connection cannot be reused
        const api::ApiError e{401, "a valid API key is required (Authorization: Bearer <key>)", "authentication_error",
                              "", "invalid_api_key"};
        co_await WriteError(stream, stub, e);
        break;
      }
      stream.expires_after(std::chrono::seconds(120));  // the body of an authenticated request
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    }
    if (ec == http::error::body_limit) {
      stream.expires_never();
      Request stub;
      stub.version(11);
      const api::ApiError e{413, "request body exceeds " + std::to_string(cfg.server.max_body_bytes) + " bytes",
                            "invalid_request_error", "", "request_too_large"};
      co_await WriteError(stream, stub, e);
      break;
    }
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      break;
    }
    if (ec) {
      stream.expires_never();
      Request stub;
      stub.version(11);
      const api::ApiError e{400, "malformed HTTP request: " + ec.message(), "invalid_request_error", "", ""};
      co_await WriteError(stream, stub, e);
      break;
    }
    stream.expires_never();
    Request req = parser.release();
    const std::string target(req.target().data(), req.target().size());
    const std::string path = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    bool ok = true;
    CountHttpRequest(metrics, path);

    if (path == "/health" && get) {
      std::string body = R"({"status":"alive"})";
      ok = co_await WriteResponse(stream, req, http::status::ok, "application/json", std::move(body), kNoHeaders);
    } else if (path == "/ready" && get) {
      UpdateReady();
      Reply r = ReadyReply(*this);
      ok = co_await WriteResponse(stream, req, r.status, r.content_type, std::move(r.body), r.headers);
    } else if (path == "/metrics" && get) {
      RefreshWorkerMetrics(*this);
      std::string body = metrics.Render();
      ok = co_await WriteResponse(stream, req, http::status::ok, "text/plain; version=0.0.4; charset=utf-8", std::move(body), kNoHeaders);
    } else if (path == "/v1/models" && get) {
      std::vector<std::string> ids = {model_name};
      std::string body = api::ModelsResponse(ids, created_unix);
      ok = co_await WriteResponse(stream, req, http::status::ok, "application/json", std::move(body), kNoHeaders);
    } else if (path == "/v1/cluster" && get) {
      // Worker-supplied text (host names, error reasons) may not be valid UTF-8.
      std::string body = ClusterJson(*this).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
      ok = co_await WriteResponse(stream, req, http::status::ok, "application/json", std::move(body), kNoHeaders);
    } else if ((path == "/v1/completions" || path == "/v1/chat/completions") && post) {
      ok = co_await HandleGeneration(*this, stream, req, path == "/v1/chat/completions");
    } else if (path == "/health" || path == "/ready" || path == "/metrics" || path == "/v1/models" ||
               path == "/v1/cluster" || path == "/v1/completions" || path == "/v1/chat/completions") {
      const api::ApiError e{405, "method " + std::string(req.method_string().data(), req.method_string().size()) +
                                     " not allowed on " + path, "invalid_request_error", "", "method_not_allowed"};
      ok = co_await WriteError(stream, req, e);
    } else {
      const api::ApiError e{404, "no such endpoint: " + path, "not_found_error", "", "not_found"};
      ok = co_await WriteError(stream, req, e);
    }
    if (!ok || !req.keep_alive()) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace shoal
