#include "loadgen/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <random>

#include "coordinator/asio.h"

namespace shoal::loadgen {

using namespace shoal::coord;  // asio, beast, http, tcp, awaitable
using Clock = std::chrono::steady_clock;

std::vector<WorkloadRequest> RandomWorkload(int num, int input_len, int output_len, double range_ratio, int vocab,
                                            int first_id, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto around = [&](int len) {
    const int lo = std::max(1, static_cast<int>(len * (1 - range_ratio))), hi = std::max(lo, static_cast<int>(len * (1 + range_ratio)));
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  std::uniform_int_distribution<int> id(std::min(first_id, vocab - 1), vocab - 1);
  std::vector<WorkloadRequest> out(static_cast<size_t>(std::max(num, 0)));
  for (WorkloadRequest& r : out) {
    r.prompt_ids.resize(static_cast<size_t>(around(input_len)));
    for (int32_t& t : r.prompt_ids) t = id(rng);
    r.prompt_len = static_cast<int64_t>(r.prompt_ids.size());
    r.output_len = around(output_len);
  }
  return out;
}

StatusOr<std::vector<WorkloadRequest>> ShareGptWorkload(const std::string& path, int num, uint64_t seed,
                                                         int64_t max_len,
                                                         int64_t (*count_tokens)(const std::string&, void*),
                                                         void* tokenizer) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open the dataset");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) return InvalidArgument(path + ": not a ShareGPT JSON list of conversations");
  auto tokens = [&](const std::string& s) {
    return count_tokens != nullptr ? count_tokens(s, tokenizer) : std::max<int64_t>(1, static_cast<int64_t>(s.size() / 4));
  };
  std::vector<WorkloadRequest> all;
  for (const auto& item : j) {
    if (!item.is_object() || !item.contains("conversations") || !item["conversations"].is_array()) continue;
    const auto& conv = item["conversations"];
    if (conv.size() < 2 || !conv[0].is_object() || !conv[1].is_object()) continue;
    const auto& q = conv[0], a = conv[1];
    if (!q.contains("value") || !a.contains("value") || !q["value"].is_string() || !a["value"].is_string()) continue;
    WorkloadRequest r;
    r.prompt_text = q["value"].get<std::string>();
    r.prompt_len = tokens(r.prompt_text);
    r.output_len = static_cast<int>(std::min<int64_t>(tokens(a["value"].get<std::string>()), 1 << 20));
    // vLLM's filter: skip very short ones, and ones longer than the model takes.
    if (r.prompt_len < 4 || r.output_len < 4 || r.prompt_len > max_len / 2 || r.prompt_len + r.output_len > max_len) continue;
    all.push_back(std::move(r));
  }
  if (all.empty()) return InvalidArgument(path + ": no usable conversations (need a human turn and a reply)");
  std::mt19937_64 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  if (static_cast<int>(all.size()) > num) all.resize(static_cast<size_t>(num));
  return all;
}

namespace {

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Run {
  asio::io_context io;
  const LoadSpec& spec;
  const std::vector<WorkloadRequest>& work;
  std::vector<RequestOutcome> outcomes;
  tcp::resolver::results_type endpoints;
  Clock::time_point t0;
  int in_flight = 0, done = 0;
  double last_end = 0;
  std::vector<std::shared_ptr<asio::steady_timer>> waiting;  // for a concurrency slot

  Run(const LoadSpec& s, const std::vector<WorkloadRequest>& w) : spec(s), work(w), outcomes(w.size()) {}

  std::string Body(const WorkloadRequest& r) const {
    nlohmann::ordered_json j;
    if (!spec.model.empty()) j["model"] = spec.model;
    if (spec.chat) {
      j["messages"] = nlohmann::ordered_json::array({{{"role", "user"}, {"content", r.prompt_text}}});
    } else if (!r.prompt_ids.empty()) {
      j["prompt"] = r.prompt_ids;
    } else {
      j["prompt"] = r.prompt_text;
    }
    j["max_tokens"] = r.output_len;
    j["temperature"] = 0;
    j["ignore_eos"] = true;  // vLLM and shoal: the output is exactly as long as asked
    j["stream"] = true;
    j["stream_options"] = {{"include_usage", true}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  double last_progress = -1;
  void Progress() {
    if (!spec.progress) return;
    const int n = static_cast<int>(work.size()), width = 40;
    // Redrawn at most ten times a second (and at the end), so logs of long runs stay short.
    if (done != n && last_progress >= 0 && Since(t0) - last_progress < 0.1) return;
    last_progress = Since(t0);
    const int filled = n > 0 ? width * done / n : width;
    std::fprintf(stderr, "\r[%s%s] %d/%d  %.1f s", std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(width - filled), ' ').c_str(), done, n, Since(t0));
    if (done == n) std::fprintf(stderr, "\n");
  }

  // Parses complete SSE events from `buf`; returns false at an error event.
  bool Events(std::string& buf, RequestOutcome& o, double sent, double* last_chunk, bool* finished) {
    size_t end;
    while ((end = buf.find("\n\n")) != std::string::npos) {
      std::string ev = buf.substr(0, end);
      buf.erase(0, end + 2);
      if (ev.rfind("data: ", 0) != 0) continue;
      const std::string data = ev.substr(6);
      if (data == "[DONE]") {
        *finished = true;
        continue;
      }
      nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
      if (!j.is_object()) continue;
      if (j.contains("error")) {
        o.error = j["error"].is_object() && j["error"].contains("message") ? j["error"]["message"].dump() : data;
        return false;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        const auto& u = j["usage"];
        if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
          o.output_tokens = u["completion_tokens"].get<int64_t>();
        }
        if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) {
          o.prompt_tokens = u["prompt_tokens"].get<int64_t>();
        }
      }
      if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) continue;
      const auto& c = j["choices"][0];
      std::string text;
      if (c.contains("text") && c["text"].is_string()) text = c["text"].get<std::string>();
      if (c.contains("delta") && c["delta"].is_object() && c["delta"].contains("content") && c["delta"]["content"].is_string()) {
        text = c["delta"]["content"].get<std::string>();
      }
      if (text.empty()) continue;  // role chunks and the final empty chunk carry no token
      const double now = Since(t0);
      if (*last_chunk < 0) {
        o.ttft = now - sent;
      } else {
        o.itl.push_back(now - *last_chunk);
      }
      *last_chunk = now;
    }
    return true;
  }

  awaitable<void> One(size_t i) {
    RequestOutcome& o = outcomes[i];
    const WorkloadRequest& r = work[i];
    o.prompt_tokens = r.prompt_len;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(spec.request_timeout_s)));
    boost::system::error_code ec;
    const double sent = Since(t0);
    o.start = sent;
    co_await stream.async_connect(endpoints, asio::redirect_error(use_awaitable, ec));
    http::request<http::string_body> req{http::verb::post, spec.chat ? "/v1/chat/completions" : "/v1/completions", 11};
    req.set(http::field::host, spec.host);
    req.set(http::field::content_type, "application/json");
    if (!spec.api_key.empty()) req.set(http::field::authorization, "Bearer " + spec.api_key);
    req.body() = Body(r);
    req.prepare_payload();
    if (!ec) co_await http::async_write(stream, req, asio::redirect_error(use_awaitable, ec));
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!ec) co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec) o.error = "connection: " + ec.message();
    const bool ok_status = !ec && parser.get().result_int() == 200;
    std::string sse;
    double last_chunk = -1;
    bool finished = false;
    char chunk[16384];
    while ((o.error.empty() || !ok_status) && !ec && !parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof(chunk);
      co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec && ec != http::error::end_of_stream) {
        o.error = "reading the stream: " + ec.message();
        break;
      }
      sse.append(chunk, sizeof(chunk) - parser.get().body().size);
      if (!ok_status) continue;  // collect the error body
      if (!Events(sse, o, sent, &last_chunk, &finished)) break;
      if (ec) break;
    }
    if (!ec && !ok_status && o.error.empty()) {
      // The OpenAI error body says why (context too long, bad key, ...).
      nlohmann::json j = nlohmann::json::parse(sse, nullptr, false);
      o.error = "HTTP " + std::to_string(parser.get().result_int()) +
                (j.is_object() && j.contains("error") ? ": " + j["error"].value("message", std::string()) : "");
    }
    if (o.error.empty() && !finished) o.error = "the stream ended without data: [DONE]";
    if (o.error.empty() && last_chunk < 0) o.error = "no tokens streamed";
    o.e2e = Since(t0) - sent;
    if (o.output_tokens == 0) o.output_tokens = static_cast<int64_t>(o.itl.size()) + (last_chunk >= 0 ? 1 : 0);
    o.ok = o.error.empty();
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    last_end = std::max(last_end, Since(t0));
    ++done;
    --in_flight;
    Progress();
    if (!waiting.empty()) {  // hand the slot to the next request
      waiting.front()->cancel();
      waiting.erase(waiting.begin());
    }
  }

  awaitable<void> Dispatch() {
    std::mt19937_64 rng(spec.seed ^ 0x5eedULL);
    const bool paced = std::isfinite(spec.request_rate) && spec.request_rate > 0;
    // Gamma inter-arrivals with mean 1/rate: shape = burstiness (1 = exponential, i.e. Poisson).
    std::gamma_distribution<double> gap(spec.burstiness, paced ? 1.0 / (spec.request_rate * spec.burstiness) : 1.0);
    asio::steady_timer timer(io);
    double next = 0;
    for (size_t i = 0; i < work.size(); ++i) {
      if (paced && i > 0) {
        next += gap(rng);
        timer.expires_at(t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(next)));
        boost::system::error_code ec;
        co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
      }
      while (spec.max_concurrency > 0 && in_flight >= spec.max_concurrency) {
        auto slot = std::make_shared<asio::steady_timer>(io, Clock::time_point::max());
        waiting.push_back(slot);
        boost::system::error_code ec;
        co_await slot->async_wait(asio::redirect_error(use_awaitable, ec));
      }
      ++in_flight;
      asio::co_spawn(io, One(i), asio::detached);
    }
  }
};

}  // namespace

std::vector<RequestOutcome> RunLoad(const LoadSpec& spec, const std::vector<WorkloadRequest>& work, double* duration_s) {
  Run run(spec, work);
  boost::system::error_code ec;
  tcp::resolver resolver(run.io);
  run.endpoints = resolver.resolve(spec.host, std::to_string(spec.port), ec);
  if (ec) {
    for (RequestOutcome& o : run.outcomes) o.error = "resolving " + spec.host + ": " + ec.message();
    *duration_s = 0;
    return run.outcomes;
  }
  run.t0 = Clock::now();
  run.Progress();
  asio::co_spawn(run.io, run.Dispatch(), asio::detached);
  run.io.run();
  *duration_s = run.last_end;
  return std::move(run.outcomes);
}

}  // namespace shoal::loadgen
