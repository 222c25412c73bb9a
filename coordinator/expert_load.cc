#include "coordinator/expert_load.h"

#include <algorithm>

namespace shoal::coord {

using json = nlohmann::ordered_json;

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

std::vector<uint64_t> GroupCumulative(int layers, int experts, const std::vector<const std::vector<uint64_t>*>& layer_counts) {
  const size_t n = static_cast<size_t>(std::max(0, layers)) * static_cast<size_t>(std::max(0, experts));
  std::vector<uint64_t> out(n, 0);
  for (const std::vector<uint64_t>* counts : layer_counts) {
    if (counts == nullptr || counts->size() != n) continue;
    for (size_t i = 0; i < n; ++i) out[i] += (*counts)[i];
  }
  return out;
}

}  // namespace shoal::coord
