#include "coordinator/cluster.h"

#include <algorithm>

#include "common/log.h"
#include "common/secret.h"

namespace shoal::coord {

std::string Rank::Name() const {
  return "rank " + std::to_string(hello.rank) + " of group " + group + " (" + hello.host + " pid " +
         std::to_string(hello.pid) + ")";
}

bool Group::Complete() const {
  if (broken || ranks.empty()) return false;
  for (const auto& r : ranks) {
    if (!r || r->dead) return false;
  }
  return true;
}

bool Group::HasLiveRank() const {
  for (const auto& r : ranks) {
    if (r && !r->dead) return true;
  }
  return false;
}

int64_t Group::InFlight() const {
  int64_t n = 0;
  for (const auto& r : ranks) n += r ? r->requests : 0;
  return n;
}

Cluster::Cluster(Options options, Metrics& metrics) : options_(std::move(options)), metrics_(metrics) {
  metrics_.gauge("shoal_ready_groups", "Engine groups complete and healthy").Set(0);
}

StatusOr<std::shared_ptr<Rank>> Cluster::Join(const control::Hello& h, std::shared_ptr<RankChannel> channel,
                                              Clock::time_point now, bool stopping) {
  if (stopping) return Unavailable("the coordinator is shutting down");
  if (h.size == 0 || h.rank >= h.size || h.group.empty()) {
    return InvalidArgument("rank " + std::to_string(h.rank) + " of " + std::to_string(h.size) + " in group '" + h.group +
                           "' is not a rank of a group");
  }
  if (!options_.control_token.empty() && !SecretsEqual(options_.control_token, h.token)) {
    return InvalidArgument("wrong or missing control token (SHOAL_CONTROL_TOKEN)");
  }
  if (h.model != options_.model_name) {
    return InvalidArgument("worker serves model '" + h.model + "', the coordinator serves '" + options_.model_name + "'");
  }
  if (static_cast<int64_t>(h.vocab_size) != options_.model_vocab) {
    return InvalidArgument("worker's model has a vocabulary of " + std::to_string(h.vocab_size) + ", the coordinator's " +
                           std::to_string(options_.model_vocab));
  }
  auto [it, fresh] = groups_.try_emplace(h.group);
  Group& g = it->second;
  bool old_gone = true;
  for (const auto& r : g.ranks) old_gone = old_gone && (!r || r->dead);
  if (fresh || (g.broken && old_gone)) {
    // A new group, or a new incarnation of one whose previous workers are all gone. Incarnations are
    // numbered across all groups, so one forgotten and made again never repeats a number.
    g = Group{};
    g.name = h.group;
    g.size = h.size;
    g.tp_size = h.tp_size;
    g.incarnation = ++last_incarnation_;
    g.ranks.assign(h.size, nullptr);
    g.last_live = now;
    g.expert_load = ExpertLoadWindow(std::chrono::seconds(options_.expert_load_window_s));
  }
  if (g.broken) return Unavailable("group " + h.group + " is still shutting down its previous workers");
  if (g.size != h.size) {
    return InvalidArgument("group " + h.group + " has " + std::to_string(g.size) + " ranks, this worker says " +
                           std::to_string(h.size));
  }
  if (g.tp_size != h.tp_size) {
    return InvalidArgument("group " + h.group + " runs attention TP " + std::to_string(g.tp_size) +
                           ", this worker says " + std::to_string(h.tp_size));
  }
  if (g.ranks[h.rank] && !g.ranks[h.rank]->dead) {
    return InvalidArgument("rank " + std::to_string(h.rank) + " of group " + h.group + " is already connected");
  }
  auto rank = std::make_shared<Rank>();
  rank->hello = h;
  rank->hello.token.clear();  // not kept past the check
  rank->group = h.group;
  rank->incarnation = g.incarnation;
  rank->channel = std::move(channel);
  rank->last_seen = rank->last_progress = now;
  g.ranks[h.rank] = rank;
  log::Info("%s connected (%u KV blocks of %u tokens, %u sequences)", rank->Name().c_str(),
            static_cast<unsigned>(h.kv_blocks), h.block_size, h.max_num_seqs);
  UpdateReady();
  if (g.Complete()) log::Info("group %s is ready (%u ranks)", g.name.c_str(), g.size);
  return rank;
}

void Cluster::OnHeartbeat(Rank& rank, control::Heartbeat hb, Clock::time_point now) {
  rank.last_seen = now;
  if (hb.steps != rank.hb.steps) rank.last_progress = now;
  rank.hb = std::move(hb);
  if (Group* g = GroupOf(rank); g != nullptr && g->placement.pending != 0) CheckPendingRebalance(*g, now);
  // Rank 0's heartbeat takes the group's snapshot of the expert load, from every rank's latest counts.
  if (rank.hello.rank != 0 || options_.model_layers <= 0 || options_.model_experts <= 0) return;
  Group* g = GroupOf(rank);
  if (g == nullptr) return;
  std::vector<const std::vector<uint64_t>*> counts;
  for (const auto& r : g->ranks) {
    if (!r || r->dead) continue;
    counts.push_back(&r->hb.layer_expert_tokens);
  }
  g->expert_load.Record(now, options_.model_layers, options_.model_experts,
                        GroupCumulative(options_.model_layers, options_.model_experts, counts));
}

namespace {

std::vector<std::vector<int>> RankExperts(const Group& g) {
  std::vector<std::vector<int>> out(g.ranks.size());
  for (size_t i = 0; i < g.ranks.size(); ++i) {
    const auto& r = g.ranks[i];
    if (r && !r->dead) out[i].assign(r->hello.local_experts.begin(), r->hello.local_experts.end());
  }
  return out;
}

}  // namespace

LayerShares Cluster::SharesOf(const Group& g) const {
  if (g.placement.generation > 0) return g.placement.shares;
  std::vector<bool> moe = options_.layer_is_moe;
  if (moe.empty()) moe.assign(static_cast<size_t>(std::max(0, options_.model_layers)), true);
  return StartupShares(moe, RankExperts(g));
}


namespace {

// /v1/cluster's short form of the expert load (GET /v1/expert_load has the counts).
nlohmann::ordered_json ExpertLoadSummary(const Group& g) {
  const ExpertLoad load = g.expert_load.Current();
  return {{"window_seconds", load.seconds}, {"tokens", load.Total()}};
}

}  // namespace

nlohmann::ordered_json Cluster::ExpertLoadReport() const {
  nlohmann::ordered_json groups = nlohmann::ordered_json::object();
  for (const auto& [name, g] : groups_) {
    const ExpertLoad load = g.expert_load.Current();
    nlohmann::ordered_json j = ExpertLoadJson(load);
    j["rank_imbalance"] = SharesImbalance(load, SharesOf(g));
    j["placement_generation"] = g.placement.generation;
    j["placement"] = SharesOf(g);  // [layer][rank] → experts (repeats: shares of an expert's tokens)
    groups[name] = std::move(j);
  }
  return {{"window_seconds", options_.expert_load_window_s}, {"groups", std::move(groups)}};
}

std::optional<GroupFailure> Cluster::RankFailed(const std::shared_ptr<Rank>& rank, const std::string& why,
                                                bool stopping) {
  if (rank->dead) return std::nullopt;
  rank->dead = true;
  rank->dead_reason = why;
  if (rank->channel) rank->channel->Close();
  auto it = groups_.find(rank->group);
  if (it == groups_.end() || it->second.incarnation != rank->incarnation) return std::nullopt;
  Group& g = it->second;
  metrics_.counter("shoal_worker_failures_total", "Worker ranks declared dead (connection lost or heartbeats stopped)")
      .Inc();
  const std::string reason = rank->Name() + " failed: " + why;
  std::optional<GroupFailure> failure;
  if (!g.broken) {
    if (!stopping) log::Warn("%s; group %s is unready", reason.c_str(), g.name.c_str());
    g.broken = true;
    g.broken_reason = reason;
    failure = GroupFailure{g.name, g.incarnation, reason};
    std::lock_guard<std::mutex> lock(supervision_mu_);
    ++group_failures_[g.name];
  }
  // The group's other ranks cannot go on without this one: close them too, so they stop.
  for (const auto& other : g.ranks) {
    if (other && !other->dead) {
      other->dead = true;
      other->dead_reason = "group " + g.name + " failed";
      if (other->channel) other->channel->Close();
    }
  }
  UpdateReady();
  return failure;
}

std::vector<std::pair<std::shared_ptr<Rank>, std::string>> Cluster::LateRanks(
    Clock::time_point now, std::chrono::milliseconds heartbeat_timeout, std::chrono::milliseconds step_timeout) const {
  std::vector<std::pair<std::shared_ptr<Rank>, std::string>> late;
  auto ms = [&](Clock::time_point t) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - t).count());
  };
  for (const auto& [name, g] : groups_) {
    for (const auto& r : g.ranks) {
      if (!r || r->dead) continue;
      if (now - r->last_seen > heartbeat_timeout) {
        late.emplace_back(r, "no heartbeat for " + ms(r->last_seen) + " ms (stalled or unreachable)");
      } else if (r->requests > 0 && now - r->last_progress > step_timeout) {
        late.emplace_back(r, "heartbeating but no step finished for " + ms(r->last_progress) +
                                 " ms with requests in flight (hung in a step; server.step_timeout_ms)");
      }
    }
  }
  return late;
}

void Cluster::ForgetAbandonedGroups(Clock::time_point now, std::chrono::seconds after) {
  std::vector<std::string> forgotten;
  for (auto& [name, g] : groups_) {
    if (g.HasLiveRank()) {
      g.last_live = now;
    } else if (g.broken && now - g.last_live > after) {
      forgotten.push_back(name);
    }
  }
  for (const std::string& name : forgotten) {
    Group& g = groups_.at(name);
    log::Info("forgot group %s (no live rank for %lld s; it was: %s)", name.c_str(), static_cast<long long>(after.count()),
              g.broken_reason.c_str());
    // Its requests ended when it broke; its per-rank series go with it.
    for (const auto& r : g.ranks) {
      if (r) RemoveRankSeries(name, *r);
    }
    groups_.erase(name);
  }
  if (!forgotten.empty()) UpdateReady();
}

StatusOr<std::shared_ptr<Rank>> Cluster::Route(bool stopping) const {
  if (stopping) return Unavailable("the server is shutting down");
  const Group* best = nullptr;
  int64_t capacity = options_.max_queued_requests, in_flight = 0;
  for (const auto& [name, g] : groups_) {
    if (!g.Complete()) continue;
    for (const auto& r : g.ranks) capacity += r->hello.tp_rank == 0 ? r->hello.max_num_seqs : 0;
    const int64_t load = g.InFlight();
    in_flight += load;
    // The least loaded per replica among the complete groups.
    if (best == nullptr ||
        load * static_cast<int64_t>(best->Replicas()) < best->InFlight() * static_cast<int64_t>(g.Replicas())) {
      best = &g;
    }
  }
  if (best == nullptr) return Unavailable("no engine group is ready to serve (see GET /v1/cluster)");
  if (in_flight >= capacity) {
    return ResourceExhausted("the server is at capacity (" + std::to_string(in_flight) +
                             " requests in flight); retry later");
  }
  std::shared_ptr<Rank> pick;
  for (const auto& r : best->ranks) {
    if (r->hello.tp_rank != 0) continue;  // a replica's other ranks get its requests from its tp_rank 0
    if (!pick || r->requests < pick->requests ||
        (r->requests == pick->requests && r->outstanding_tokens < pick->outstanding_tokens)) {
      pick = r;
    }
  }
  return pick;
}

Group* Cluster::GroupOf(const Rank& rank) {
  auto it = groups_.find(rank.group);
  if (it == groups_.end() || it->second.incarnation != rank.incarnation) return nullptr;
  return &it->second;
}

bool Cluster::IsReady(bool stopping) const {
  const int n = ready_groups_.load();
  return !stopping && n >= std::max(1, options_.expected_groups) && n == static_cast<int>(groups_.size());
}

bool Cluster::HasConnectedRanks(const std::string& group) const {
  auto g = groups_.find(group);
  return g != groups_.end() && !g->second.broken && g->second.HasLiveRank();
}

bool Cluster::AllRanksGone() const {
  for (const auto& [name, g] : groups_) {
    if (g.HasLiveRank()) return false;
  }
  return true;
}

std::vector<std::shared_ptr<Rank>> Cluster::LiveRanks() const {
  std::vector<std::shared_ptr<Rank>> out;
  for (const auto& [name, g] : groups_) {
    for (const auto& r : g.ranks) {
      if (r && !r->dead) out.push_back(r);
    }
  }
  return out;
}

uint64_t Cluster::GroupFailures(const std::string& group) const {
  std::lock_guard<std::mutex> lock(supervision_mu_);
  auto it = group_failures_.find(group);
  return it == group_failures_.end() ? 0 : it->second;
}

void Cluster::SetSupervisorNote(const std::string& group, std::string note) {
  std::lock_guard<std::mutex> lock(supervision_mu_);
  supervisor_notes_[group] = std::move(note);
}

void Cluster::UpdateReady() {
  int n = 0;
  for (const auto& [name, g] : groups_) n += g.Complete() ? 1 : 0;
  ready_groups_.store(n);
  known_groups_.store(static_cast<int>(groups_.size()));
  metrics_.gauge("shoal_ready_groups", "Engine groups complete and healthy").Set(n);
}

nlohmann::ordered_json Cluster::Describe(Clock::time_point now) const {
  using nlohmann::ordered_json;
  ordered_json groups = ordered_json::array();
  for (const auto& [name, g] : groups_) {
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
      j["replica"] = r->hello.replica;
      j["tp_rank"] = r->hello.tp_rank;
      j["experts"] = r->hello.local_experts;
      j["last_heartbeat_ms_ago"] = std::chrono::duration_cast<std::chrono::milliseconds>(now - r->last_seen).count();
      j["requests_in_flight"] = r->requests;
      j["running"] = r->hb.running;
      j["waiting"] = r->hb.waiting;
      j["kv_blocks_used"] = r->hb.kv_blocks_used;
      j["kv_blocks_total"] = r->hello.kv_blocks;
      j["kv_block_size"] = r->hello.block_size;
      j["kv_max_sequence_tokens"] = r->hello.kv_tokens;
      j["kv_bytes_per_token"] = r->hello.kv_bytes_per_token;
      j["max_num_seqs"] = r->hello.max_num_seqs;
      j["steps"] = r->hb.steps;
      j["last_step_seconds"] = r->hb.last_step_seconds;
      j["preemptions"] = r->hb.preemptions;
      ranks.push_back(j);
    }
    groups.push_back({{"name", name},
                      {"incarnation", g.incarnation},
                      {"size", g.size},
                      {"attention_tp", g.tp_size},
                      {"replicas", g.size / std::max(1u, g.tp_size)},
                      {"ready", g.Complete()},
                      {"error", g.broken ? ordered_json(g.broken_reason) : ordered_json(nullptr)},
                      {"requests_in_flight", g.InFlight()},
                      {"expert_load", [&] {
                         ordered_json j = ExpertLoadSummary(g);
                         j["rank_imbalance"] = SharesImbalance(g.expert_load.Current(), SharesOf(g));
                         return j;
                       }()},
                      {"expert_placement", {{"generation", g.placement.generation},
                                            {"pending", g.placement.pending},
                                            {"rebalances", g.placement.rebalances},
                                            {"dropped", g.placement.dropped},
                                            {"last_error", g.placement.last_error}}},
                      {"ranks", ranks}});
  }
  std::lock_guard<std::mutex> lock(supervision_mu_);
  for (auto& g : groups) {
    auto it = supervisor_notes_.find(g["name"].get<std::string>());
    if (it != supervisor_notes_.end()) g["supervisor"] = it->second;
  }
  // A group the supervisor keeps down after its ranks were forgotten still shows, with why.
  for (const auto& [name, note] : supervisor_notes_) {
    if (groups_.count(name) == 0) groups.push_back({{"name", name}, {"ready", false}, {"supervisor", note}});
  }
  return groups;
}

namespace {
constexpr const char* kRankGauges[] = {"shoal_worker_up",
                                       "shoal_kv_cache_blocks_used",
                                       "shoal_kv_cache_blocks_capacity",
                                       "shoal_kv_cache_usage_ratio",
                                       "shoal_kv_cache_bytes_per_token",
                                       "shoal_num_requests_running",
                                       "shoal_num_requests_waiting",
                                       "shoal_worker_last_step_seconds",
                                       "shoal_worker_steps_total",
                                       "shoal_worker_step_seconds_total",
                                       "shoal_worker_preemptions_total",
                                       "shoal_iteration_tokens",
                                       "shoal_request_queue_time_seconds",
                                       "shoal_request_prefill_time_seconds",
                                       "shoal_request_decode_time_seconds"};
constexpr const char* kStepPhases[] = {"attention", "mlp", "expert_exchange", "tp_collectives"};
}  // namespace

void Cluster::RemoveRankSeries(const std::string& group, const Rank& r) {
  const Labels l = {{"group", group}, {"rank", std::to_string(r.hello.rank)}};
  for (const char* name : kRankGauges) metrics_.RemoveSeries(name, l);
  for (const char* phase : kStepPhases) {
    metrics_.RemoveSeries("shoal_worker_step_phase_seconds_total",
                          {{"group", group}, {"rank", std::to_string(r.hello.rank)}, {"phase", phase}});
  }
  if (r.hello.rank == 0) {
    for (uint32_t e = 0; e < r.hello.num_experts; ++e) {
      metrics_.RemoveSeries("shoal_expert_tokens_total", {{"group", group}, {"expert", std::to_string(e)}});
    }
    for (const char* name : {"shoal_expert_load_imbalance", "shoal_expert_load_window_tokens",
                             "shoal_expert_placement_generation", "shoal_expert_rebalances_total",
                             "shoal_expert_rebalances_dropped_total"}) {
      metrics_.RemoveSeries(name, {{"group", group}});
    }
  }
}

void Cluster::RefreshMetrics() const {
  int64_t queued = 0, running = 0;
  uint64_t kv_used = 0, kv_total = 0;
  for (const auto& [name, g] : groups_) {
    for (const auto& r : g.ranks) {
      if (!r) continue;
      if (!r->dead && r->hello.tp_rank == 0) {  // a replica's other TP ranks run the same requests
        queued += r->hb.waiting;
        running += r->hb.running;
      }
      if (!r->dead) {
        kv_used += r->hb.kv_blocks_used;
        kv_total += r->hello.kv_blocks;
      }
      const Labels l = {{"group", name}, {"rank", std::to_string(r->hello.rank)}};
      metrics_.gauge("shoal_worker_up", "1 while the rank is connected and heartbeating", l).Set(r->dead ? 0 : 1);
      metrics_.gauge("shoal_kv_cache_blocks_used", "KV cache blocks in use", l).Set(static_cast<double>(r->hb.kv_blocks_used));
      metrics_.gauge("shoal_kv_cache_blocks_capacity", "KV cache blocks", l).Set(static_cast<double>(r->hello.kv_blocks));
      metrics_.gauge("shoal_kv_cache_usage_ratio", "Share of KV cache blocks in use", l)
          .Set(r->hello.kv_blocks ? static_cast<double>(r->hb.kv_blocks_used) / static_cast<double>(r->hello.kv_blocks) : 0);
      // MLA: the latent and the rope key only.
      metrics_.gauge("shoal_kv_cache_bytes_per_token", "KV cache bytes one token takes on the rank, all layers", l)
          .Set(static_cast<double>(r->hello.kv_bytes_per_token));
      metrics_.gauge("shoal_num_requests_running", "Requests in the rank's running batch", l).Set(r->hb.running);
      metrics_.gauge("shoal_num_requests_waiting", "Requests queued on the rank (waiting for KV or a slot)", l)
          .Set(r->hb.waiting);
      // The rank's running totals, as counters (they reset when the rank restarts).
      metrics_.counter("shoal_worker_steps_total", "Steps the rank has taken", l).SetTotal(static_cast<double>(r->hb.steps));
      metrics_.counter("shoal_worker_step_seconds_total", "Wall time inside steps", l).SetTotal(r->hb.step_seconds_total);
      metrics_.gauge("shoal_worker_last_step_seconds", "Duration of the rank's latest step", l).Set(r->hb.last_step_seconds);
      const double phase_seconds[] = {r->hb.attention_seconds, r->hb.mlp_seconds, r->hb.exchange_seconds, r->hb.tp_seconds};
      for (size_t i = 0; i < std::size(kStepPhases); ++i) {
        metrics_
            .counter("shoal_worker_step_phase_seconds_total",
                     "Step time by phase: attention, mlp (routers, experts, dense MLPs), expert_exchange (the "
                     "all-to-all, waits included), tp_collectives (attention-TP sums and gathers); the rest of "
                     "shoal_worker_step_seconds_total is embedding, norms, lm_head and scheduling",
                     {{"group", name}, {"rank", std::to_string(r->hello.rank)}, {"phase", kStepPhases[i]}})
            .SetTotal(phase_seconds[i]);
      }
      metrics_.counter("shoal_worker_preemptions_total", "Requests preempted for KV blocks", l)
          .SetTotal(static_cast<double>(r->hb.preemptions));
      // The rank's lifetime histograms, copied whole from its heartbeat (control/engine_histograms.h).
      const struct {
        const char* name;
        const char* help;
        const std::vector<double>& buckets;
        const control::HistogramTotals& totals;
      } histograms[] = {
          {"shoal_iteration_tokens", "Tokens per step (prompt chunks and decode tokens)", control::IterationTokenBuckets(),
           r->hb.iteration_tokens},
          {"shoal_request_queue_time_seconds", "Time requests waited on the rank before their first step",
           control::RequestPhaseBuckets(), r->hb.queue_seconds},
          {"shoal_request_prefill_time_seconds", "Time from a request's first step to its first token",
           control::RequestPhaseBuckets(), r->hb.prefill_seconds},
          {"shoal_request_decode_time_seconds", "Time from a request's first token to its last",
           control::RequestPhaseBuckets(), r->hb.decode_seconds}};
      for (const auto& h : histograms) {
        metrics_.histogram(h.name, h.help, h.buckets, l).SetTotals(h.totals.counts, h.totals.sum);
      }
      if (r->hello.rank == 0) {
        const ExpertLoad load = g.expert_load.Current();
        metrics_.gauge("shoal_expert_load_imbalance",
                       "Most loaded rank's routed tokens over the mean rank's, in the expert load window (1 = balanced)",
                       {{"group", name}})
            .Set(SharesImbalance(load, SharesOf(g)));
        metrics_.gauge("shoal_expert_placement_generation",
                       "The expert placement generation the group serves under (0: the start-up one)", {{"group", name}})
            .Set(static_cast<double>(g.placement.generation));
        metrics_.counter("shoal_expert_rebalances_total", "Rebalances every rank of the group switched to", {{"group", name}})
            .SetTotal(static_cast<double>(g.placement.rebalances));
        metrics_.counter("shoal_expert_rebalances_dropped_total", "Rebalances the group dropped (a rank could not take it)",
                         {{"group", name}})
            .SetTotal(static_cast<double>(g.placement.dropped));
        // Rows each expert processed over all layers, summed over the group's ranks (by expert id).
        std::vector<uint64_t> per_expert;
        for (const auto& rr : g.ranks) {
          if (!rr || rr->dead) continue;
          if (per_expert.size() < rr->hb.expert_tokens.size()) per_expert.resize(rr->hb.expert_tokens.size(), 0);
          for (size_t e = 0; e < rr->hb.expert_tokens.size(); ++e) per_expert[e] += rr->hb.expert_tokens[e];
        }
        for (size_t e = 0; e < per_expert.size() && e < static_cast<size_t>(control::kMaxExperts); ++e) {
          metrics_.counter("shoal_expert_tokens_total", "Token rows each expert processed (all layers)",
                           {{"group", name}, {"expert", std::to_string(e)}})
              .SetTotal(static_cast<double>(per_expert[e]));
        }
        metrics_.gauge("shoal_expert_load_window_tokens", "Tokens routed to experts in the expert load window (all layers)",
                       {{"group", name}})
            .Set(static_cast<double>(load.Total()));
      }
    }
  }
  metrics_.gauge("shoal_queue_depth", "Requests waiting on all ranks for a slot or KV blocks").Set(static_cast<double>(queued));
  metrics_.gauge("shoal_requests_running", "Requests in the running batches of all ranks").Set(static_cast<double>(running));
  metrics_.gauge("shoal_cluster_kv_cache_usage_ratio", "Share of all live ranks' KV cache blocks in use")
      .Set(kv_total ? static_cast<double>(kv_used) / static_cast<double>(kv_total) : 0.0);
}

}  // namespace shoal::coord
