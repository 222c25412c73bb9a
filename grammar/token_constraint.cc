#include "grammar/token_constraint.h"

#include <algorithm>
#include <numeric>

#include "common/utf8.h"
#include "model/tokenizer.h"

namespace shoal::grammar {

namespace {

// Code points of a token a string body takes whole: valid, complete UTF-8 with no quote, backslash or
// control byte; -1 for any other token (those are tried byte by byte).
int32_t PlainCodePoints(const std::string& b) {
  int32_t n = 0;
  for (size_t i = 0; i < b.size(); ++n) {
    const auto ch = static_cast<uint8_t>(b[i]);
    if (ch == '"' || ch == '\\' || ch < 0x20) return -1;
    const size_t len = Utf8SequenceLength(b, i);
    if (len == 0) return -1;
    i += len;
  }
  return n;
}

}  // namespace

TokenVocabulary::TokenVocabulary(std::vector<std::string> bytes) : bytes_(std::move(bytes)) {
  plain_cp_.assign(bytes_.size(), -1);
  for (size_t t = 0; t < bytes_.size(); ++t) {
    if (bytes_[t].empty()) continue;
    sorted_.push_back(static_cast<int32_t>(t));
    plain_cp_[t] = PlainCodePoints(bytes_[t]);
    if (plain_cp_[t] < 0) other_.push_back(static_cast<int32_t>(t));
  }
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  lcp_.assign(sorted_.size(), 0);
  for (size_t i = 1; i < sorted_.size(); ++i) {
    const std::string& x = bytes_[static_cast<size_t>(sorted_[i - 1])];
    const std::string& y = bytes_[static_cast<size_t>(sorted_[i])];
    const size_t n = std::min(x.size(), y.size());
    size_t k = 0;
    while (k < n && x[k] == y[k]) ++k;
    lcp_[i] = static_cast<uint32_t>(k);
  }
}

StatusOr<std::shared_ptr<const TokenVocabulary>> TokenVocabulary::FromTokenizer(const Tokenizer& tok) {
  // An anchor token decoded first absorbs what decoders do at the start of a text (SentencePiece's
  // leading-space strip, a Strip decoder), so the difference is the token's bytes mid-text.
  std::optional<int32_t> anchor = tok.TokenId("a");
  if (!anchor) {
    StatusOr<std::vector<int32_t>> ids = tok.Encode("a", /*add_special_tokens=*/false);
    if (ids.ok() && ids->size() == 1) anchor = (*ids)[0];
  }
  if (!anchor) return Unimplemented("the tokenizer has no token for the text \"a\" to decode tokens after");
  SHOAL_ASSIGN_OR_RETURN(std::string prefix, tok.Decode(std::vector<int32_t>{*anchor}, /*skip_special_tokens=*/false));
  std::vector<std::string> bytes(static_cast<size_t>(tok.vocab_size()));
  for (int32_t t = 0; t < tok.vocab_size(); ++t) {
    if (!tok.HasToken(t) || tok.IsSpecial(t)) continue;
    StatusOr<std::string> text = tok.Decode(std::vector<int32_t>{*anchor, t}, /*skip_special_tokens=*/false);
    if (!text.ok()) continue;
    if (text->compare(0, prefix.size(), prefix) == 0) {
      bytes[static_cast<size_t>(t)] = text->substr(prefix.size());
    } else {
      StatusOr<std::string> alone = tok.Decode(std::vector<int32_t>{t}, /*skip_special_tokens=*/false);
      if (alone.ok()) bytes[static_cast<size_t>(t)] = std::move(*alone);
    }
  }
  return std::make_shared<const TokenVocabulary>(std::move(bytes));
}

TokenConstraint::TokenConstraint(std::shared_ptr<const JsonGrammar> grammar, std::shared_ptr<const TokenVocabulary> vocabulary)
    : matcher_(std::move(grammar)), vocab_(std::move(vocabulary)) {}

bool TokenConstraint::Accept(int32_t token) {
  if (token < 0 || token >= vocab_->size() || vocab_->bytes(token).empty()) {
    matcher_.FeedByte(0);  // no byte 0 is ever accepted: the constraint is dead
    return false;
  }
  return matcher_.Feed(vocab_->bytes(token));
}

void TokenConstraint::Allowed(std::span<const int32_t> stop_ids, int32_t vocab, std::vector<uint8_t>* allowed) {
  allowed->assign(static_cast<size_t>(std::max(vocab, 0)), 0);
  if (matcher_.dead()) return;
  const TokenVocabulary& v = *vocab_;
  const auto limit = std::min(vocab, v.size());
  auto set = [&](int32_t t) {
    if (t < limit) (*allowed)[static_cast<size_t>(t)] = 1;
  };
  if (matcher_.accepting()) {
    for (int32_t t : stop_ids) {
      if (t >= 0 && t < vocab) (*allowed)[static_cast<size_t>(t)] = 1;
    }
  }
  int64_t room = 0;
  if (matcher_.InStringBody(&room)) {
    for (int32_t t : v.sorted_) {
      if (v.plain_cp_[static_cast<size_t>(t)] >= 0 && v.plain_cp_[static_cast<size_t>(t)] <= room) set(t);
    }
    if (depth_states_.empty()) depth_states_.push_back(matcher_);
    for (int32_t t : v.other_) {
      depth_states_[0] = matcher_;
      if (depth_states_[0].Feed(v.bytes(t))) set(t);
    }
    return;
  }
  // Depth-first over the sorted vocabulary: depth_states_[k] is the state after the first k bytes of
  // the current token, valid for k ≤ valid; a token whose first `dead_at` bytes failed rules out the
  // tokens after it that share them.
  size_t valid = 0;
  size_t dead_at = SIZE_MAX;
  if (depth_states_.empty()) depth_states_.push_back(matcher_);
  depth_states_[0] = matcher_;
  for (size_t i = 0; i < v.sorted_.size(); ++i) {
    const int32_t t = v.sorted_[i];
    const std::string& b = v.bytes(t);
    const size_t shared = v.lcp_[i];
    if (dead_at <= shared) continue;
    dead_at = SIZE_MAX;
    size_t k = std::min(valid, shared);
    if (depth_states_.size() < b.size() + 1) depth_states_.resize(b.size() + 1, matcher_);
    for (; k < b.size(); ++k) {
      depth_states_[k + 1] = depth_states_[k];
      if (!depth_states_[k + 1].FeedByte(static_cast<uint8_t>(b[k]))) break;
    }
    if (k < b.size()) {
      dead_at = k + 1;
      valid = k;
    } else {
      valid = b.size();
      set(t);
    }
  }
}

}  // namespace shoal::grammar
