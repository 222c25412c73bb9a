#include "comm/expert_load.h"

#include <algorithm>

#include "comm/placement.h"

namespace shoal::comm {

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

double ExpertLoad::BalancedImbalance(int ranks) const {
  if (ranks <= 0 || experts <= 0) return 0;
  // The placement serving uses (Placement::Balanced: contiguous ranges, or replicas when ranks
  // outnumber experts), so the figure describes a layout that is served.
  StatusOr<Placement> p = Placement::Balanced(experts, ranks);
  if (!p.ok()) return 0;
  std::vector<std::vector<int>> placement(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) placement[static_cast<size_t>(r)] = p->local_experts(r);
  return RankImbalance(placement);
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
  if (static_cast<int64_t>(load.layers) * load.experts > (int64_t{1} << 22)) {
    return InvalidArgument("expert load: layers x experts above 4194304");
  }
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

}  // namespace shoal::comm
