#include "grammar/token_constraint.h"

#include <algorithm>
#include <numeric>

#include "common/utf8.h"
#include "model/tokenizer.h"

namespace shoal::grammar {

namespace {

// How a string body (no escape or UTF-8 sequence pending) takes a token: kTried (a quote, backslash
// or control byte: try it), kNever (a stray continuation byte or bytes UTF-8 never has), else the
// code points it adds — a sequence left incomplete at its end counts, the next token completes it.
constexpr int32_t kTried = -1, kNever = -2;

int32_t InBody(const std::string& b) {
  int32_t n = 0;
  for (size_t i = 0; i < b.size();) {
    const auto ch = static_cast<uint8_t>(b[i]);
    if (ch == '"' || ch == '\\' || ch < 0x20) return kTried;
    ++n;
    if (ch < 0x80) {
      ++i;
      continue;
    }
    const size_t len = Utf8SequenceLength(b, i);
    if (len > 0) {
      i += len;
      continue;
    }
    // Not a whole sequence: fine only as the valid start of one that the token ends inside.
    const size_t want = Utf8LeadLength(static_cast<char>(ch));
    if (ch < 0xC2 || ch > 0xF4 || i + want <= b.size()) return kNever;
    const uint8_t lo = ch == 0xE0 ? 0xA0 : ch == 0xF0 ? 0x90 : 0x80;
    const uint8_t hi = ch == 0xED ? 0x9F : ch == 0xF4 ? 0x8F : 0xBF;
    for (size_t k = i + 1; k < b.size(); ++k) {
      const auto c = static_cast<uint8_t>(b[k]);
      if (c < (k == i + 1 ? lo : 0x80) || c > (k == i + 1 ? hi : 0xBF)) return kNever;
    }
    return n;
  }
  return n;
}

}  // namespace

TokenVocabulary::TokenVocabulary(std::vector<std::string> bytes) : bytes_(std::move(bytes)) {
  plain_cp_.assign(bytes_.size(), -1);
  plain_mask_.assign(bytes_.size(), 0);
  std::vector<int32_t> all, other;
  for (size_t t = 0; t < bytes_.size(); ++t) {
    if (bytes_[t].empty()) continue;
    all.push_back(static_cast<int32_t>(t));
    plain_cp_[t] = InBody(bytes_[t]);
    if (plain_cp_[t] == kTried) other.push_back(static_cast<int32_t>(t));
    plain_mask_[t] = plain_cp_[t] >= 0 ? 1 : 0;
  }
  sorted_ = SortByBytes(std::move(all));
  other_ = SortByBytes(std::move(other));
}

TokenVocabulary::SortedTokens TokenVocabulary::SortByBytes(std::vector<int32_t> ids) const {
  SortedTokens out;
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });
  out.lcp.assign(ids.size(), 0);
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string& x = bytes_[static_cast<size_t>(ids[i - 1])];
    const std::string& y = bytes_[static_cast<size_t>(ids[i])];
    const size_t n = std::min(x.size(), y.size());
    size_t k = 0;
    while (k < n && x[k] == y[k]) ++k;
    out.lcp[i] = static_cast<uint32_t>(k);
  }
  out.ids = std::move(ids);
  return out;
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
  int64_t room = 0;
  if (matcher_.InStringBody(&room)) {
    // The tokens a string body takes whole, by their code points; then the ones to try.
    if (room == INT64_MAX) {
      std::copy(v.plain_mask_.begin(), v.plain_mask_.begin() + limit, allowed->begin());
    } else {
      for (int32_t t = 0; t < limit; ++t) {
        const int32_t cp = v.plain_cp_[static_cast<size_t>(t)];
        if (cp >= 0 && cp <= room) (*allowed)[static_cast<size_t>(t)] = 1;
      }
    }
    Walk(v.other_, limit, allowed);
  } else {
    Walk(v.sorted_, limit, allowed);
  }
  // A stop id ends the output whatever its bytes: allowed exactly when the output is whole.
  const bool whole = matcher_.accepting();
  for (int32_t t : stop_ids) {
    if (t >= 0 && t < vocab) (*allowed)[static_cast<size_t>(t)] = whole ? 1 : 0;
  }
}

void TokenConstraint::Walk(const TokenVocabulary::SortedTokens& list, int32_t limit, std::vector<uint8_t>* allowed) {
  // depth_states_[k] is the state after the first k bytes of the current token, valid for k ≤ valid;
  // a token whose first `dead_at` bytes failed rules out the tokens after it that share them.
  const TokenVocabulary& v = *vocab_;
  size_t valid = 0;
  size_t dead_at = SIZE_MAX;
  if (depth_states_.empty()) depth_states_.push_back(matcher_);
  depth_states_[0] = matcher_;
  for (size_t i = 0; i < list.ids.size(); ++i) {
    const int32_t t = list.ids[i];
    const std::string& b = v.bytes(t);
    const size_t shared = list.lcp[i];
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
      if (t < limit) (*allowed)[static_cast<size_t>(t)] = 1;
    }
  }
}

}  // namespace shoal::grammar
