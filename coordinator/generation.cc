#include "coordinator/generation.h"

#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstdio>
#include <functional>
#include <optional>
#include <random>

#include "coordinator/chat_output.h"
#include "coordinator/control_plane.h"
#include "coordinator/forced_tool_call.h"
#include "coordinator/openai_stream.h"
#include "coordinator/token_stream.h"
#include "model/chat_template.h"

namespace shoal::coord {

namespace {

// A client that stops reading must not hold a session forever.
constexpr auto kWriteTimeout = std::chrono::seconds(60);
const std::vector<std::pair<std::string, std::string>> kNoHeaders;

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

std::string RandomHex(size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string s(n, '0');
  for (char& ch : s) ch = kHex[Rng()() & 15];
  return s;
}

api::ApiError BadRequest(std::string message, std::string param = "", std::string code = "") {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// A validated, tokenized request, ready to admit.
struct Prepared {
  std::string model;
  bool tools = false;  // a chat with tools and tool_choice "auto": calls are parsed out
  // tool_choice "required" or a named function: the output is held to json_schema and read as calls.
  api::ToolChoice forced = api::ToolChoice::kAuto;
  std::string forced_name, json_schema;
  std::string echo;    // completions' echo: the prompt's text, sent before the completion's
  bool echo_logprobs = false;  // echo with logprobs: the prompt's tokens lead the logprobs too
  api::SamplingOptions sampling;
  bool stream = false, include_usage = false, return_token_ids = false;
  std::vector<int32_t> prompt;
};

// Everything that can reject a request before admission, run on the text pool: parsing, the chat
// template, tokenizing, and the checks that need only the model. A plain function, not part of a
// coroutine: GCC 12 mishandles some temporaries inside co_await expressions (double destruction).
std::variant<Prepared, api::ApiError> Prepare(const HandlerEnv& env, const Request& req, bool chat) {
  const ServedModel& m = env.model;
  Prepared out;
  std::vector<int32_t>& prompt = out.prompt;
  if (chat) {
    auto parsed = api::ParseChatRequest(req.body());
    if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
    auto& cr = std::get<api::ChatRequest>(parsed);
    out.model = cr.model;
    out.sampling = std::move(cr.sampling);
    out.stream = cr.stream, out.include_usage = cr.include_usage, out.return_token_ids = cr.return_token_ids;
    out.tools = cr.tools.is_array() && !cr.tools.empty() && cr.tool_choice == api::ToolChoice::kAuto;
    // Call markers are special tokens in some vocabularies (Mistral's [TOOL_CALLS] and [ARGS], some
    // Hermes models' <tool_call>): the parser must see them, so they are kept in the text, as vLLM's
    // tool parsers do (skip_special_tokens off while tools are parsed).
    if (out.tools && m.tools != ToolFormat::kNone) out.sampling.skip_special_tokens = false;
    if (cr.tool_choice == api::ToolChoice::kRequired || cr.tool_choice == api::ToolChoice::kNamed) {
      auto schema = ForcedToolSchema(cr.tools, cr.tool_choice, cr.tool_choice_name, cr.parallel_tool_calls);
      if (auto* e = std::get_if<api::ApiError>(&schema)) return *e;
      out.json_schema = std::move(std::get<std::string>(schema));
      out.forced = cr.tool_choice;
      out.forced_name = cr.tool_choice_name;
    }
    auto ids = ChatPromptIds(m, cr);
    if (auto* e = std::get_if<api::ApiError>(&ids)) return *e;
    prompt = std::move(std::get<std::vector<int32_t>>(ids));
  } else {
    auto parsed = api::ParseCompletionRequest(req.body());
    if (auto* e = std::get_if<api::ApiError>(&parsed)) return *e;
    auto& cr = std::get<api::CompletionRequest>(parsed);
    out.model = cr.model;
    out.sampling = std::move(cr.sampling);
    out.stream = cr.stream, out.include_usage = cr.include_usage, out.return_token_ids = cr.return_token_ids;
    out.echo_logprobs = cr.echo && out.sampling.logprobs >= 0;
    if (auto* s = std::get_if<std::string>(&cr.prompt)) {
      StatusOr<std::vector<int32_t>> ids = m.tokenizer->Encode(*s, /*add_special_tokens=*/true);
      if (!ids.ok()) return BadRequest(ids.status().message(), "prompt");
      prompt = std::move(*ids);
      if (cr.echo) out.echo = *s;
    } else {
      prompt = std::move(std::get<std::vector<int32_t>>(cr.prompt));
      for (int32_t t : prompt) {
        if (t < 0 || t >= m.vocab) {
          return BadRequest("prompt token id " + std::to_string(t) + " is outside the vocabulary of " +
                                std::to_string(m.vocab), "prompt");
        }
      }
      if (cr.echo) {  // ids echo as the text they decode to (special tokens included, as given)
        StatusOr<std::string> text = m.tokenizer->Decode(prompt, /*skip_special_tokens=*/false);
        if (!text.ok()) return BadRequest(text.status().message(), "prompt");
        out.echo = std::move(*text);
      }
    }
  }
  if (!out.model.empty() && out.model != m.name) {
    return api::ApiError{404, "the model '" + out.model + "' does not exist (this server serves '" + m.name + "')",
                         "not_found_error", "model", "model_not_found"};
  }
  if (prompt.empty()) return BadRequest("the prompt is empty", chat ? "messages" : "prompt");
  for (int32_t t : out.sampling.stop_token_ids) {
    if (t < 0 || t >= m.vocab) {
      return BadRequest("stop token id " + std::to_string(t) + " is outside the vocabulary", "stop_token_ids");
    }
  }
  if (!out.sampling.has_seed) out.sampling.params.seed = Rng()();
  for (int32_t t : out.sampling.bias_ids) {
    if (t >= m.vocab) return BadRequest("logit_bias token id " + std::to_string(t) + " is outside the vocabulary", "logit_bias");
  }
  m.ApplySamplingDefaults(&out.sampling);
  return out;
}

// Watches the client's connection while its request runs, so that a client that leaves frees its
// rank's KV blocks at the next step. Lives in a shared_ptr its handlers hold; Stop() before the
// session reads the socket again.
class DisconnectWatch : public std::enable_shared_from_this<DisconnectWatch> {
 public:
  DisconnectWatch(beast::tcp_stream& stream, std::function<void()> on_gone)
      : stream_(stream), poll_(stream.socket().get_executor()), on_gone_(std::move(on_gone)) {}

  void Start() { WaitReadable(); }
  // Cancels the socket's pending wait (and the poll timer); the socket may be gone after this.
  void Stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    stream_.socket().cancel(ignored);
    poll_.cancel();
  }

 private:
  void Gone() {
    if (stopped_) return;
    stopped_ = true;
    on_gone_();
  }

  void WaitReadable() {
    tcp::socket& s = stream_.socket();
    s.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->stopped_) return;  // cancelled: the socket may already be gone, do not touch it
      char byte;
      const ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        self->Gone();
      } else if (n < 0) {
        self->WaitReadable();  // spurious wake-up: keep watching
      } else {
        // Bytes beyond this request (pipelined, or stray) stay unread for the next parse, and keep
        // the socket readable: from here on, poll for the peer's hang-up instead (POLLRDHUP sees a
        // FIN even behind unread data).
        self->PollForHangUp();
      }
    });
  }

  void PollForHangUp() {
    poll_.expires_after(std::chrono::milliseconds(250));
    poll_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->stopped_) return;
      pollfd p{self->stream_.socket().native_handle(), POLLRDHUP, 0};
      if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        self->Gone();
        return;
      }
      self->PollForHangUp();
    });
  }

  beast::tcp_stream& stream_;
  asio::steady_timer poll_;
  std::function<void()> on_gone_;
  bool stopped_ = false;
};

// Writes `data` as one HTTP/1.1 chunk (and, with `last`, the zero-length chunk that ends the body).
// Most writes fit the socket's send buffer: they are made at once with one non-blocking writev, with
// no asynchronous operation, timer or coroutine switch per token. What does not fit goes out
// asynchronously, within kWriteTimeout. False when the client is gone.
awaitable<bool> WriteChunk(beast::tcp_stream& stream, const std::string& data, bool last = false) {
  char head[24];
  const int head_len = std::snprintf(head, sizeof head, "%zx\r\n", data.size());
  const std::string_view tail = last ? std::string_view("\r\n0\r\n\r\n") : std::string_view("\r\n");
  std::array<asio::const_buffer, 3> buffers = {asio::buffer(head, static_cast<size_t>(head_len)), asio::buffer(data),
                                               asio::buffer(tail.data(), tail.size())};
  const size_t total = asio::buffer_size(buffers);
  tcp::socket& socket = stream.socket();
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  size_t sent = ec ? 0 : socket.write_some(buffers, ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) ec.clear();
  if (ec) co_return false;
  if (sent == total) co_return true;
  // The rest, once the client reads.
  std::array<asio::const_buffer, 3> rest = buffers;
  for (auto& b : rest) {
    const size_t skip = std::min(sent, b.size());
    b += skip;
    sent -= skip;
  }
  stream.expires_after(kWriteTimeout);
  co_await asio::async_write(stream, rest, asio::redirect_error(use_awaitable, ec));
  stream.expires_never();
  co_return !ec;
}

// The session's side of a request's end it decided itself (a stop string, a detokenizing error):
// the rank must stop generating.
void ReportEndedHere(HandlerEnv& env, TokenStream& s) {
  if (s.ended_here == nullptr) return;
  env.control.End(s.id, s.ended_here);
  s.ended_here = nullptr;
}

http::response<http::empty_body> StreamHead(const Request& req) {
  http::response<http::empty_body> head{http::status::ok, req.version()};
  head.set(http::field::server, "shoal");
  head.set(http::field::content_type, "text/event-stream");
  head.set(http::field::cache_control, "no-cache");
  head.keep_alive(req.keep_alive());
  head.chunked(true);
  return head;
}

// One of a request's n choices, as the session sees it.
struct Choice {
  std::shared_ptr<TokenStream> s;
  std::unique_ptr<ChatOutputParser> parser;
  std::unique_ptr<ForcedToolCallReader> forced;  // tool_choice "required" or named
  int64_t text_offset = 0;      // completions' logprobs text_offset runs on
  bool prompt_ids_pending = false;  // completions: the prompt's ids ride on the choice's first chunk
  bool echo_pending = false;        // completions' echo: not sent yet
  bool finish_sent = false;         // stream: its finish chunk is out
};

awaitable<bool> Generate(HandlerEnv& env, Exchange& x, bool chat) {
  const Clock::time_point arrival = Clock::now();
  const Request& req = x.req;
  auto prepare = [&env, &req, chat]() -> awaitable<std::variant<Prepared, api::ApiError>> {
    co_return Prepare(env, req, chat);
  };
  awaitable<std::variant<Prepared, api::ApiError>> prepare_on_pool =
      asio::co_spawn(env.text_pool, std::move(prepare), use_awaitable);
  std::variant<Prepared, api::ApiError> prepared = co_await std::move(prepare_on_pool);
  if (auto* e = std::get_if<api::ApiError>(&prepared)) co_return co_await WriteError(x.stream, req, *e);
  Prepared& p = std::get<Prepared>(prepared);
  const api::SamplingOptions& so = p.sampling;

  // n choices: n requests of one prompt on one rank, the first prefilling it for all (fork_of); choice
  // i draws with the seed + i, as vLLM's. One wake-up for all of them.
  const auto wakeup = std::make_shared<SessionWakeup>(env.front.executor(x.slot));
  std::vector<Choice> choices(static_cast<size_t>(so.n));
  auto end_all = [&env, &choices](const char* reason) {
    for (Choice& c : choices) {
      if (!c.s || c.s->id == 0 || c.s->done) continue;
      c.s->EndLocally(reason);
      env.control.End(c.s->id, reason);
    }
  };
  std::vector<RequestTable::Admission> admissions(choices.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    Choice& c = choices[i];
    c.s = std::make_shared<TokenStream>(env.front.executor(x.slot), x.slot, *env.model.tokenizer,
                                        so.skip_special_tokens, so.stop, so.params.min_tokens, wakeup);
    // A forced call's output is JSON from its first token (the constraint allows no reasoning), read
    // by its own reader, not by the reasoning or tool-call parsers.
    const bool forced = p.forced != api::ToolChoice::kAuto;
    c.parser = std::make_unique<ChatOutputParser>(forced ? ReasoningFormat::kNone : env.model.reasoning,
                                                  chat && p.tools ? env.model.tools : ToolFormat::kNone);
    if (forced) c.forced = std::make_unique<ForcedToolCallReader>(p.forced, p.forced_name);
    RequestTable::Admission& a = admissions[i];
    a.prompt = &p.prompt;
    a.max_tokens = so.max_tokens;
    a.chat = chat;
    a.sampling = so.params;
    a.sampling.seed = so.params.seed + i;
    a.ignore_eos = so.ignore_eos;
    a.stop_ids = so.stop_token_ids;
    a.bias_ids = so.bias_ids;
    a.bias_values = so.bias_values;
    a.json_schema = p.json_schema;
    a.logprobs = so.logprobs;
    // The prompt's logprobs come with the first choice (the prompt is the same for all).
    a.prompt_logprobs = i == 0 ? std::max(so.prompt_logprobs, p.echo_logprobs ? so.logprobs : -1) : -1;
    a.sink = c.s;
    a.arrival = arrival;
    if (!p.stream && env.cfg.server.request_timeout_s > 0) {
      a.deadline = arrival + std::chrono::seconds(env.cfg.server.request_timeout_s);
    }
    a.prompt_param = chat ? "messages" : "prompt";
  }
  awaitable<std::variant<std::vector<RequestTable::Admitted>, api::ApiError>> admit =
      env.control.AdmitChoices(std::move(admissions));
  std::variant<std::vector<RequestTable::Admitted>, api::ApiError> admitted = co_await std::move(admit);
  if (auto* e = std::get_if<api::ApiError>(&admitted)) co_return co_await WriteError(x.stream, req, *e);
  for (size_t i = 0; i < choices.size(); ++i) choices[i].s->id = std::get<std::vector<RequestTable::Admitted>>(admitted)[i].id;
  TokenStream& first = *choices[0].s;

  auto watch = std::make_shared<DisconnectWatch>(x.stream, [&env, end_all] {
    env.metrics.counter("shoal_requests_client_gone_total", "Requests abandoned because the client disconnected").Inc();
    end_all("cancelled");
  });
  watch->Start();
  const std::string api_id = (chat ? "chatcmpl-" : "cmpl-") + RandomHex(24);
  const int64_t created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto usage = [&] {
    int64_t completion = 0;
    for (const Choice& c : choices) completion += static_cast<int64_t>(c.s->output_ids.size());
    return api::Usage{static_cast<int64_t>(p.prompt.size()), completion};
  };
  const std::vector<int32_t>* prompt_ids = p.return_token_ids ? &p.prompt : nullptr;
  // Logprobs: each token's text as the tokenizer decodes it alone; completions' text_offset runs on.
  const Tokenizer& tok = *env.model.tokenizer;
  const std::function<std::string(int32_t)> token_bytes = [&tok](int32_t id) {
    const int32_t one[] = {id};
    StatusOr<std::string> b = tok.Decode(one, /*skip_special_tokens=*/false);
    return b.ok() ? *b : std::string();
  };
  const std::function<std::string()> new_tool_id = [] { return "chatcmpl-tool-" + RandomHex(32); };
  auto take_logprobs = [&](Choice& c, std::vector<api::TokenLogprob>* from) {
    std::string j;
    if (so.logprobs >= 0 && !from->empty()) j = api::LogprobsJson(chat, *from, token_bytes, &c.text_offset);
    from->clear();
    return j;
  };
  // The prompt's logprobs as asked for (the worker computed max(prompt_logprobs, echo's logprobs)
  // alternatives): `k` alternatives each; with `lead`, the first prompt token leads, with none.
  auto prompt_entries = [&](int k, bool lead) {
    std::vector<api::TokenLogprob> v;
    if (lead) v.push_back(api::TokenLogprob{p.prompt.front(), 0, {}, {}, 0, /*none=*/true});
    for (const api::TokenLogprob& e : first.prompt_logprobs) {
      v.push_back(e);
      const auto n = std::min(v.back().top_ids.size(), static_cast<size_t>(k));
      v.back().top_ids.resize(n);
      v.back().top_logprobs.resize(n);
    }
    return v;
  };
  auto prompt_logprobs_done = [&] { return first.prompt_logprobs.size() + 1 >= p.prompt.size(); };
  // Every stream's news; true once every choice is done. The first error ends the others.
  const TokenStream* failed = nullptr;
  auto process_all = [&] {
    bool all_done = true;
    for (Choice& c : choices) {
      c.s->Process();
      ReportEndedHere(env, *c.s);
      if (c.s->error && failed == nullptr) failed = c.s.get();
      all_done = all_done && c.s->done;
    }
    if (failed != nullptr && !all_done) {
      end_all("cancelled");
      all_done = true;
    }
    return all_done;
  };
  auto client_gone = [&] {
    for (const Choice& c : choices) {
      if (c.s->finish_reason == "cancelled" && failed == nullptr) return true;
    }
    return false;
  };

  if (!p.stream) {
    while (true) {
      co_await wakeup->Wait();
      if (process_all()) break;
    }
    watch->Stop();
    if (failed != nullptr) co_return co_await WriteError(x.stream, req, *failed->error);
    if (client_gone()) co_return false;
    const bool reasoning_on = env.model.reasoning != ReasoningFormat::kNone;
    const std::string prompt_logprobs =
        so.prompt_logprobs >= 0 ? api::PromptLogprobsJson(prompt_entries(so.prompt_logprobs, false), token_bytes) : "";
    const std::string* plp = so.prompt_logprobs >= 0 ? &prompt_logprobs : nullptr;
    // Kept alive for the responses' pointers.
    std::vector<ChatOutputParser::Piece> pieces(choices.size());
    std::vector<nlohmann::ordered_json> calls(choices.size());
    std::vector<std::string> logprobs(choices.size());
    std::vector<api::ResponseChoice> out(choices.size());
    for (size_t i = 0; i < choices.size(); ++i) {
      Choice& c = choices[i];
      TokenStream& s = *c.s;
      const bool split = chat && c.parser->active();
      if (split) pieces[i] = c.parser->Feed(s.text, /*last=*/true);
      calls[i] = ToolCallsJson(pieces[i].calls, /*with_index=*/false, new_tool_id);
      if (p.echo_logprobs) {
        std::vector<api::TokenLogprob> all = prompt_entries(so.logprobs, /*lead=*/true);
        all.insert(all.end(), s.logprobs.begin(), s.logprobs.end());
        s.logprobs = std::move(all);
      }
      logprobs[i] = take_logprobs(c, &s.logprobs);
      if (so.logprobs >= 0 && logprobs[i].empty()) {
        logprobs[i] = chat ? R"({"content":[]})" : api::LogprobsJson(false, {}, token_bytes, &c.text_offset);
      }
      api::ResponseChoice& r = out[i];
      r.text = chat ? (split ? pieces[i].content : s.text) : p.echo + s.text;
      r.finish_reason = chat && c.parser->saw_calls() ? "tool_calls" : s.finish_reason;
      bool forced_calls = false;
      if (c.forced) {
        std::vector<ForcedToolCallReader::Delta> ignored;
        c.forced->Feed(s.text, &ignored);
        // Whole calls become tool_calls; a text cut short (max_tokens) stays content, nothing lost.
        forced_calls = c.forced->complete() && !c.forced->calls().empty();
        if (forced_calls) {
          calls[i] = ToolCallsJson(c.forced->calls(), /*with_index=*/false, new_tool_id);
          r.text.clear();
        }
        r.finish_reason = ForcedFinishReason(p.forced, *c.forced, s.finish_reason);
      }
      r.token_ids = p.return_token_ids ? &s.output_ids : nullptr;
      r.logprobs_json = so.logprobs >= 0 ? &logprobs[i] : nullptr;
      r.reasoning = chat && reasoning_on ? &pieces[i].reasoning : nullptr;
      r.tool_calls = chat && (c.parser->saw_calls() || forced_calls) ? &calls[i] : nullptr;
      r.prompt_logprobs_json = chat ? nullptr : plp;
    }
    std::string body = chat ? api::ChatResponse(api_id, created, env.model.name, out, usage(), prompt_ids, plp)
                            : api::CompletionResponse(api_id, created, env.model.name, out, usage(), prompt_ids);
    co_return co_await WriteResponse(x.stream, req, http::status::ok, "application/json", std::move(body), kNoHeaders);
  }

  // Streaming: SSE over a chunked response. Each wake-up's news goes out as one write (a chunk per
  // choice with news), so a client gets one write per batch of tokens however many the batch holds.
  http::response<http::empty_body> head = StreamHead(req);
  http::response_serializer<http::empty_body> sr{head};
  boost::system::error_code ec;
  x.stream.expires_after(kWriteTimeout);
  co_await http::async_write_header(x.stream, sr, asio::redirect_error(use_awaitable, ec));
  x.stream.expires_never();
  bool alive = !ec;
  api::StreamWriter writer(api::StreamContext{
      chat ? api::StreamContext::Endpoint::kChat : api::StreamContext::Endpoint::kCompletion, api_id, created,
      env.model.name, p.include_usage});
  std::string out;
  out.reserve(1024);
  // Completions' echo: the prompt's text is each choice's first chunk — with logprobs, once the
  // prompt's have come (they precede the first token).
  auto send_echo = [&](Choice& c) {
    const std::string lp =
        p.echo_logprobs ? api::LogprobsJson(false, prompt_entries(so.logprobs, true), token_bytes, &c.text_offset) : "";
    writer.Content(&out, p.echo, "", nullptr, c.prompt_ids_pending ? prompt_ids : nullptr, lp);
    c.prompt_ids_pending = false;
    c.echo_pending = false;
  };
  for (size_t i = 0; i < choices.size(); ++i) {
    Choice& c = choices[i];
    writer.set_choice(static_cast<int>(i));
    // Chat sends each choice's role first (the prompt's ids with the first); completions put them in
    // each choice's first content chunk.
    if (chat) writer.Role(&out, i == 0 ? prompt_ids : nullptr);
    c.prompt_ids_pending = !chat && prompt_ids != nullptr;
    c.echo_pending = !p.echo.empty() || p.echo_logprobs;
    if (c.echo_pending && !p.echo_logprobs) send_echo(c);
  }
  // With a reasoning or tool-call parser, a chat's text becomes reasoning_content, content and
  // tool_calls deltas.
  auto emit_split = [&](Choice& c, bool last) {
    TokenStream& s = *c.s;
    ChatOutputParser::Piece piece = c.parser->Feed(s.text, last, /*stream=*/true);
    const std::vector<int32_t>* ids = p.return_token_ids && !s.chunk_ids.empty() ? &s.chunk_ids : nullptr;
    const std::string lp = take_logprobs(c, &s.logprobs);
    // Token ids and logprobs ride on the batch's reasoning or content chunk.
    const bool content_chunk = !piece.content.empty() || (piece.reasoning.empty() && (ids != nullptr || !lp.empty()));
    if (!piece.reasoning.empty()) {
      writer.Reasoning(&out, piece.reasoning, content_chunk ? nullptr : ids, content_chunk ? "" : lp);
    }
    if (content_chunk) writer.Content(&out, piece.content, "", ids, nullptr, lp);
    // Streamed calls' pieces and whole calls, in call order, as one tool_calls delta.
    for (ToolCall& call : piece.calls) {
      piece.deltas.push_back(ToolCallDelta{call.index, true, std::move(call.name), std::move(call.arguments)});
    }
    std::stable_sort(piece.deltas.begin(), piece.deltas.end(),
                     [](const ToolCallDelta& a, const ToolCallDelta& b) { return a.index < b.index; });
    if (!piece.deltas.empty()) writer.ToolCalls(&out, ToolCallDeltasJson(piece.deltas, new_tool_id).dump());
    s.text.clear();
    s.chunk_ids.clear();
  };
  // A forced call's news: tool_calls deltas as its arguments arrive; token ids and logprobs on an
  // empty content chunk.
  auto emit_forced = [&](Choice& c) {
    TokenStream& s = *c.s;
    std::vector<ForcedToolCallReader::Delta> deltas;
    c.forced->Feed(s.text, &deltas);
    const std::string lp = take_logprobs(c, &s.logprobs);
    const std::vector<int32_t>* ids = p.return_token_ids && !s.chunk_ids.empty() ? &s.chunk_ids : nullptr;
    if (ids != nullptr || !lp.empty()) writer.Content(&out, "", "", ids, nullptr, lp);
    if (!deltas.empty()) writer.ToolCalls(&out, ToolCallDeltasJson(deltas, new_tool_id).dump());
    s.text.clear();
    s.chunk_ids.clear();
  };
  // A choice's news as chunks; its finish chunk once it is done.
  auto emit = [&](Choice& c, size_t index) {
    if (c.finish_sent) return;  // ended: its parser was flushed once, nothing more goes out for it
    TokenStream& s = *c.s;
    writer.set_choice(static_cast<int>(index));
    if (c.echo_pending) {
      if (!prompt_logprobs_done() && !first.done) return;
      if (failed == nullptr) send_echo(c);
    }
    if (c.forced) {
      emit_forced(c);
    } else if (chat && c.parser->active()) {
      emit_split(c, s.done);
    } else if (!s.text.empty() || (p.return_token_ids && !s.chunk_ids.empty()) || !s.logprobs.empty()) {
      const std::string lp = take_logprobs(c, &s.logprobs);
      writer.Content(&out, s.text, "", p.return_token_ids ? &s.chunk_ids : nullptr,
                     c.prompt_ids_pending ? prompt_ids : nullptr, lp);
      c.prompt_ids_pending = false;
      s.text.clear();
      s.chunk_ids.clear();
    }
    if (s.done && !c.finish_sent && failed == nullptr && s.finish_reason != "cancelled") {
      writer.Finish(&out, c.forced ? ForcedFinishReason(p.forced, *c.forced, s.finish_reason)
                                   : c.parser->saw_calls() ? "tool_calls" : s.finish_reason);
      c.finish_sent = true;
    }
  };
  bool all_done = false;
  while (alive) {
    if (!out.empty()) {
      alive = co_await WriteChunk(x.stream, out);
      out.clear();
      if (!alive) break;
    }
    if (all_done) break;
    co_await wakeup->Wait();
    all_done = process_all();
    for (size_t i = 0; i < choices.size() && failed == nullptr; ++i) emit(choices[i], i);
  }
  watch->Stop();
  if (!alive || client_gone()) {
    // The client went away (mid-write, or its watch saw it): the ranks drop the requests.
    end_all("cancelled");
    co_return false;
  }
  out.clear();
  if (failed != nullptr) {
    out += api::ErrorEvent(*failed->error);
  } else if (p.include_usage) {
    writer.UsageChunk(&out, usage());
  }
  out += api::kDoneEvent;
  co_return co_await WriteChunk(x.stream, out, /*last=*/true);
}

}  // namespace

std::variant<std::vector<int32_t>, api::ApiError> ChatPromptIds(const ServedModel& m, const api::ChatRequest& cr) {
  if (!m.chat_template) {
    return BadRequest("model " + m.name + " has no chat template (tokenizer_config.json chat_template); "
                      "use /v1/completions");
  }
  ChatTemplateOptions o;
  o.add_generation_prompt = cr.add_generation_prompt;
  o.bos_token = m.bos_token;
  o.eos_token = m.eos_token;
  o.tools = cr.tools;
  o.extra = cr.chat_template_kwargs;
  StatusOr<std::string> rendered = RenderChatTemplate(*m.chat_template, cr.messages, o);
  // A template that raises (say, roles that do not alternate) is about the client's messages.
  if (!rendered.ok()) return BadRequest(rendered.status().message(), "messages");
  StatusOr<std::vector<int32_t>> ids = m.tokenizer->Encode(*rendered, /*add_special_tokens=*/false);
  if (!ids.ok()) return BadRequest(ids.status().message(), "messages");
  return std::move(*ids);
}

awaitable<bool> HandleCompletion(HandlerEnv& env, Exchange& x) { return Generate(env, x, /*chat=*/false); }
awaitable<bool> HandleChatCompletion(HandlerEnv& env, Exchange& x) { return Generate(env, x, /*chat=*/true); }

}  // namespace shoal::coord
