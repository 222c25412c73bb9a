// The coordinator's side of the control plane: accepts worker connections, checks their Hello,
// registers them in their group, reads their frames, and declares a worker dead when its connection
// breaks, it sends a malformed frame, or its heartbeats stop.
#include <cstdio>

#include "common/secret.h"
#include "common/log.h"
#include "coordinator/state.h"

namespace shoal {

using namespace coord;

namespace {

// Reads one frame; an error_code or a decode Status ends the link. `first`: the handshake frame of a
// connection not yet authenticated — only a Hello or a Rendezvous, and no larger than those can be
// (control::kMaxHandshakePayloadBytes), checked before anything is allocated for its payload.
awaitable<StatusOr<control::Message>> ReadFrame(tcp::socket& s, bool first = false) {
  uint8_t header[control::kHeaderBytes];
  boost::system::error_code ec;
  co_await asio::async_read(s, asio::buffer(header), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return Unavailable(ec == asio::error::eof ? "connection closed" : ec.message());
  StatusOr<control::FrameHeader> h = control::DecodeHeader(header);
  if (!h.ok()) co_return h.status();
  if (first) {
    const auto type = static_cast<control::MessageType>(h->type);
    if (type != control::MessageType::kHello && type != control::MessageType::kRendezvous) {
      co_return InvalidArgument(std::string("the first frame must be a Hello or a Rendezvous, not ") +
                                control::MessageTypeName(type));
    }
    if (h->payload_bytes > control::kMaxHandshakePayloadBytes) {
      co_return InvalidArgument("a first frame of " + std::to_string(h->payload_bytes) +
                                " bytes exceeds the handshake limit of " +
                                std::to_string(control::kMaxHandshakePayloadBytes));
    }
  }
  std::vector<uint8_t> payload(h->payload_bytes);
  co_await asio::async_read(s, asio::buffer(payload), asio::redirect_error(use_awaitable, ec));
  if (ec) co_return Unavailable(ec == asio::error::eof ? "connection closed mid-frame" : ec.message());
  co_return control::DecodePayload(static_cast<control::MessageType>(h->type), payload);
}

std::string PeerName(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto ep = s.remote_endpoint(ec);
  return ec ? std::string("an unknown peer") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

void Coordinator::Impl::Send(const std::shared_ptr<WorkerLink>& link, const control::Message& m) {
  if (link->dead) return;
  link->out.push_back(control::EncodeFrame(m));
  if (link->writing) return;
  link->writing = true;
  asio::co_spawn(
      io,
      [this, link]() -> awaitable<void> {
        while (!link->out.empty() && !link->dead) {
          boost::system::error_code ec;
          co_await asio::async_write(link->socket, asio::buffer(link->out.front()), asio::redirect_error(use_awaitable, ec));
          if (ec) {
            LinkDied(link, "sending to it failed: " + ec.message());
            break;
          }
          link->out.pop_front();
        }
        link->writing = false;
      },
      asio::detached);
}

void Coordinator::Impl::UpdateReady() {
  int n = 0;
  for (const auto& [name, g] : groups) n += g.Complete() ? 1 : 0;
  ready_groups.store(n);
  known_groups.store(static_cast<int>(groups.size()));
}

void Coordinator::Impl::LinkDied(const std::shared_ptr<WorkerLink>& link, const std::string& why) {
  if (link->dead) return;
  link->dead = true;
  link->dead_reason = why;
  boost::system::error_code ignored;
  link->socket.shutdown(tcp::socket::shutdown_both, ignored);
  link->socket.close(ignored);
  auto it = groups.find(link->group);
  if (it == groups.end() || it->second.incarnation != link->incarnation) return;  // never registered
  GroupState& g = it->second;
  if (!g.broken && !stopping) {
    log::Warn("%s failed: %s; group %s is unready", link->Name().c_str(), why.c_str(),
                 g.name.c_str());
  }
  // One rank down stops the whole group (every step needs every rank): its requests end now, with
  // the reason, rather than waiting for a collective timeout inside the group.
  const std::string reason = link->Name() + " failed: " + why;
  if (!g.broken) {
    g.broken = true;
    g.broken_reason = reason;
  }
  std::vector<std::shared_ptr<RequestState>> doomed;
  for (const auto& [id, r] : requests) {
    if (r->worker && r->worker->group == g.name && r->worker->incarnation == g.incarnation && !r->done) {
      doomed.push_back(r);
    }
  }
  for (const auto& r : doomed) {
    Finish(*r, "error",
           api::ApiError{503, stopping ? "the server is shutting down" : "engine group " + g.name + " failed: " + reason,
                         "server_error", "", "worker_failed"});
  }
  // The group's other ranks cannot go on without this one: close them too, so they stop.
  for (const auto& other : g.ranks) {
    if (other && !other->dead) {
      other->dead = true;
      other->dead_reason = "group " + g.name + " failed";
      other->socket.close(ignored);
    }
  }
  metrics.counter("shoal_worker_failures_total", "Worker ranks declared dead (connection lost or heartbeats stopped)")
      .Inc();
  UpdateReady();
}

// Handshakes in progress at once: each may hold a first frame of up to kMaxHandshakePayloadBytes
// before its secret is checked.
constexpr int kMaxPendingHandshakes = 128;

awaitable<void> Coordinator::Impl::AcceptWorkers() {
  int backoff_ms = 0;
  while (!stopping) {
    boost::system::error_code ec;
    tcp::socket s = co_await control_acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) co_return;
      co_await AcceptBackoff(io, &backoff_ms, "control", ec);  // EMFILE would otherwise spin
      continue;
    }
    backoff_ms = 0;
    s.set_option(tcp::no_delay(true), ec);
    if (control_connections >= cfg.server.max_control_connections || pending_handshakes >= kMaxPendingHandshakes) {
      log::Warn("refused a control connection from %s: %s", PeerName(s).c_str(),
                   pending_handshakes >= kMaxPendingHandshakes ? "too many handshakes in progress"
                                                               : "server.max_control_connections reached");
      s.close(ec);
      continue;
    }
    asio::co_spawn(io, WorkerSession(std::make_shared<WorkerLink>(std::move(s))), asio::detached);
  }
}

awaitable<void> Coordinator::Impl::WorkerSession(std::shared_ptr<WorkerLink> link) {
  const ConnectionCount counted(&control_connections);
  const std::string peer = PeerName(link->socket);
  // The handshake must come promptly: a silent connection is not allowed to hold a slot.
  asio::steady_timer hello_timer(io, std::chrono::seconds(10));
  hello_timer.async_wait([link](const boost::system::error_code& ec) {
    if (!ec && link->group.empty()) {
      boost::system::error_code ignored;
      link->socket.close(ignored);
    }
  });
  ++pending_handshakes;
  StatusOr<control::Message> first = co_await ReadFrame(link->socket, /*first=*/true);
  --pending_handshakes;
  hello_timer.cancel();
  auto reject = [&](const std::string& why) {
    log::Warn("rejected a worker from %s: %s", peer.c_str(), why.c_str());
    link->out.push_back(control::EncodeFrame(control::Reject{why}));
  };
  if (!first.ok()) {
    // A peer that closed says nothing more; any other bad first frame (another protocol version, a
    // wrong type, too large) gets a Reject it can show, and a log line here.
    if (first.status().code() == StatusCode::kUnavailable) co_return;
    reject(first.status().message());
    boost::system::error_code ec;
    co_await asio::async_write(link->socket, asio::buffer(link->out.front()), asio::redirect_error(use_awaitable, ec));
    co_return;
  }
  if (auto* rv = std::get_if<control::Rendezvous>(&*first)) {
    // Made outside the co_await expression (GCC 12 and temporaries there, see RendezvousSession).
    awaitable<void> session = RendezvousSession(link, std::move(*rv));
    co_await std::move(session);
    co_return;
  }
  auto* hello = std::get_if<control::Hello>(&*first);
  if (hello == nullptr) co_return;
  link->hello = *hello;
  const control::Hello& h = link->hello;
  std::string why;
  if (stopping) why = "the coordinator is shutting down";
  else if (!control_token.empty() && !SecretsEqual(control_token, h.token)) why = "wrong or missing control token (SHOAL_CONTROL_TOKEN)";
  else if (h.model != model_name) why = "worker serves model '" + h.model + "', the coordinator serves '" + model_name + "'";
  else if (static_cast<int64_t>(h.vocab_size) != model_vocab) {
    why = "worker's model has a vocabulary of " + std::to_string(h.vocab_size) + ", the coordinator's " +
          std::to_string(model_vocab);
  }
  GroupState* g = nullptr;
  if (why.empty()) {
    auto [it, fresh] = groups.try_emplace(h.group);
    g = &it->second;
    bool old_gone = true;
    for (const auto& r : g->ranks) old_gone = old_gone && (!r || r->dead);
    if (fresh || (g->broken && old_gone)) {
      // A new group, or a new incarnation of one whose previous workers are all gone. Incarnations
      // are numbered across all groups, so one forgotten and made again never repeats a number.
      const uint64_t inc = ++last_incarnation;
      *g = GroupState{};
      g->name = h.group;
      g->size = h.size;
      g->incarnation = inc;
      g->ranks.assign(h.size, nullptr);
    }
    if (g->broken) why = "group " + h.group + " is still shutting down its previous workers";
    else if (g->size != h.size) why = "group " + h.group + " has " + std::to_string(g->size) + " ranks, this worker says " + std::to_string(h.size);
    else if (g->ranks[h.rank] && !g->ranks[h.rank]->dead) why = "rank " + std::to_string(h.rank) + " of group " + h.group + " is already connected";
  }
  if (!why.empty()) {
    reject(why);
    boost::system::error_code ec;
    co_await asio::async_write(link->socket, asio::buffer(link->out.front()), asio::redirect_error(use_awaitable, ec));
    co_return;
  }
  link->group = h.group;
  link->incarnation = g->incarnation;
  g->ranks[h.rank] = link;
  link->last_seen = Clock::now();
  Send(link, control::Welcome{g->incarnation, static_cast<uint32_t>(cfg.server.heartbeat_ms)});
  log::Info("%s connected (%u KV blocks of %u tokens, %u sequences)", link->Name().c_str(),
               static_cast<unsigned>(h.kv_blocks), h.block_size, h.max_num_seqs);
  UpdateReady();
  if (g->Complete()) log::Info("group %s is ready (%u ranks)", g->name.c_str(), g->size);

  while (!link->dead) {
    StatusOr<control::Message> m = co_await ReadFrame(link->socket);
    if (link->dead) break;
    if (!m.ok()) {
      LinkDied(link, m.status().message());
      break;
    }
    link->last_seen = Clock::now();
    if (auto* t = std::get_if<control::Tokens>(&*m)) {
      OnTokens(*link, *t);
    } else if (auto* hb = std::get_if<control::Heartbeat>(&*m)) {
      if (hb->steps != link->hb.steps) link->last_progress = link->last_seen;
      link->hb = std::move(*hb);
    } else if (auto* bye = std::get_if<control::Bye>(&*m)) {
      LinkDied(link, "it left: " + bye->reason);
      break;
    } else {
      LinkDied(link, std::string("unexpected ") + control::MessageTypeName(control::TypeOf(*m)) + " frame");
      break;
    }
  }
}

void Coordinator::Impl::WakeRendezvous(const std::string& group) {
  auto it = rendezvous_waiters.find(group);
  if (it == rendezvous_waiters.end()) return;
  for (const auto& w : it->second) {
    if (auto t = w.lock()) t->cancel();
  }
  rendezvous_waiters.erase(it);
}

void Coordinator::Impl::PruneRendezvousWaiters(const std::string& group) {
  auto it = rendezvous_waiters.find(group);
  if (it == rendezvous_waiters.end()) return;
  std::erase_if(it->second, [](const std::weak_ptr<asio::steady_timer>& w) { return w.expired(); });
  if (it->second.empty()) rendezvous_waiters.erase(it);
}

std::optional<control::Message> Coordinator::Impl::RendezvousStep(const control::Rendezvous& rv,
                                                                  Clock::time_point until) {
  const std::string who = "rank " + std::to_string(rv.rank) + "/" + std::to_string(rv.size) + " of group " + rv.group;
  auto refuse = [&](const std::string& why) {
    log::Warn("rendezvous of %s refused: %s", who.c_str(), why.c_str());
    return control::Message(control::Reject{why});
  };
  if (stopping) return refuse("the coordinator is shutting down");
  if (!control_token.empty() && !SecretsEqual(control_token, rv.token)) {
    return refuse("wrong or missing control token (SHOAL_CONTROL_TOKEN)");
  }
  if (rv.model != model_name) return refuse("worker serves model '" + rv.model + "', the coordinator serves '" + model_name + "'");
  // A group whose workers are connected is serving (or joining): a second launch under its name would
  // take their id.
  if (auto g = groups.find(rv.group); g != groups.end() && !g->second.broken) {
    for (const auto& r : g->second.ranks) {
      if (r && !r->dead) return refuse("group " + rv.group + " already has connected workers");
    }
  }
  const auto now = Clock::now();
  if (rv.rank == 0) {
    const Status posted = rendezvous.Post(rv.group, rv.size, rv.id, now);
    if (!posted.ok()) return refuse(posted.message());
    log::Info("rendezvous: %s posted its data-plane id", who.c_str());
    WakeRendezvous(rv.group);
    return control::Message(control::RendezvousId{rv.id});
  }
  StatusOr<std::optional<std::string>> got = rendezvous.Take(rv.group, rv.rank, rv.size, now);
  if (!got.ok()) return refuse(got.status().message());
  if (got->has_value()) {
    log::Info("rendezvous: %s took the data-plane id", who.c_str());
    return control::Message(control::RendezvousId{std::move(**got)});
  }
  if (now >= until) {
    return refuse("rank 0 of group " + rv.group + " did not post its id within " + std::to_string(cfg.startup_timeout_s) +
                  " s (parallel.startup_timeout_s)");
  }
  // Bounded: each parked rank holds a descriptor until its rank 0 posts.
  if (rendezvous_parked >= rendezvous_parked_limit) {
    return refuse("too many workers (" + std::to_string(rendezvous_parked) +
                  ") are waiting for their rank 0 (half the coordinator's open-file limit)");
  }
  return std::nullopt;
}

awaitable<void> Coordinator::Impl::RendezvousSession(std::shared_ptr<WorkerLink> link, control::Rendezvous rv) {
  ++rendezvous_sessions;
  // Other ranks wait for rank 0's post, at most the startup timeout (rank 0 may still be loading).
  const auto until = Clock::now() + std::chrono::seconds(cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s : 600);
  // The worker sends nothing after its Rendezvous: a read that completes means it went away (or broke
  // the protocol), and a rank that is gone must not take its group's id for a relaunched one.
  auto gone = std::make_shared<bool>(false);
  auto parked_timer = std::make_shared<std::shared_ptr<asio::steady_timer>>();
  auto probe = std::make_shared<char>(0);
  link->socket.async_read_some(asio::buffer(probe.get(), 1), [gone, parked_timer, probe](const boost::system::error_code&, size_t) {
    *gone = true;
    if (*parked_timer) (*parked_timer)->cancel();
  });
  std::string frame, given;
  while (!*gone) {
    // The decision is a plain function and the reply a named local: GCC 12 may destroy temporaries
    // inside a co_await expression twice.
    std::optional<control::Message> reply = RendezvousStep(rv, until);
    if (reply.has_value()) {
      if (auto* id = std::get_if<control::RendezvousId>(&*reply); id != nullptr && rv.rank != 0) given = id->id;
      frame = control::EncodeFrame(*reply);
      break;
    }
    auto timer = std::make_shared<asio::steady_timer>(io, until);
    *parked_timer = timer;
    rendezvous_waiters[rv.group].push_back(timer);
    ++rendezvous_parked;
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(use_awaitable, ec));
    --rendezvous_parked;
    parked_timer->reset();
    timer.reset();
    PruneRendezvousWaiters(rv.group);
  }
  boost::system::error_code ec;
  // Whether the rank had left before its answer was written: a close after the write is the rank
  // going away with its id, as it should.
  const bool left = *gone;
  if (!frame.empty() && !left) {
    co_await asio::async_write(link->socket, asio::buffer(frame), asio::redirect_error(use_awaitable, ec));
  }
  if (!given.empty() && (left || ec)) {
    // The id never reached this rank: its relaunch may take it.
    rendezvous.GiveBack(rv.group, rv.rank, given);
    log::Warn("rendezvous: rank %u of group %s left before it got the id", rv.rank,
                 rv.group.c_str());
  }
  boost::system::error_code ignored;
  link->socket.close(ignored);  // ends the probe read
  --rendezvous_sessions;
}

awaitable<void> Coordinator::Impl::Watchdog() {
  asio::steady_timer t(io);
  const auto timeout = std::chrono::milliseconds(cfg.server.heartbeat_timeout_ms);
  const auto step_timeout = std::chrono::milliseconds(cfg.server.step_timeout_ms);
  while (!stopping) {
    t.expires_after(std::chrono::milliseconds(std::max(10, cfg.server.heartbeat_ms / 2)));
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
    const auto now = Clock::now();
    std::vector<std::pair<std::shared_ptr<WorkerLink>, std::string>> late;
    auto ms = [&](Clock::time_point t) {
      return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - t).count());
    };
    for (auto& [name, g] : groups) {
      for (const auto& r : g.ranks) {
        if (!r || r->dead) continue;
        if (now - r->last_seen > timeout) {
          late.emplace_back(r, "no heartbeat for " + ms(r->last_seen) + " ms (stalled or unreachable)");
        } else if (!r->requests.empty() && now - r->last_progress > step_timeout) {
          late.emplace_back(r, "heartbeating but no step finished for " + ms(r->last_progress) +
                                   " ms with requests in flight (hung in a step; server.step_timeout_ms)");
        }
      }
    }
    for (const auto& [r, why] : late) LinkDied(r, why);
    // Non-streamed requests past server.request_timeout_s: 504, and the worker drops them.
    std::vector<std::shared_ptr<RequestState>> overdue;
    for (const auto& [id, r] : requests) {
      if (!r->done && now >= r->deadline) overdue.push_back(r);
    }
    for (const auto& r : overdue) {
      CancelOnWorker(*r);
      Finish(*r, "error",
             api::ApiError{504, "the request did not finish within server.request_timeout_s (" +
                                    std::to_string(cfg.server.request_timeout_s) + " s)",
                           "timeout_error", "", "request_timeout"});
    }
    // Groups that broke and have had no live rank for server.group_forget_s are forgotten (a mistyped
    // --group, a one-off launch): /ready then counts only the groups that are configured or alive.
    const auto forget_after = std::chrono::seconds(cfg.server.group_forget_s);
    std::vector<std::string> forgotten;
    for (auto& [name, g] : groups) {
      if (g.HasLiveRank()) {
        g.last_live = now;
      } else if (g.broken && now - g.last_live > forget_after) {
        forgotten.push_back(name);
      }
    }
    for (const std::string& name : forgotten) ForgetGroup(name);
  }
}

void Coordinator::Impl::ForgetGroup(const std::string& name) {
  auto it = groups.find(name);
  if (it == groups.end()) return;
  log::Info("forgot group %s (no live rank for %d s; it was: %s)", name.c_str(),
               cfg.server.group_forget_s, it->second.broken_reason.c_str());
  // Its requests already ended when it broke (LinkDied); its per-rank series go with it.
  for (const auto& r : it->second.ranks) {
    if (!r) continue;
    const Labels l = {{"group", name}, {"rank", std::to_string(r->hello.rank)}};
    for (const char* gauge : {"shoal_worker_up", "shoal_kv_cache_blocks_used", "shoal_kv_cache_blocks_capacity",
                              "shoal_kv_cache_usage_ratio", "shoal_num_requests_running", "shoal_num_requests_waiting",
                              "shoal_worker_last_step_seconds", "shoal_worker_steps_total",
                              "shoal_worker_step_seconds_total", "shoal_worker_preemptions_total"}) {
      metrics.RemoveSeries(gauge, l);
    }
    for (uint32_t e : r->hello.local_experts) {
      metrics.RemoveSeries("shoal_expert_tokens_total", {{"group", name}, {"expert", std::to_string(e)}});
    }
  }
  groups.erase(it);
  UpdateReady();
}

}  // namespace shoal
