#include "coordinator/generation.h"

#include <poll.h>
#include <sys/socket.h>

#include <random>

#include "model/chat_template.h"

namespace shoal::coord {

namespace {

// A client that stops reading must not hold a session forever.
constexpr auto kWriteTimeout = std::chrono::seconds(60);
const std::vector<std::pair<std::string, std::string>> kNoHeaders;

std::string RandomHex(size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string s(n, '0');
  for (char& ch : s) ch = kHex[rng() & 15];
  return s;
}

uint64_t RandomSeed() {
  static std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

api::ApiError BadRequest(std::string message, std::string param = "", std::string code = "") {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// What both endpoints share after parsing.
struct Common {
  std::string model;
  api::SamplingOptions sampling;
  bool stream = false, include_usage = false, return_token_ids = false;
};

void CountClientGone(Coordinator::Impl& c) {
  c.metrics.counter("shoal_requests_client_gone_total", "Requests abandoned because the client disconnected").Inc();
}

// After the client sent bytes the request's response has not consumed yet (a pipelined request, or a
// stray byte), the socket stays readable and a wait for readability tells nothing: poll for the
// peer's hang-up instead (POLLRDHUP sees a FIN even behind unread data), every 250 ms.
void PollForDisconnect(Coordinator::Impl& c, int fd, const std::shared_ptr<RequestState>& r) {
  if (!r->disconnect_poll) r->disconnect_poll = std::make_unique<asio::steady_timer>(c.io);
  r->disconnect_poll->expires_after(std::chrono::milliseconds(250));
  r->disconnect_poll->async_wait([&c, fd, r](const boost::system::error_code& ec) {
    if (ec || r->done) return;  // cancelled with the watch: the socket may already be gone
    pollfd p{fd, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
      CountClientGone(c);
      c.Abandon(*r);
      return;
    }
    PollForDisconnect(c, fd, r);
  });
}

// Watches the client's connection while its request runs: when the client closes it, the request is
// abandoned (the worker frees its KV blocks at its next step). Stopped by cancelling the socket's
// pending wait (and the poll timer) once the response is complete.
void WatchForDisconnect(Coordinator::Impl& c, beast::tcp_stream& stream, const std::shared_ptr<RequestState>& r) {
  tcp::socket& s = stream.socket();
  s.async_wait(tcp::socket::wait_read, [&c, &stream, &s, r](const boost::system::error_code& ec) {
    if (ec || r->done) return;  // cancelled: the socket may already be gone, do not touch it
    char byte;
    const ssize_t n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      CountClientGone(c);
      c.Abandon(*r);
    } else if (n < 0) {
      WatchForDisconnect(c, stream, r);  // spurious wake-up: keep watching
    } else {
      // Bytes beyond this request (pipelined, or stray): they stay unread for the next parse, and the
      // watch goes on by polling for a hang-up.
      PollForDisconnect(c, s.native_handle(), r);
    }
  });
}

// Waits until the request has news: text to stream (when `text` counts) or its end.
awaitable<void> WaitForNews(RequestState& r, bool text = true) {
  if (r.done || (text && !r.ready_text.empty())) co_return;
  r.signal.expires_at(Clock::time_point::max());
  boost::system::error_code ec;
  co_await r.signal.async_wait(asio::redirect_error(use_awaitable, ec));
}

awaitable<bool> WriteChunk(beast::tcp_stream& stream, const std::string& data) {
  boost::system::error_code ec;
  // A named chunk: Beast's chunk header owns heap memory, and GCC 12 may destroy a temporary inside a
  // co_await expression twice.
  auto chunk = http::make_chunk(asio::buffer(data));
  stream.expires_after(kWriteTimeout);
  co_await asio::async_write(stream, chunk, asio::redirect_error(use_awaitable, ec));
  stream.expires_never();
  co_return !ec;
}

// A validated, tokenized request, ready to route.
struct Prepared {
  Common common;
  std::vector<int32_t> prompt;
  int64_t max_tokens = 0;
};

// Everything that can reject a request before it reaches a worker. A plain function, not part of the
// coroutine: GCC 12 mishandles some temporaries inside co_await expressions (double destruction).
std::variant<Prepared, api::ApiError> Prepare(Coordinator::Impl& c, const Request& req, bool chat) {
  Prepared out;
  Common& common = out.common;
  std::vector<int32_t>& prompt = out.prompt;
  if (chat) {
    auto parsed = api::ParseChatRequest(req.body());
    if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
    auto& cr = std::get<api::ChatRequest>(parsed);
    common = {cr.model, cr.sampling, cr.stream, cr.include_usage, cr.return_token_ids};
    if (!c.chat_template) {
      return BadRequest("model " + c.model_name + " has no chat template (tokenizer_config.json chat_template); "
                        "use /v1/completions");
    }
    ChatTemplateOptions o;
    o.add_generation_prompt = cr.add_generation_prompt;
    o.bos_token = c.bos_token;
    o.eos_token = c.eos_token;
    o.tools = cr.tools;
    o.extra = cr.chat_template_kwargs;
    StatusOr<std::string> rendered = RenderChatTemplate(*c.chat_template, cr.messages, o);
    // A template that raises (say, roles that do not alternate) is about the client's messages.
    if (!rendered.ok()) return BadRequest(rendered.status().message(), "messages");
    StatusOr<std::vector<int32_t>> ids = c.tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
    if (!ids.ok()) return BadRequest(ids.status().message(), "messages");
    prompt = std::move(*ids);
  } else {
    auto parsed = api::ParseCompletionRequest(req.body());
    if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
    auto& cr = std::get<api::CompletionRequest>(parsed);
    common = {cr.model, cr.sampling, cr.stream, cr.include_usage, cr.return_token_ids};
    if (auto* s = std::get_if<std::string>(&cr.prompt)) {
      StatusOr<std::vector<int32_t>> ids = c.tokenizer->Encode(*s, /*add_special_tokens=*/true);
      if (!ids.ok()) return BadRequest(ids.status().message(), "prompt");
      prompt = std::move(*ids);
    } else {
      prompt = std::get<std::vector<int32_t>>(cr.prompt);
      for (int32_t t : prompt) {
        if (t < 0 || t >= c.model_vocab) {
          return BadRequest("prompt token id " + std::to_string(t) + " is outside the vocabulary of " +
                                std::to_string(c.model_vocab), "prompt");
        }
      }
    }
  }
  if (!common.model.empty() && common.model != c.model_name) {
    return api::ApiError{404, "the model '" + common.model + "' does not exist (this server serves '" + c.model_name + "')",
                         "not_found_error", "model", "model_not_found"};
  }
  if (prompt.empty()) return BadRequest("the prompt is empty", chat ? "messages" : "prompt");
  const api::SamplingOptions& so = common.sampling;
  for (int32_t t : so.stop_token_ids) {
    if (t < 0 || t >= c.model_vocab) {
      return BadRequest("stop token id " + std::to_string(t) + " is outside the vocabulary", "stop_token_ids");
    }
  }
  const int64_t plen = static_cast<int64_t>(prompt.size());
  if (plen + std::max(so.max_tokens, 1) > static_cast<int64_t>(control::kMaxTokensPerRequest)) {
    return BadRequest("the request has " + std::to_string(plen) + " prompt tokens; at most " +
                          std::to_string(control::kMaxTokensPerRequest) + " tokens per request are supported",
                      chat ? "messages" : "prompt", "context_length_exceeded");
  }
  int64_t max_tokens = so.max_tokens;
  // Defaults as OpenAI and vLLM: 16 new tokens for completions, whatever the context leaves for chat.
  if (max_tokens < 0) max_tokens = chat ? c.max_context - plen : std::min<int64_t>(16, std::max<int64_t>(c.max_context - plen, 1));
  if (plen + std::max<int64_t>(max_tokens, 1) > c.max_context) {
    return BadRequest("this model's maximum context length is " + std::to_string(c.max_context) + " tokens; the request has " +
                          std::to_string(plen) + " prompt tokens and asks for " + std::to_string(std::max<int64_t>(max_tokens, 1)) +
                          " more",
                      so.max_tokens < 0 ? (chat ? "messages" : "prompt") : "max_tokens", "context_length_exceeded");
  }
  out.max_tokens = max_tokens;
  return out;
}

}  // namespace

awaitable<bool> HandleGeneration(Coordinator::Impl& c, beast::tcp_stream& stream, const Request& req, bool chat) {
  auto prepared = Prepare(c, req, chat);
  if (auto* e = std::get_if<api::ApiError>(&prepared)) co_return co_await WriteError(stream, req, *e);
  Prepared& p = std::get<Prepared>(prepared);
  const Common& common = p.common;
  const api::SamplingOptions& so = common.sampling;
  const int64_t plen = static_cast<int64_t>(p.prompt.size());
  int64_t max_tokens = p.max_tokens;
  auto routed = c.Route();
  if (auto* e = std::get_if<api::ApiError>(&routed)) co_return co_await WriteError(stream, req, *e);
  auto worker = std::get<std::shared_ptr<WorkerLink>>(routed);
  const int64_t kv_tokens = static_cast<int64_t>(worker->hello.kv_blocks) * worker->hello.block_size;
  // Without max_tokens, what the context leaves is also capped by what one worker's KV cache holds
  // (vLLM caps its model length the same way).
  if (so.max_tokens < 0 && plen + max_tokens > kv_tokens && kv_tokens > plen) max_tokens = kv_tokens - plen;
  if (plen + max_tokens > kv_tokens) {
    const api::ApiError e = BadRequest("the request needs " + std::to_string(plen + max_tokens) +
                                           " tokens of KV cache; a worker holds " + std::to_string(kv_tokens),
                                       "max_tokens", "context_length_exceeded");
    co_return co_await WriteError(stream, req, e);
  }

  auto r = std::make_shared<RequestState>(c.io);
  r->id = c.next_request++;
  r->api_id = (chat ? "chatcmpl-" : "cmpl-") + RandomHex(24);
  r->chat = chat;
  r->stream = common.stream;
  r->include_usage = common.include_usage;
  r->return_token_ids = common.return_token_ids;
  r->prompt = std::move(p.prompt);
  r->max_tokens = static_cast<int>(max_tokens);
  r->worker = worker;
  r->detok = std::make_unique<IncrementalDetokenizer>(*c.tokenizer, so.skip_special_tokens);
  r->stops = StopMatcher(so.stop);
  SamplingParams s = so.params;
  if (!so.has_seed) s.seed = RandomSeed();
  if (!r->stream && c.cfg.server.request_timeout_s > 0) {
    r->deadline = r->arrival + std::chrono::seconds(c.cfg.server.request_timeout_s);  // Watchdog enforces it
  }
  c.Start(r, s, so.ignore_eos, so.stop_token_ids);
  WatchForDisconnect(c, stream, r);
  const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count();
  auto usage = [&] { return api::Usage{static_cast<int64_t>(r->prompt.size()), static_cast<int64_t>(r->output_ids.size())}; };
  auto stop_watching = [&] {
    boost::system::error_code ignored;
    stream.socket().cancel(ignored);
    if (r->disconnect_poll) r->disconnect_poll->cancel();
  };

  if (!r->stream) {
    while (!r->done) co_await WaitForNews(*r, /*text=*/false);
    stop_watching();
    if (r->error) co_return co_await WriteError(stream, req, *r->error);
    if (r->finish_reason == "cancelled") co_return false;  // the client is gone
    const std::vector<int32_t>* pids = r->return_token_ids ? &r->prompt : nullptr;
    const std::vector<int32_t>* tids = r->return_token_ids ? &r->output_ids : nullptr;
    std::string body = chat ? api::ChatResponse(r->api_id, created, c.model_name, r->ready_text, r->finish_reason, usage(), pids, tids)
                            : api::CompletionResponse(r->api_id, created, c.model_name, r->ready_text, r->finish_reason, usage(), pids, tids);
    co_return co_await WriteResponse(stream, req, http::status::ok, "application/json", std::move(body), kNoHeaders);
  }

  // Streaming: SSE over a chunked response; every event is flushed as it comes.
  http::response<http::empty_body> head{http::status::ok, req.version()};
  head.set(http::field::server, "shoal");
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::cache_control, "no-cache");
  head.keep_alive(req.keep_alive());
  head.chunked(true);
  http::response_serializer<http::empty_body> sr{head};
  boost::system::error_code ec;
  stream.expires_after(kWriteTimeout);
  co_await http::async_write_header(stream, sr, asio::redirect_error(use_awaitable, ec));
  stream.expires_never();
  bool alive = !ec;
  std::string event;
  if (alive && chat) {
    event = api::ChatChunk(r->api_id, created, c.model_name, "", true, "", r->include_usage);
    alive = co_await WriteChunk(stream, event);
  }
  while (alive) {
    co_await WaitForNews(*r);
    if (!r->ready_text.empty()) {
      std::string text = std::move(r->ready_text);
      r->ready_text.clear();
      event = chat ? api::ChatChunk(r->api_id, created, c.model_name, text, false, "", r->include_usage)
                   : api::CompletionChunk(r->api_id, created, c.model_name, text, "", r->include_usage);
      alive = co_await WriteChunk(stream, event);
    }
    if (r->done && r->ready_text.empty()) break;  // text may have come in while the write was suspended
  }
  stop_watching();
  if (!alive) {
    c.Abandon(*r);  // the client went away mid-stream
    co_return false;
  }
  if (r->finish_reason == "cancelled") co_return false;
  if (r->error) {
    event = api::ErrorEvent(*r->error);
    alive = co_await WriteChunk(stream, event);
  } else {
    event = chat ? api::ChatChunk(r->api_id, created, c.model_name, "", false, r->finish_reason, r->include_usage)
                 : api::CompletionChunk(r->api_id, created, c.model_name, "", r->finish_reason, r->include_usage);
    alive = co_await WriteChunk(stream, event);
    if (alive && r->include_usage) {
      event = api::UsageChunk(r->api_id, created, c.model_name, chat, usage());
      alive = co_await WriteChunk(stream, event);
    }
  }
  if (alive) {
    event = std::string(api::kDoneEvent);
    alive = co_await WriteChunk(stream, event);
  }
  if (alive) {
    auto last = http::make_chunk_last();
    stream.expires_after(kWriteTimeout);
    co_await asio::async_write(stream, last, asio::redirect_error(use_awaitable, ec));
    stream.expires_never();
    alive = !ec;
  }
  co_return alive;
}

}  // namespace shoal::coord
