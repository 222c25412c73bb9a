#include "coordinator/expert_load.h"

#include <algorithm>

namespace shoal::coord {

using json = nlohmann::ordered_json;

uint64_t ExpertLoad::Total() const {
  uint64_t n = 0;
  for (uint64_t t : tokens) n += t;
  return n;
}

double ExpertLoad::RankImbalance(const std::vector<std::vector<int>>& rank_experts) const {
  if (rank_experts.empty() || experts <= 0) return 0;
  std::vector<int> copies(static_cast<size_t>(experts), 0);
  for (const auto& ids : rank_experts) {
    for (int e : ids) {
      if (e >= 0 && e < experts) ++copies[static_cast<size_t>(e)];
    }
  }
  double weighted = 0, weight = 0;
  std::vector<double> rank_load(rank_experts.size());
  for (int l = 0; l < layers; ++l) {
    const uint64_t* row = tokens.data() + static_cast<size_t>(l) * static_cast<size_t>(experts);
    double total = 0;
    for (size_t r = 0; r < rank_experts.size(); ++r) {
      rank_load[r] = 0;
      for (int e : rank_experts[r]) {
        if (e >= 0 && e < experts) rank_load[r] += static_cast<double>(row[e]) / copies[static_cast<size_t>(e)];
      }
      total += rank_load[r];
    }
    if (total <= 0) continue;
    const double mean = total / static_cast<double>(rank_experts.size());
    weighted += total * (*std::max_element(rank_load.begin(), rank_load.end()) / mean);
    weight += total;
  }
  return weight > 0 ? weighted / weight : 0;
}

void ExpertLoadWindow::Record(Clock::time_point now, int layers, int experts, std::vector<uint64_t> cumulative) {
  if (layers != layers_ || experts != experts_) {
    snapshots_.clear();
    layers_ = layers;
    experts_ = experts;
  }
  if (!snapshots_.empty()) {
    const std::vector<uint64_t>& last = snapshots_.back().counts;
    bool backwards = last.size() != cumulative.size();
    for (size_t i = 0; !backwards && i < last.size(); ++i) backwards = cumulative[i] < last[i];
    if (backwards) snapshots_.clear();  // a rank restarted: its counters began again
  }
  // Keep one snapshot per window/12 (the newest always replaces a too-recent one), and the newest
  // snapshot older than the window as the baseline.
  const auto spacing = std::chrono::duration_cast<Clock::duration>(window_) / 12;
  if (snapshots_.size() >= 2 && now - snapshots_[snapshots_.size() - 2].at < spacing) snapshots_.pop_back();
  snapshots_.push_back({now, std::move(cumulative)});
  while (snapshots_.size() > 2 && now - snapshots_[1].at >= window_) snapshots_.pop_front();
}

ExpertLoad ExpertLoadWindow::Current() const {
  ExpertLoad load;
  load.layers = layers_;
  load.experts = experts_;
  load.tokens.assign(static_cast<size_t>(layers_) * static_cast<size_t>(experts_), 0);
  if (snapshots_.size() < 2) return load;
  const Snapshot& a = snapshots_.front();
  const Snapshot& b = snapshots_.back();
  load.seconds = std::chrono::duration<double>(b.at - a.at).count();
  for (size_t i = 0; i < load.tokens.size(); ++i) load.tokens[i] = b.counts[i] - a.counts[i];
  return load;
}

std::vector<uint64_t> GroupCumulative(int layers, int experts, const std::vector<std::vector<int>>& rank_experts,
                                      const std::vector<const std::vector<uint64_t>*>& layer_counts) {
  std::vector<uint64_t> out(static_cast<size_t>(layers) * static_cast<size_t>(experts), 0);
  for (size_t r = 0; r < rank_experts.size() && r < layer_counts.size(); ++r) {
    const std::vector<int>& ids = rank_experts[r];
    const std::vector<uint64_t>* counts = layer_counts[r];
    if (counts == nullptr || ids.empty() || counts->size() != static_cast<size_t>(layers) * ids.size()) continue;
    if (std::any_of(ids.begin(), ids.end(), [&](int e) { return e < 0 || e >= experts; })) continue;
    for (int l = 0; l < layers; ++l) {
      for (size_t i = 0; i < ids.size(); ++i) {
        out[static_cast<size_t>(l) * static_cast<size_t>(experts) + static_cast<size_t>(ids[i])] +=
            (*counts)[static_cast<size_t>(l) * ids.size() + i];
      }
    }
  }
  return out;
}

json ExpertLoadJson(const ExpertLoad& load) {
  json j = json::object();
  j["layers"] = load.layers;
  j["experts"] = load.experts;
  j["window_seconds"] = load.seconds;
  json rows = json::array();
  for (int l = 0; l < load.layers; ++l) {
    const auto* row = load.tokens.data() + static_cast<size_t>(l) * static_cast<size_t>(load.experts);
    rows.push_back(std::vector<uint64_t>(row, row + load.experts));
  }
  j["tokens"] = std::move(rows);
  return j;
}

StatusOr<ExpertLoad> ExpertLoadFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("expert load: expected an object");
  ExpertLoad load;
  for (auto [key, out] : {std::pair<const char*, int*>{"layers", &load.layers}, {"experts", &load.experts}}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (1 << 16)) {
      return InvalidArgument(std::string("expert load: '") + key + "' must be an integer in [1, 65536]");
    }
    *out = j[key].get<int>();
  }
  if (j.contains("window_seconds") && j["window_seconds"].is_number()) load.seconds = j["window_seconds"].get<double>();
  const json* rows = j.contains("tokens") ? &j["tokens"] : nullptr;
  if (rows == nullptr || !rows->is_array() || rows->size() != static_cast<size_t>(load.layers)) {
    return InvalidArgument("expert load: 'tokens' must be an array of " + std::to_string(load.layers) + " layers");
  }
  load.tokens.reserve(static_cast<size_t>(load.layers) * static_cast<size_t>(load.experts));
  for (size_t l = 0; l < rows->size(); ++l) {
    const json& row = (*rows)[l];
    if (!row.is_array() || row.size() != static_cast<size_t>(load.experts)) {
      return InvalidArgument("expert load: tokens[" + std::to_string(l) + "] must have " + std::to_string(load.experts) +
                             " counts");
    }
    for (const json& v : row) {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
        return InvalidArgument("expert load: tokens[" + std::to_string(l) + "] holds a value that is not a count");
      }
      load.tokens.push_back(v.get<uint64_t>());
    }
  }
  return load;
}

}  // namespace shoal::coord
