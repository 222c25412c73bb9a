#include "coordinator/stop_strings.h"

#include <algorithm>
#include <utility>

#include "common/utf8.h"

namespace shoal::coord {
namespace {

// The largest cut <= `cut` (and >= `lo`) that splits s neither inside a character nor before an
// unfinished one at the end (bytes no sequence starts with count as whole, so invalid text is
// released rather than held). Looks back at most 3 bytes: a longer run of continuation bytes is not
// UTF-8, and holding it would let invalid output pile up unreleased.
size_t CharBoundaryAtOrBefore(const std::string& s, size_t lo, size_t cut) {
  // A multi-byte character whose last bytes have not arrived yet stays held.
  for (size_t lead = s.size(), back = 0; lead > lo && back < 4; ++back) {
    --lead;
    if (IsUtf8Continuation(s[lead])) continue;
    if (s.size() - lead < Utf8LeadLength(s[lead])) cut = std::min(cut, lead);
    break;
  }
  for (size_t back = 0; back < 3 && cut > lo && cut < s.size() && IsUtf8Continuation(s[cut]); ++back) --cut;
  return cut;
}

}  // namespace

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (size_t n = 0; n < stops.size(); ++n) {
    if (stops[n].empty()) continue;
    Stop s;
    s.index = n;
    s.text = std::move(stops[n]);
    s.border.assign(s.text.size(), 0);
    size_t k = 0;
    for (size_t i = 1; i < s.text.size(); ++i) {
      while (k > 0 && s.text[i] != s.text[k]) k = s.border[k - 1];
      if (s.text[i] == s.text[k]) ++k;
      s.border[i] = k;
    }
    stops_.push_back(std::move(s));
  }
}

StopMatcher::Result StopMatcher::Append(std::string_view text, bool is_final, bool may_stop) {
  Result out;
  if (stopped_) return out;
  const size_t fed_from = held_.size();
  held_.append(text);
  // Only the new bytes are fed: each stop's state already summarizes everything before them.
  size_t best_start = std::string::npos, best_stop = 0;
  for (size_t i = fed_from; i < held_.size(); ++i) {
    const char c = held_[i];
    for (Stop& s : stops_) {
      size_t q = s.matched;
      while (q > 0 && s.text[q] != c) {
        q = s.border[q - 1];
        ++comparisons_;
      }
      ++comparisons_;
      if (s.text[q] == c) ++q;
      if (q == s.text.size() && !may_stop) {
        q = s.border[q - 1];
      } else if (q == s.text.size()) {
        // A match's earlier bytes were a pending partial match, so they are still held: start >= held_begin_.
        const size_t start = i + 1 - q;
        if (start < best_start || (start == best_start && s.index < best_stop)) {
          best_start = start;
          best_stop = s.index;
        }
        q = s.border[q - 1];
      }
      s.matched = q;
    }
  }
  if (best_start != std::string::npos) {
    out.text = held_.substr(held_begin_, best_start - held_begin_);
    out.stop = best_stop;
    stopped_ = true;
    std::string().swap(held_);
    held_begin_ = 0;
    return out;
  }
  if (is_final) {
    out.text = Flush();
    return out;
  }
  // Everything before the longest pending partial match can no longer be part of a stop string.
  size_t keep = 0;
  for (const Stop& s : stops_) keep = std::max(keep, s.matched);
  const size_t cut = CharBoundaryAtOrBefore(held_, held_begin_, held_.size() - keep);
  out.text = held_.substr(held_begin_, cut - held_begin_);
  held_begin_ = cut;
  if (held_begin_ >= held_.size() - held_begin_) {
    held_.erase(0, held_begin_);
    held_begin_ = 0;
  }
  return out;
}

std::string StopMatcher::Flush() {
  std::string out = held_.substr(held_begin_);
  held_.clear();
  held_begin_ = 0;
  // Nothing is held any more, so no partial match may continue into later input.
  for (Stop& s : stops_) s.matched = 0;
  return out;
}

}  // namespace shoal::coord
