#include "coordinator/reasoning.h"

namespace shoal::coord {

namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

// The length of the longest suffix of s that is a proper prefix of tag.
size_t PartialTagSuffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

}  // namespace

StatusOr<ReasoningFormat> ParseReasoningFormat(std::string_view name) {
  if (name.empty() || name == "none") return ReasoningFormat::kNone;
  if (name == "qwen3") return ReasoningFormat::kQwen3;
  if (name == "deepseek_r1") return ReasoningFormat::kDeepSeekR1;
  return InvalidArgument("reasoning parser '" + std::string(name) + "': expected none, qwen3 or deepseek_r1");
}

ReasoningSplitter::ReasoningSplitter(ReasoningFormat format)
    : state_(format == ReasoningFormat::kNone ? State::kContent : State::kStart) {
  // DeepSeek-R1 starts inside the reasoning, but may still write the opening tag itself: kStart
  // decides that too, and falls into reasoning rather than content.
  deepseek_ = format == ReasoningFormat::kDeepSeekR1;
}

void ReasoningSplitter::Feed(std::string_view text, std::string* reasoning, std::string* content) {
  if (state_ == State::kContent && held_.empty()) {
    content->append(text);
    return;
  }
  held_.append(text);
  while (!held_.empty()) {
    if (state_ == State::kStart) {
      if (held_.size() < kOpen.size() && kOpen.substr(0, held_.size()) == held_) return;  // undecided
      if (held_.compare(0, kOpen.size(), kOpen) == 0) {
        held_.erase(0, kOpen.size());
        state_ = State::kReasoning;
      } else {
        state_ = deepseek_ ? State::kReasoning : State::kContent;
      }
      continue;
    }
    if (state_ == State::kContent) {
      content->append(held_);
      held_.clear();
      return;
    }
    // Reasoning: up to the closing tag, holding back a possible partial one.
    const size_t close = held_.find(kClose);
    if (close != std::string::npos) {
      reasoning->append(held_, 0, close);
      held_.erase(0, close + kClose.size());
      state_ = State::kContent;
      continue;
    }
    const size_t keep = PartialTagSuffix(held_, kClose);
    reasoning->append(held_, 0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return;
  }
}

void ReasoningSplitter::Finish(std::string* reasoning, std::string* content) {
  if (held_.empty()) return;
  if (state_ == State::kReasoning || (state_ == State::kStart && deepseek_)) {
    reasoning->append(held_);
  } else {
    content->append(held_);
  }
  held_.clear();
}

}  // namespace shoal::coord
