// The control plane's rendezvous for groups launched without MPI: rank 0 posts its data plane's id,
// the other ranks take it (rendezvous.h keeps the table; this file answers the connections).
#include "common/log.h"
#include "common/secret.h"
#include "coordinator/control_plane.h"
#include "coordinator/worker_link.h"

namespace shoal::coord {

void ControlPlane::WakeRendezvous(const std::string& group) {
  auto it = rendezvous_waiters_.find(group);
  if (it == rendezvous_waiters_.end()) return;
  for (const auto& w : it->second) {
    if (auto t = w.lock()) t->cancel();
  }
  rendezvous_waiters_.erase(it);
}

void ControlPlane::PruneRendezvousWaiters(const std::string& group) {
  auto it = rendezvous_waiters_.find(group);
  if (it == rendezvous_waiters_.end()) return;
  std::erase_if(it->second, [](const std::weak_ptr<asio::steady_timer>& w) { return w.expired(); });
  if (it->second.empty()) rendezvous_waiters_.erase(it);
}

std::optional<control::Message> ControlPlane::RendezvousStep(const control::Rendezvous& rv, Clock::time_point until) {
  const std::string who = "rank " + std::to_string(rv.rank) + "/" + std::to_string(rv.size) + " of group " + rv.group;
  auto refuse = [&](const std::string& why) {
    log::Warn("rendezvous of %s refused: %s", who.c_str(), why.c_str());
    return control::Message(control::Reject{why});
  };
  if (stopping_) return refuse("the coordinator is shutting down");
  if (!control_token_.empty() && !SecretsEqual(control_token_, rv.token)) {
    return refuse("wrong or missing control token (SHOAL_CONTROL_TOKEN)");
  }
  if (rv.model != model_.name) return refuse("worker serves model '" + rv.model + "', the coordinator serves '" + model_.name + "'");
  // A group whose workers are connected is serving (or joining): a second launch under its name would
  // take their id.
  if (cluster_.HasConnectedRanks(rv.group)) return refuse("group " + rv.group + " already has connected workers");
  const auto now = Clock::now();
  if (rv.rank == 0) {
    const Status posted = rendezvous_.Post(rv.group, rv.size, rv.id, now);
    if (!posted.ok()) return refuse(posted.message());
    log::Info("rendezvous: %s posted its data-plane id", who.c_str());
    WakeRendezvous(rv.group);
    return control::Message(control::RendezvousId{rv.id});
  }
  StatusOr<std::optional<std::string>> got = rendezvous_.Take(rv.group, rv.rank, rv.size, now);
  if (!got.ok()) return refuse(got.status().message());
  if (got->has_value()) {
    log::Info("rendezvous: %s took the data-plane id", who.c_str());
    return control::Message(control::RendezvousId{std::move(**got)});
  }
  if (now >= until) {
    return refuse("rank 0 of group " + rv.group + " did not post its id within " + std::to_string(cfg_.startup_timeout_s) +
                  " s (parallel.startup_timeout_s)");
  }
  // Bounded: each parked rank holds a descriptor until its rank 0 posts.
  if (rendezvous_parked_ >= rendezvous_parked_limit_) {
    return refuse("too many workers (" + std::to_string(rendezvous_parked_) +
                  ") are waiting for their rank 0 (half the coordinator's open-file limit)");
  }
  return std::nullopt;
}

awaitable<void> ControlPlane::RendezvousSession(std::shared_ptr<WorkerLink> link, control::Rendezvous rv) {
  ++rendezvous_sessions_;
  // Other ranks wait for rank 0's post, at most the startup timeout (rank 0 may still be loading).
  const auto until = Clock::now() + std::chrono::seconds(cfg_.startup_timeout_s > 0 ? cfg_.startup_timeout_s : 600);
  // The worker sends nothing after its Rendezvous: a read that completes means it went away (or broke
  // the protocol), and a rank that is gone must not take its group's id for a relaunched one.
  auto gone = std::make_shared<bool>(false);
  auto parked_timer = std::make_shared<std::shared_ptr<asio::steady_timer>>();
  auto probe = std::make_shared<char>(0);
  link->socket().async_read_some(asio::buffer(probe.get(), 1), [gone, parked_timer, probe](const boost::system::error_code&, size_t) {
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
    auto timer = std::make_shared<asio::steady_timer>(io_, until);
    *parked_timer = timer;
    rendezvous_waiters_[rv.group].push_back(timer);
    ++rendezvous_parked_;
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(use_awaitable, ec));
    --rendezvous_parked_;
    parked_timer->reset();
    timer.reset();
    PruneRendezvousWaiters(rv.group);
  }
  boost::system::error_code ec;
  // Whether the rank had left before its answer was written: a close after the write is the rank
  // going away with its id, as it should.
  const bool left = *gone;
  if (!frame.empty() && !left) {
    co_await asio::async_write(link->socket(), asio::buffer(frame), asio::redirect_error(use_awaitable, ec));
  }
  if (!given.empty() && (left || ec)) {
    // The id never reached this rank: its relaunch may take it.
    rendezvous_.GiveBack(rv.group, rv.rank, given);
    log::Warn("rendezvous: rank %u of group %s left before it got the id", rv.rank, rv.group.c_str());
  }
  link->Close();  // ends the probe read
  --rendezvous_sessions_;
}

}  // namespace shoal::coord
