#include "coordinator/control_plane.h"

#include <sys/resource.h>

#include <algorithm>
#include <deque>

#include "common/log.h"
#include "control/wire.h"
#include "coordinator/net_util.h"
#include "coordinator/worker_link.h"

namespace shoal::coord {

namespace {

// Handshakes in progress at once: each may hold a first frame of up to kMaxHandshakePayloadBytes
// before its secret is checked.
constexpr int kMaxPendingHandshakes = 128;

}  // namespace

ControlPlane::ControlPlane(const EngineConfig& cfg, const ServedModel& model, std::string control_token,
                           Metrics& metrics, Delivery& delivery)
    : cfg_(cfg),
      model_(model),
      control_token_(std::move(control_token)),
      metrics_(metrics),
      cluster_({model.name, model.vocab, control_token_, cfg.cluster.groups, cfg.server.max_queued_requests,
                model.num_layers, model.num_experts, cfg.server.expert_load_window_s, model.layer_is_moe,
                model.expert_groups, cfg.redundant_experts, cfg.server.rebalance_threshold,
                cfg.server.rebalance_interval_s, cfg.server.rebalance_min_tokens, cfg.server.rebalance_min_gain},
               metrics),
      table_({model.max_context, model.vocab, model.eos_ids, cfg.server.migration_timeout_s}, cluster_, delivery, metrics),
      rendezvous_(std::chrono::seconds(cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s : 600)) {}

ControlPlane::~ControlPlane() = default;

Status ControlPlane::Bind() {
  // Each parked rendezvous holds a descriptor until its rank 0 posts: at most half of what the
  // process may open, so parked ranks cannot starve the listeners.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY && nofile.rlim_cur != 0) {
    rendezvous_parked_limit_ = std::max<size_t>(16, static_cast<size_t>(nofile.rlim_cur) / 2);
  }
  return BindAcceptor(acceptor_, cfg_.server.control_host, cfg_.server.control_port, "server.control_host/control_port");
}

int ControlPlane::port() const { return acceptor_.local_endpoint().port(); }

void ControlPlane::Start() {
  asio::co_spawn(io_, AcceptLoop(), asio::detached);
  asio::co_spawn(io_, Watchdog(), asio::detached);
}

awaitable<void> ControlPlane::AcceptLoop() {
  int backoff_ms = 0;
  while (!stopping_) {
    boost::system::error_code ec;
    tcp::socket s = co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) co_return;
      co_await AcceptBackoff(io_, &backoff_ms, "control", ec);  // EMFILE would otherwise spin
      continue;
    }
    backoff_ms = 0;
    s.set_option(tcp::no_delay(true), ec);
    if (connections_.load() >= cfg_.server.max_control_connections || pending_handshakes_ >= kMaxPendingHandshakes) {
      log::Warn("refused a control connection from %s: %s", PeerName(s).c_str(),
                pending_handshakes_ >= kMaxPendingHandshakes ? "too many handshakes in progress"
                                                             : "server.max_control_connections reached");
      s.close(ec);
      continue;
    }
    asio::co_spawn(io_, Session(std::make_shared<WorkerLink>(*this, std::move(s))), asio::detached);
  }
}

awaitable<void> ControlPlane::Session(std::shared_ptr<WorkerLink> link) {
  const ConnectionCount counted(&connections_);
  const std::string peer = PeerName(link->socket());
  // The handshake must come promptly: a silent connection is not allowed to hold a slot.
  asio::steady_timer hello_timer(io_, std::chrono::seconds(10));
  hello_timer.async_wait([link](const boost::system::error_code& ec) {
    if (!ec && !link->joined()) link->Close();
  });
  ++pending_handshakes_;
  StatusOr<control::Message> first = co_await ReadFrame(link->socket(), /*first=*/true);
  --pending_handshakes_;
  hello_timer.cancel();
  std::string refusal;
  if (!first.ok()) {
    // A peer that closed says nothing more; any other bad first frame (another protocol version, a
    // wrong type, too large) gets a Reject it can show, and a log line here.
    if (first.status().code() == StatusCode::kUnavailable) co_return;
    refusal = first.status().message();
  } else if (auto* rv = std::get_if<control::Rendezvous>(&*first)) {
    // Made outside the co_await expression (GCC 12 and temporaries there).
    awaitable<void> session = RendezvousSession(link, std::move(*rv));
    co_await std::move(session);
    co_return;
  }
  std::shared_ptr<Rank> rank;
  if (refusal.empty()) {
    StatusOr<std::shared_ptr<Rank>> joined =
        cluster_.Join(std::get<control::Hello>(*first), link, Clock::now(), stopping_.load());
    if (joined.ok()) rank = std::move(*joined);
    else refusal = joined.status().message();
  }
  if (!rank) {
    log::Warn("rejected a worker from %s: %s", peer.c_str(), refusal.c_str());
    const std::string frame = control::EncodeFrame(control::Reject{refusal});
    boost::system::error_code ec;
    co_await asio::async_write(link->socket(), asio::buffer(frame), asio::redirect_error(use_awaitable, ec));
    co_return;
  }
  link->Joined(rank);
  link->Send(control::Welcome{rank->incarnation, static_cast<uint32_t>(cfg_.server.heartbeat_ms)});

  while (!rank->dead) {
    StatusOr<control::Message> m = co_await ReadFrame(link->socket());
    if (rank->dead) break;
    if (!m.ok()) {
      RankFailed(rank, m.status().message());
      break;
    }
    const auto now = Clock::now();
    cluster_.Heard(*rank, now);
    if (auto* t = std::get_if<control::Tokens>(&*m)) {
      table_.OnTokens(*rank, *t, now);
    } else if (auto* hb = std::get_if<control::Heartbeat>(&*m)) {
      cluster_.OnHeartbeat(*rank, std::move(*hb), now);
    } else if (auto* bye = std::get_if<control::Bye>(&*m)) {
      RankFailed(rank, "it left: " + bye->reason);
      break;
    } else {
      RankFailed(rank, std::string("unexpected ") + control::MessageTypeName(control::TypeOf(*m)) + " frame");
      break;
    }
  }
}

void ControlPlane::RankFailed(const std::shared_ptr<Rank>& rank, const std::string& why) {
  std::optional<GroupFailure> failure = cluster_.RankFailed(rank, why, stopping_.load());
  if (failure) table_.FailGroup(*failure, stopping_.load(), Clock::now());
}

awaitable<void> ControlPlane::Watchdog() {
  asio::steady_timer t(io_);
  const auto heartbeat_timeout = std::chrono::milliseconds(cfg_.server.heartbeat_timeout_ms);
  const auto step_timeout = std::chrono::milliseconds(cfg_.server.step_timeout_ms);
  Clock::time_point next_rebalance_check{};
  while (!stopping_) {
    t.expires_after(std::chrono::milliseconds(std::max(10, cfg_.server.heartbeat_ms / 2)));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    const auto now = Clock::now();
    for (const auto& [rank, why] : cluster_.LateRanks(now, heartbeat_timeout, step_timeout)) RankFailed(rank, why);
    table_.ExpireOverdue(now, cfg_.server.request_timeout_s);
    table_.Migrate(now, stopping_.load());
    cluster_.ForgetAbandonedGroups(now, std::chrono::seconds(cfg_.server.group_forget_s));
    if (cfg_.server.rebalance_threshold > 0 && !stopping_ && now >= next_rebalance_check) {
      // The window moves slowly: a look every few seconds is plenty.
      next_rebalance_check = now + std::chrono::seconds(5);
      (void)cluster_.Rebalance(now, /*forced=*/false);
    }
  }
}

awaitable<std::variant<std::vector<RequestTable::Admitted>, api::ApiError>> ControlPlane::AdmitChoices(
    std::vector<RequestTable::Admission> choices) {
  using Result = std::variant<std::vector<RequestTable::Admitted>, api::ApiError>;
  auto on_control = [this, choices = std::move(choices)]() mutable -> awaitable<Result> {
    std::vector<RequestTable::Admitted> admitted;
    for (RequestTable::Admission& a : choices) {
      if (!admitted.empty()) a.fork_of = admitted.front().id;
      std::variant<RequestTable::Admitted, api::ApiError> one = table_.Admit(std::move(a), stopping_.load());
      if (auto* e = std::get_if<api::ApiError>(&one)) {
        for (const RequestTable::Admitted& done : admitted) table_.EndFromClient(done.id, "cancelled");
        co_return std::move(*e);
      }
      admitted.push_back(std::get<RequestTable::Admitted>(one));
    }
    co_return admitted;
  };
  auto hop = asio::co_spawn(io_, std::move(on_control), use_awaitable);
  co_return co_await std::move(hop);
}

void ControlPlane::End(uint64_t id, const char* reason) {
  asio::post(io_, [this, id, reason] { table_.EndFromClient(id, reason); });
}

awaitable<std::string> ControlPlane::ExpertLoadReport() {
  auto on_control = [this]() -> awaitable<std::string> {
    nlohmann::ordered_json j = cluster_.ExpertLoadReport();
    j["model"] = model_.name;
    co_return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  auto hop = asio::co_spawn(io_, std::move(on_control), use_awaitable);
  co_return co_await std::move(hop);
}

awaitable<std::string> ControlPlane::RequestRebalance(std::string group) {
  auto on_control = [this, group = std::move(group)]() -> awaitable<std::string> {
    nlohmann::ordered_json j = cluster_.Rebalance(Clock::now(), /*forced=*/true, group);
    co_return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  auto hop = asio::co_spawn(io_, std::move(on_control), use_awaitable);
  co_return co_await std::move(hop);
}

awaitable<std::string> ControlPlane::DescribeCluster() {
  auto on_control = [this]() -> awaitable<std::string> {
    boost::system::error_code ec;
    const auto control = acceptor_.local_endpoint(ec);
    nlohmann::ordered_json j = {
        {"model", model_.name},
        {"control_address", ec ? std::string() : cfg_.server.control_host + ":" + std::to_string(control.port())},
        {"max_context", model_.max_context},
        {"ready_groups", cluster_.ready_groups()},
        {"requests_in_flight", table_.in_flight()},
        {"groups", cluster_.Describe(Clock::now())}};
    // Worker-supplied text (host names, error reasons) may not be valid UTF-8.
    co_return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  auto hop = asio::co_spawn(io_, std::move(on_control), use_awaitable);
  co_return co_await std::move(hop);
}

awaitable<void> ControlPlane::RefreshMetrics() {
  auto on_control = [this]() -> awaitable<void> {
    cluster_.RefreshMetrics();
    metrics_.gauge("shoal_control_connections", "Open control-plane connections").Set(connections_.load());
    co_return;
  };
  auto hop = asio::co_spawn(io_, std::move(on_control), use_awaitable);
  co_await std::move(hop);
}

bool ControlPlane::IsReady() const {
  const int n = cluster_.ready_groups();
  return !stopping_.load() && n >= std::max(1, cfg_.cluster.groups) && n == cluster_.known_groups();
}

void ControlPlane::Stop(int64_t grace_ms, std::function<void()> stopped) {
  asio::post(io_, [this, grace_ms, stopped = std::move(stopped)]() mutable { BeginStop(grace_ms, std::move(stopped)); });
}

void ControlPlane::BeginStop(int64_t grace_ms, std::function<void()> stopped) {
  if (stopping_.exchange(true)) return;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  // Ranks parked in a rendezvous wake up, see the stop and are refused.
  std::vector<std::string> waiting;
  for (const auto& [group, timers] : rendezvous_waiters_) waiting.push_back(group);
  for (const std::string& group : waiting) WakeRendezvous(group);
  // In-flight requests end now with an explicit error; the ranks free them when they stop.
  table_.FailAll(api::ApiError{503, "the server is shutting down", "server_error", "", "service_unavailable"});
  for (const auto& r : cluster_.LiveRanks()) r->channel->Send(control::Shutdown{});
  // Give the ranks until grace_ms to say Bye, then stop regardless.
  StopWhenRanksGone(std::make_shared<asio::steady_timer>(io_), grace_ms, std::move(stopped));
}

void ControlPlane::StopWhenRanksGone(std::shared_ptr<asio::steady_timer> timer, int64_t left_ms,
                                     std::function<void()> stopped) {
  // Woken parked ranks still have their refusal to write.
  if ((rendezvous_sessions_ == 0 && cluster_.AllRanksGone()) || left_ms <= 0) {
    stopped();
    return;
  }
  timer->expires_after(std::chrono::milliseconds(50));
  timer->async_wait([this, timer, left_ms, stopped = std::move(stopped)](const boost::system::error_code&) mutable {
    StopWhenRanksGone(timer, left_ms - 50, std::move(stopped));
  });
}

}  // namespace shoal::coord
