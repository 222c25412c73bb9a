// Coordinator set-up (tokenizer, chat template, model limits, listening sockets), Run and Stop.
#include "coordinator/coordinator.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "coordinator/state.h"
#include "model/model_config.h"

namespace shoal {

using namespace coord;

namespace coord {

awaitable<void> AcceptBackoff(asio::io_context& io, int* delay_ms, const char* listener,
                              const boost::system::error_code& ec) {
  if (*delay_ms == 0) {
    log::Warn("accepting %s connections failed (%s); retrying with back-off", listener,
                 ec.message().c_str());
  }
  *delay_ms = *delay_ms == 0 ? 10 : std::min(*delay_ms * 2, 1000);
  asio::steady_timer t(io, std::chrono::milliseconds(*delay_ms));
  boost::system::error_code ignored;
  co_await t.async_wait(asio::redirect_error(use_awaitable, ignored));
}

}  // namespace coord

namespace {

// EOS ids from config.json and generation_config.json (an int or a list in either), so generation
// stops where transformers' generate() would.
void AddEosIds(const std::string& path, std::vector<int32_t>* ids) {
  std::ifstream in(path);
  if (!in) return;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("eos_token_id")) return;
  auto add = [&](const nlohmann::json& v) {
    if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (1 << 30)) {
      const int32_t id = v.get<int32_t>();
      if (std::find(ids->begin(), ids->end(), id) == ids->end()) ids->push_back(id);
    }
  };
  const auto& e = j["eos_token_id"];
  if (e.is_array()) {
    for (const auto& v : e) add(v);
  } else {
    add(e);
  }
}

StatusOr<tcp::acceptor*> Bind(tcp::acceptor& a, const std::string& host, int port, const char* what) {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument(std::string(what) + ": '" + host + "' is not an IP address");
  const tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable(std::string(what) + ": cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  return &a;
}

}  // namespace

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;

StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const EngineConfig& cfg) {
  auto c = std::make_unique<Impl>();
  c->cfg = cfg;
  c->rendezvous = coord::RendezvousTable(std::chrono::seconds(cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s : 600));
  // Every connection is a descriptor: take the hard limit (the soft one is often 1024) so the
  // connection caps, not the process limit, decide when clients are turned away.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    rlimit raised = nofile;
    raised.rlim_cur = nofile.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) nofile = raised;
  }
  // Each parked rank holds a descriptor until its rank 0 posts: at most half of what the process may
  // open, so parked ranks cannot starve the HTTP and control listeners.
  if (nofile.rlim_cur != 0 && nofile.rlim_cur != RLIM_INFINITY) {
    c->rendezvous_parked_limit = std::max<size_t>(16, static_cast<size_t>(nofile.rlim_cur) / 2);
  }
  if (cfg.model_path.empty()) return InvalidArgument("no model: the config needs model.path (or pass --model)");
  c->model_name = ServedModelName(cfg);
  SHOAL_ASSIGN_OR_RETURN(ModelConfig mc, LoadModelConfig(cfg.model_path));
  c->max_context = mc.max_position_embeddings;
  c->model_vocab = mc.vocab_size;
  SHOAL_ASSIGN_OR_RETURN(c->tokenizer, Tokenizer::Load(cfg.model_path));
  if (c->tokenizer->vocab_size() > c->model_vocab) {
    return InvalidArgument(cfg.model_path + ": the tokenizer has " + std::to_string(c->tokenizer->vocab_size()) +
                           " tokens, more than the model's vocab_size " + std::to_string(c->model_vocab));
  }
  if (!c->tokenizer->chat_template().empty()) {
    // Named without the directory: template errors (raise_exception) go back to clients.
    auto parsed = jinja::Template::Parse(c->tokenizer->chat_template(), "chat_template");
    if (!parsed.ok()) return parsed.status().WithContext(cfg.model_path + "/tokenizer_config.json");
    c->chat_template = std::move(*parsed);
  }
  c->bos_token = c->tokenizer->bos_token().value_or("");
  c->eos_token = c->tokenizer->eos_token().value_or("");
  AddEosIds(cfg.model_path + "/generation_config.json", &c->eos_ids);
  AddEosIds(cfg.model_path + "/config.json", &c->eos_ids);
  if (!c->eos_token.empty()) {
    if (auto id = c->tokenizer->TokenId(c->eos_token); id && std::find(c->eos_ids.begin(), c->eos_ids.end(), *id) == c->eos_ids.end()) {
      c->eos_ids.push_back(*id);
    }
  }
  c->api_keys = cfg.server.api_keys;
  c->control_token = cfg.server.control_token;
  if (const char* t = std::getenv("SHOAL_CONTROL_TOKEN"); t != nullptr && *t != '\0') c->control_token = t;
  {
    boost::system::error_code ec;
    const auto addr = asio::ip::make_address(cfg.server.control_host, ec);
    if (!ec && !addr.is_loopback() && c->control_token.empty()) {
      return InvalidArgument("server.control_host " + cfg.server.control_host +
                             " is reachable from other machines: set SHOAL_CONTROL_TOKEN (or server.control_token) "
                             "so that only your workers can join and receive prompts");
    }
  }
  if (const char* k = std::getenv("SHOAL_API_KEY"); k != nullptr && *k != '\0') c->api_keys.emplace_back(k);
  c->created_unix = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  SHOAL_RETURN_IF_ERROR(Bind(c->http_acceptor, cfg.server.host, cfg.server.port, "server.host/port").status());
  SHOAL_RETURN_IF_ERROR(
      Bind(c->control_acceptor, cfg.server.control_host, cfg.server.control_port, "server.control_host/control_port").status());
  c->metrics.gauge("shoal_ready_groups", "Engine groups complete and healthy").Set(0);
  c->RegisterHotMetrics();
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(c)));
}

int Coordinator::http_port() const { return impl_->http_acceptor.local_endpoint().port(); }
int Coordinator::control_port() const { return impl_->control_acceptor.local_endpoint().port(); }
const std::string& Coordinator::model_name() const { return impl_->model_name; }

bool Coordinator::ReadyGroups(int groups) const {
  // Read from other threads: the atomics UpdateReady keeps, not the group map.
  return impl_->ready_groups.load() >= groups && impl_->known_groups.load() == impl_->ready_groups.load();
}

Status Coordinator::Run() {
  Impl& c = *impl_;
  asio::co_spawn(c.io, c.AcceptHttp(), asio::detached);
  asio::co_spawn(c.io, c.AcceptWorkers(), asio::detached);
  asio::co_spawn(c.io, c.Watchdog(), asio::detached);
  c.io.run();
  return Status::Ok();
}

void Coordinator::Stop(int64_t grace_ms) {
  asio::post(impl_->io, [c = impl_.get(), grace_ms] { c->BeginStop(grace_ms); });
}

void Coordinator::Impl::BeginStop(int64_t grace_ms) {
  if (stopping) return;
  stopping = true;
  boost::system::error_code ignored;
  http_acceptor.close(ignored);
  control_acceptor.close(ignored);
  // Ranks parked in a rendezvous wake up, see `stopping` and are refused.
  std::vector<std::string> waiting;
  for (const auto& [group, timers] : rendezvous_waiters) waiting.push_back(group);
  for (const std::string& group : waiting) WakeRendezvous(group);
  // In-flight requests end now with an explicit error; the workers free them when they stop.
  std::vector<std::shared_ptr<RequestState>> live;
  for (const auto& [id, r] : requests) live.push_back(r);
  for (const auto& r : live) {
    Finish(*r, "error", api::ApiError{503, "the server is shutting down", "server_error", "", "service_unavailable"});
  }
  for (auto& [name, g] : groups) {
    for (const auto& r : g.ranks) {
      if (r && !r->dead) Send(r, control::Shutdown{});
    }
  }
  // Give the workers until grace_ms to say Bye, then stop the loop regardless.
  StopWhenWorkersGone(std::make_shared<asio::steady_timer>(io), grace_ms);
}

void Coordinator::Impl::StopWhenWorkersGone(std::shared_ptr<asio::steady_timer> timer, int64_t left_ms) {
  bool all_gone = rendezvous_sessions == 0;  // woken parked ranks still have their refusal to write
  for (const auto& [name, g] : groups) {
    for (const auto& r : g.ranks) all_gone = all_gone && (!r || r->dead);
  }
  if (all_gone || left_ms <= 0) {
    io.stop();
    return;
  }
  timer->expires_after(std::chrono::milliseconds(50));
  timer->async_wait([this, timer, left_ms](const boost::system::error_code&) { StopWhenWorkersGone(timer, left_ms - 50); });
}

}  // namespace shoal
