#include "coordinator/http_server.h"

#include <algorithm>

#include "common/log.h"
#include "common/secret.h"
#include "coordinator/control_plane.h"
#include "coordinator/net_util.h"
#include "coordinator/token_stream.h"

namespace shoal::coord {

namespace {

size_t SessionThreads(const EngineConfig& cfg) {
  if (cfg.server.http_threads > 0) return static_cast<size_t>(cfg.server.http_threads);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::clamp<size_t>(cores / 4, 1, 8);
}

// The request counter's label: a known route or "other", never the client's path (counted before
// any API key is checked, a label per distinct path would let anyone grow /metrics without bound).
const char* PathLabel(const std::string& path) {
  for (const Route& r : Routes()) {
    if (path == r.path) return r.path;
  }
  return "other";
}

void CountHttpRequest(Metrics& m, const std::string& path) {
  m.counter("shoal_http_requests_total", "HTTP requests received", {{"path", PathLabel(path)}}).Inc();
}

// API keys guard /v1 (like vLLM's --api-key) and the tokenizer endpoints; /health, /ready, /metrics
// and /version stay open for probes.
bool NeedsApiKey(const std::string& path) {
  return path.rfind("/v1/", 0) == 0 || path == "/tokenize" || path == "/detokenize";
}

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

// Made outside the coroutine: GCC 12 may destroy temporaries inside co_await expressions twice.
api::ApiError MethodNotAllowed(const Request& req, const std::string& path) {
  return {405, "method " + std::string(req.method_string().data(), req.method_string().size()) + " not allowed on " + path,
          "invalid_request_error", "", "method_not_allowed"};
}

api::ApiError NoSuchEndpoint(const std::string& path) {
  return {404, "no such endpoint: " + path, "not_found_error", "", "not_found"};
}

}  // namespace

HttpFrontEnd::HttpFrontEnd(const EngineConfig& cfg, Metrics& metrics) : cfg_(cfg), metrics_(metrics) {
  const size_t n = SessionThreads(cfg);
  for (size_t i = 0; i < n; ++i) slots_.push_back(std::make_unique<Slot>());
  acceptor_ = std::make_unique<tcp::acceptor>(slots_[0]->io);
}

HttpFrontEnd::~HttpFrontEnd() {
  Stop();
  Join();
}

Status HttpFrontEnd::Bind() { return BindAcceptor(*acceptor_, cfg_.server.host, cfg_.server.port, "server.host/port"); }

int HttpFrontEnd::port() const { return acceptor_->local_endpoint().port(); }

void HttpFrontEnd::Start(HandlerEnv& env) {
  asio::co_spawn(slots_[0]->io, AcceptLoop(env), asio::detached);
  for (auto& s : slots_) {
    Slot* slot = s.get();
    slot->thread = std::thread([slot] {
      // Idle session threads wait for work rather than return.
      auto guard = asio::make_work_guard(slot->io);
      slot->io.run();
    });
  }
}

void HttpFrontEnd::CloseListener() {
  asio::post(slots_[0]->io, [this] {
    boost::system::error_code ignored;
    acceptor_->close(ignored);
  });
}

void HttpFrontEnd::Stop() {
  for (auto& s : slots_) s->io.stop();
}

void HttpFrontEnd::Join() {
  for (auto& s : slots_) {
    if (s->thread.joinable()) s->thread.join();
  }
}

awaitable<void> HttpFrontEnd::AcceptLoop(HandlerEnv& env) {
  int backoff_ms = 0;
  while (!env.control.stopping()) {
    // Connections go to the session threads in turn; the accepted socket belongs to its thread.
    const size_t slot = next_slot_;
    next_slot_ = (next_slot_ + 1) % slots_.size();
    boost::system::error_code ec;
    tcp::socket s = co_await acceptor_->async_accept(slots_[slot]->io, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (env.control.stopping() || ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
      // Out of descriptors, say: retrying at once would spin. Wait, longer each time.
      co_await AcceptBackoff(slots_[0]->io, &backoff_ms, "HTTP", ec);
      continue;
    }
    backoff_ms = 0;
    s.set_option(tcp::no_delay(true), ec);
    if (connections_.load() >= cfg_.server.max_connections) {
      metrics_.counter("shoal_http_connections_rejected_total", "HTTP connections refused at server.max_connections").Inc();
      asio::co_spawn(slots_[slot]->io, RefuseConnection(std::move(s)), asio::detached);
      continue;
    }
    asio::co_spawn(slots_[slot]->io, Session(env, std::move(s), slot), asio::detached);
  }
}

awaitable<void> HttpFrontEnd::Session(HandlerEnv& env, tcp::socket socket, size_t slot) {
  const ConnectionCount counted(&connections_);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  const std::vector<std::string>& api_keys = env.cfg.server.api_keys;
  while (!env.control.stopping()) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(static_cast<uint64_t>(cfg_.server.max_body_bytes));
    // The header first, within the keep-alive timeout (an idle connection and a slow sender alike):
    // the API key is checked before any body is read.
    stream.expires_after(std::chrono::seconds(cfg_.server.keepalive_timeout_s));
    boost::system::error_code ec;
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      const auto& head = parser.get();
      const std::string target(head.target().data(), head.target().size());
      const std::string path = target.substr(0, target.find('?'));
      if (!api_keys.empty() && NeedsApiKey(path) && !HasApiKey(head, api_keys)) {
        stream.expires_never();
        CountHttpRequest(metrics_, path);
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
      const api::ApiError e{413, "request body exceeds " + std::to_string(cfg_.server.max_body_bytes) + " bytes",
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
    Exchange x{stream, req, target.substr(0, target.find('?')), slot};
    CountHttpRequest(metrics_, x.path);
    Handler handler = nullptr;
    bool known = false;
    for (const Route& r : Routes()) {
      if (x.path != r.path) continue;
      known = true;
      if (req.method() == r.method) handler = r.handler;
    }
    bool ok = false;
    if (handler != nullptr) {
      ok = co_await handler(env, x);
    } else {
      const api::ApiError e = known ? MethodNotAllowed(req, x.path) : NoSuchEndpoint(x.path);
      ok = co_await WriteError(stream, req, e);
    }
    if (!ok || !req.keep_alive()) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

void HttpFrontEnd::Deliver(const std::shared_ptr<RequestSink>& sink, RequestEvent event) {
  // Every sink the table carries was made by a generation handler: a TokenStream.
  auto stream = std::static_pointer_cast<TokenStream>(sink);
  Slot& s = *slots_[stream->slot()];
  if (s.outbox.empty()) dirty_.push_back(stream->slot());
  s.outbox.push_back(Item{std::move(stream), std::move(event)});
}

void HttpFrontEnd::Flush() {
  for (size_t i : dirty_) {
    Slot& s = *slots_[i];
    bool post = false;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.inbox.empty()) {
        s.inbox.swap(s.outbox);
      } else {
        std::move(s.outbox.begin(), s.outbox.end(), std::back_inserter(s.inbox));
      }
      post = !s.posted;
      s.posted = true;
    }
    s.outbox.clear();
    if (post) asio::post(s.io, [this, &s] { Drain(s); });
  }
  dirty_.clear();
}

void HttpFrontEnd::Release(std::shared_ptr<RequestSink> sink) {
  // A TokenStream's timer belongs to its session thread's io_context: the last reference is dropped there.
  const size_t slot = std::static_pointer_cast<TokenStream>(sink)->slot();
  asio::post(slots_[slot]->io, [sink = std::move(sink)]() mutable { sink.reset(); });
}

void HttpFrontEnd::Drain(Slot& s) {
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.draining.swap(s.inbox);
    s.posted = false;
  }
  for (Item& item : s.draining) item.stream->Push(std::move(item.event));
  s.draining.clear();
}

}  // namespace shoal::coord
