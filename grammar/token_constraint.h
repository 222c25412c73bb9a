// Output constrained to a JSON schema, token by token: before each sampled token, the mask of tokens
// that keep the output a prefix of a text the schema accepts (grammar/json_matcher.h); the stop tokens
// only once it is complete. This is how `tool_choice: "required"` or a named tool makes a model write
// a call the tool can take, as vLLM does with xgrammar.
//
// The mask walks the vocabulary sorted by bytes, keeping the matcher's state at every depth of the
// current token, so a prefix shared by many tokens is matched once and a prefix that fails rules out
// every token under it at once. Inside a string's body — most of what a generation writes — tokens
// without a quote, backslash or control byte are taken in bulk and only the others are tried.
//
// Thread-safety: a TokenVocabulary is immutable and shared; a TokenConstraint belongs to one sequence
// and one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "grammar/json_matcher.h"

namespace shoal {
class Tokenizer;
}

namespace shoal::grammar {

class TokenVocabulary {
 public:
  // bytes[t]: what token t adds to the text when it comes in the middle of an output. Empty: never
  // generated under a constraint (special tokens, tokens that decode to nothing).
  explicit TokenVocabulary(std::vector<std::string> bytes);
  // Each token's bytes from the tokenizer (decoded after a plain one-letter token, so that a
  // SentencePiece word-start marker becomes the space it is mid-text); special tokens are empty.
  static StatusOr<std::shared_ptr<const TokenVocabulary>> FromTokenizer(const Tokenizer& tokenizer);

  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  const std::string& bytes(int32_t t) const { return bytes_[static_cast<size_t>(t)]; }

 private:
  friend class TokenConstraint;
  std::vector<std::string> bytes_;
  // A list of tokens sorted by their bytes, with the bytes each shares with the one before it.
  struct SortedTokens {
    std::vector<int32_t> ids;
    std::vector<uint32_t> lcp;  // lcp[0] = 0
  };
  SortedTokens SortByBytes(std::vector<int32_t> ids) const;
  SortedTokens sorted_;  // the non-empty tokens
  // [size] code points a string body's bytes gain from the token (≥ 0), or that it must be tried
  // byte by byte (-1: a quote, backslash or control byte) or is never taken there (-2).
  std::vector<int32_t> plain_cp_;
  SortedTokens other_;                 // the tokens to try (-1 above)
  std::vector<uint8_t> plain_mask_;    // [size] 1 for a token a string body takes whole (≥ 0 above)
};

class TokenConstraint {
 public:
  TokenConstraint(std::shared_ptr<const JsonGrammar> grammar, std::shared_ptr<const TokenVocabulary> vocabulary);

  // allowed (resized to `vocab`, the model's vocabulary, which may be larger than the tokenizer's):
  // 1 for every token that keeps the output a prefix of an accepted text; the stop ids 1 exactly when
  // the output is complete (whatever text a stop id has); 0 for the rest.
  void Allowed(std::span<const int32_t> stop_ids, int32_t vocab, std::vector<uint8_t>* allowed);
  // Advances past a generated token (not a stop id). False if the token breaks the constraint (then
  // the constraint is dead: every later mask is empty).
  bool Accept(int32_t token);
  bool complete() const { return matcher_.accepting(); }
  bool dead() const { return matcher_.dead(); }

 private:
  // Sets the tokens of `list` the matcher can take (depth-first over shared prefixes).
  void Walk(const TokenVocabulary::SortedTokens& list, int32_t limit, std::vector<uint8_t>* allowed);

  JsonMatcher matcher_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::vector<JsonMatcher> depth_states_;  // Allowed's scratch: the state after each byte of a token
};

}  // namespace shoal::grammar
