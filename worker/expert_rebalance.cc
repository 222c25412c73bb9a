#include "worker/expert_rebalance.h"

#include <set>
#include <utility>

#include "common/log.h"

namespace shoal {

StatusOr<std::vector<std::optional<Placement>>> PlacementsFromFrame(const control::Rebalance& m, const ModelConfig& c,
                                                                    int group_size) {
  const std::string what = "Rebalance generation " + std::to_string(m.generation);
  if (m.layers != static_cast<uint32_t>(c.num_layers)) {
    return InvalidArgument(what + ": layers is " + std::to_string(m.layers) + ", the model has " +
                           std::to_string(c.num_layers));
  }
  if (m.ranks != static_cast<uint32_t>(group_size)) {
    return InvalidArgument(what + ": ranks is " + std::to_string(m.ranks) + ", the group has " + std::to_string(group_size));
  }
  if (m.slots.size() != static_cast<size_t>(m.layers) * m.ranks) {
    return InvalidArgument(what + ": slots has " + std::to_string(m.slots.size()) + " entries, not layers × ranks");
  }
  std::vector<std::optional<Placement>> out(static_cast<size_t>(c.num_layers));
  size_t at = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    std::vector<std::vector<int>> shares(static_cast<size_t>(group_size));
    size_t layer_slots = 0;
    for (int r = 0; r < group_size; ++r) {
      const uint32_t n = m.slots[static_cast<size_t>(l) * m.ranks + r];
      if (n > m.experts.size() - at) return InvalidArgument(what + ": experts is shorter than its slots");
      for (uint32_t i = 0; i < n; ++i) shares[r].push_back(static_cast<int>(m.experts[at++]));
      layer_slots += n;
    }
    const std::string where = what + ", layer " + std::to_string(l);
    if (!c.layer_is_moe[l]) {
      if (layer_slots != 0) return InvalidArgument(where + " is dense but has experts placed");
      continue;
    }
    for (int r = 0; r < group_size; ++r) {
      // A rank with no expert in a layer would take part in its exchange with nothing to receive; the
      // planner never makes one (E + R slots in equal shares), so one here is a malformed frame.
      if (shares[r].empty()) return InvalidArgument(where + ": rank " + std::to_string(r) + " holds no expert");
    }
    StatusOr<Placement> p = Placement::FromRanks(c.num_experts, std::move(shares));
    if (!p.ok()) return p.status().WithContext(where);
    out[l] = std::move(*p);
  }
  if (at != m.experts.size()) return InvalidArgument(what + ": experts has entries past its slots");
  return out;
}

control::Rebalance FrameFromPlacements(uint64_t generation, const std::vector<std::optional<Placement>>& placements,
                                       int group_size) {
  control::Rebalance m;
  m.generation = generation;
  m.layers = static_cast<uint32_t>(placements.size());
  m.ranks = static_cast<uint32_t>(group_size);
  for (const std::optional<Placement>& p : placements) {
    std::vector<std::vector<uint32_t>> shares(static_cast<size_t>(group_size));
    if (p) {
      for (int e = 0; e < p->num_experts(); ++e) {
        for (int r : p->replicas(e)) {
          if (r < group_size) shares[r].push_back(static_cast<uint32_t>(e));
        }
      }
    }
    for (const auto& s : shares) {
      m.slots.push_back(static_cast<uint32_t>(s.size()));
      m.experts.insert(m.experts.end(), s.begin(), s.end());
    }
  }
  return m;
}

ExpertRebalancer::ExpertRebalancer(StepEngine& engine, std::string model_dir, std::optional<DType> dtype)
    : engine_(engine), model_dir_(std::move(model_dir)), dtype_(dtype) {}

ExpertRebalancer::~ExpertRebalancer() { Join(); }

void ExpertRebalancer::Join() {
  if (loader_.joinable()) loader_.join();
}

bool ExpertRebalancer::failed() const {
  return pending_ != 0 && done_.load(std::memory_order_acquire) && (!begin_status_.ok() || !load_status_.ok());
}

void ExpertRebalancer::Begin(const control::Rebalance& frame) {
  if (pending_ != 0) {
    // One at a time: this frame is dropped; the pending one goes on (the coordinator sends the next
    // only after the group switched or dropped the last).
    log::Warn("rebalance generation %llu ignored: generation %llu is still pending",
              static_cast<unsigned long long>(frame.generation), static_cast<unsigned long long>(pending_));
    last_failed_ = frame.generation;
    last_error_ = "generation " + std::to_string(pending_) + " was still pending";
    return;
  }
  Join();
  pending_ = frame.generation;
  begin_status_ = Status::Ok();
  load_status_ = Status::Ok();
  loaded_ = ModelWeights{};
  target_.clear();
  const ModelConfig& c = engine_.config();
  const int me = engine_.group().rank();
  StatusOr<std::vector<std::optional<Placement>>> placements = PlacementsFromFrame(frame, c, engine_.group().size());
  if (!placements.ok()) {
    begin_status_ = placements.status();
    done_.store(true, std::memory_order_release);
    return;
  }
  if (frame.generation <= generation_) {
    begin_status_ = InvalidArgument("Rebalance generation " + std::to_string(frame.generation) +
                                    " is not newer than the one served (" + std::to_string(generation_) + ")");
    done_.store(true, std::memory_order_release);
    return;
  }
  for (int l = 0; l < c.num_layers; ++l) {
    if ((*placements)[l] && engine_.layer_placement(l) == nullptr) {
      // The GPU engine keeps its placement for now: the group drops the frame together.
      begin_status_ = Unimplemented(engine_.Describe() + ": this engine cannot change its expert placement while serving");
      done_.store(true, std::memory_order_release);
      return;
    }
  }
  target_ = std::move(*placements);
  // What this rank gains: experts its new placement holds and its current one does not.
  std::set<std::pair<int, int>> gained;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!target_[l]) continue;
    const Placement* now = engine_.layer_placement(l);
    for (int e : target_[l]->local_experts(me)) {
      if (now == nullptr || !now->Holds(me, e)) gained.insert({l, e});
    }
  }
  if (gained.empty()) {
    done_.store(true, std::memory_order_release);
    return;
  }
  if (model_dir_.empty()) {
    begin_status_ = InvalidArgument("rank " + std::to_string(me) +
                                       " has no checkpoint to load gained experts from (a synthetic model)");
    done_.store(true, std::memory_order_release);
    return;
  }
  log::Info("rebalance generation %llu: loading %zu gained experts in the background",
            static_cast<unsigned long long>(pending_), gained.size());
  done_.store(false, std::memory_order_release);
  loader_ = std::thread([this, gained = std::move(gained), config = c] {
    try {
      StatusOr<ModelWeights> w = LoadExpertWeights(
          config, model_dir_, [&gained](int l, int e) { return gained.count({l, e}) != 0; }, dtype_);
      if (w.ok()) {
        loaded_ = std::move(*w);
      } else {
        load_status_ = w.status();
      }
    } catch (const std::exception& e) {  // out of memory: the group drops the generation, the rank lives
      loaded_ = ModelWeights{};
      load_status_ = ResourceExhausted(std::string("loading gained experts: ") + e.what());
    }
    done_.store(true, std::memory_order_release);
  });
}

std::array<int64_t, ExpertRebalancer::kAgreementValues> ExpertRebalancer::AgreementValues() const {
  // max(pending) == -max(-pending) exactly when every rank holds the same pending generation.
  const int64_t p = static_cast<int64_t>(pending_);
  return {p, -p, loading() ? 1 : 0, failed() ? 1 : 0};
}

Status ExpertRebalancer::Act(std::span<const int64_t> v, bool* changed) {
  *changed = false;
  if (v.size() < kAgreementValues || v[0] <= 0 || v[0] != -v[1] || v[2] != 0) return Status::Ok();
  *changed = true;
  if (v[3] > 0) {
    Abandon();
    return Status::Ok();
  }
  return Switch();
}

void ExpertRebalancer::Fail(uint64_t generation, std::string why) {
  last_failed_ = generation;
  last_error_ = std::move(why);
  log::Warn("rebalance generation %llu dropped: %s", static_cast<unsigned long long>(generation), last_error_.c_str());
}

Status ExpertRebalancer::Switch() {
  Join();
  const uint64_t g = pending_;
  pending_ = 0;
  if (!begin_status_.ok() || !load_status_.ok()) {
    return InvalidArgument("rebalance generation " + std::to_string(g) + " cannot be switched to: " +
                              (!begin_status_.ok() ? begin_status_ : load_status_).ToString());
  }
  Status st = engine_.SwitchPlacements(std::move(target_), std::move(loaded_));
  target_.clear();
  loaded_ = ModelWeights{};
  if (!st.ok()) {
    Fail(g, st.message());
    return st;
  }
  generation_ = g;
  log::Info("serving under expert placement generation %llu", static_cast<unsigned long long>(g));
  return Status::Ok();
}

void ExpertRebalancer::Abandon() {
  Join();
  const uint64_t g = pending_;
  pending_ = 0;
  std::string why = !begin_status_.ok()  ? begin_status_.ToString()
                    : !load_status_.ok() ? load_status_.ToString()
                                         : "another rank of the group could not take it (its log says why)";
  target_.clear();
  loaded_ = ModelWeights{};
  Fail(g, std::move(why));
}

}  // namespace shoal
