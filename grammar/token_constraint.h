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
  std::vector<int32_t> sorted_;    // the non-empty tokens, by their bytes
  std::vector<uint32_t> lcp_;      // bytes sorted_[i] shares with sorted_[i - 1] (0 for i = 0)
  std::vector<int32_t> plain_cp_;  // [size] code points of a token a string body takes whole; -1: not such a token
  std::vector<int32_t> other_;     // the non-empty tokens that are not plain
};

class TokenConstraint {
 public:
  TokenConstraint(std::shared_ptr<const JsonGrammar> grammar, std::shared_ptr<const TokenVocabulary> vocabulary);

  // allowed (resized to `vocab`, the model's vocabulary, which may be larger than the tokenizer's):
  // 1 for every token that keeps the output a prefix of an accepted text, and for the stop ids when
  // the output is complete; 0 for the rest.
  void Allowed(std::span<const int32_t> stop_ids, int32_t vocab, std::vector<uint8_t>* allowed);
  // Advances past a generated token (not a stop id). False if the token breaks the constraint (then
  // the constraint is dead: every later mask is empty).
  bool Accept(int32_t token);
  bool complete() const { return matcher_.accepting(); }
  bool dead() const { return matcher_.dead(); }

 private:
  JsonMatcher matcher_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::vector<JsonMatcher> depth_states_;  // Allowed's scratch: the state after each byte of a token
};

}  // namespace shoal::grammar
