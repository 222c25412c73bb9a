// Hugging Face `tokenizer.json` tokenizer: text → token ids and back, matching HF `tokenizers` exactly
// for the BPE models LLMs ship (Qwen2/3, Llama 3, DeepSeek-V3 byte-level BPE; Mistral/Mixtral
// SentencePiece-style BPE with byte fallback).
//
// Encode follows HF's pipeline: split the raw text on added tokens (leftmost-longest, honouring
// lstrip/rstrip/single_word), normalize each remaining piece, split again on `normalized` added tokens,
// pre-tokenize (regex splits run through PCRE2 in UTF+UCP mode, which matches HF's Oniguruma on the
// patterns real models use), run BPE on each pre-token, then the post-processor (BOS etc.) when
// add_special_tokens. Decode maps ids to token strings and runs the decoder chain.
//
// Supported components (anything else in tokenizer.json is rejected at load with Unimplemented naming
// its JSON path; malformed files give InvalidArgument naming the file and path):
//   model          BPE: vocab, merges ("a b" or ["a","b"]), unk_token, fuse_unk, byte_fallback,
//                  ignore_merges; dropout must be null; continuing_subword_prefix/end_of_word_suffix unset.
//   normalizer     null, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace (String or Regex), Strip,
//                  Sequence.
//   pre_tokenizer  null, ByteLevel, Split (String/Regex; Isolated, Removed, MergedWithPrevious,
//                  MergedWithNext, Contiguous; invert), Metaspace, Digits, Sequence.
//   post_processor null, TemplateProcessing (single), ByteLevel, Sequence.
//   decoder        null, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence.
//
// Decode returns raw bytes: a byte-level or byte-fallback token sequence that stops inside a UTF-8
// character returns the incomplete bytes. HF returns a Rust String instead, equal to ValidUtf8() of
// ours whenever the bytes are valid UTF-8 (for invalid runs of ByteFallback tokens HF writes one U+FFFD
// per token where ValidUtf8 writes one per maximal invalid subsequence).
//
// Thread-safety: a loaded Tokenizer is immutable except for an internal BPE cache guarded by a mutex;
// Encode/Decode may be called from several threads at once. IncrementalDetokenizer is single-threaded.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal {

namespace tok_internal {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // Reads <dir>/tokenizer.json and, when present, <dir>/tokenizer_config.json (bos_token, eos_token,
  // add_bos_token/add_eos_token — used only when tokenizer.json has no post_processor — and
  // chat_template, stored verbatim).
  static StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);
  // Parses tokenizer.json text; `source` names it in errors. No tokenizer_config.json.
  static StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json, const std::string& source);
  // Applies tokenizer_config.json text (as Load does); `source` names it in errors.
  Status ApplyConfigJson(std::string_view config_json, const std::string& source);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // HF encode(text, add_special_tokens). The text must be valid UTF-8 (InvalidArgument naming the byte
  // offset otherwise). add_special_tokens applies the post-processor (e.g. prepends BOS).
  StatusOr<std::vector<int32_t>> Encode(std::string_view utf8_text, bool add_special_tokens) const;
  // HF decode(ids, skip_special_tokens) as raw bytes (see above). An id outside [0, vocab_size()) or
  // naming no token → InvalidArgument naming the id and its position.
  StatusOr<std::string> Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  int32_t vocab_size() const;  // max id + 1 over the model vocab and the added tokens
  std::optional<int32_t> TokenId(std::string_view token) const;  // added token or vocab entry by text
  std::optional<std::string> TokenText(int32_t id) const;        // the inverse; nullopt if no such id
  bool HasToken(int32_t id) const;                                // TokenText(id) has a value, without the copy
  bool IsSpecial(int32_t id) const;                               // an added token marked special
  const std::string& chat_template() const;                       // "" if none
  std::optional<std::string> bos_token() const;                   // token text from tokenizer_config.json
  std::optional<std::string> eos_token() const;

 private:
  explicit Tokenizer(std::unique_ptr<tok_internal::TokenizerImpl> impl);
  std::unique_ptr<tok_internal::TokenizerImpl> impl_;
};

// Replaces each maximal invalid UTF-8 subsequence by U+FFFD (as Rust's String::from_utf8_lossy).
std::string ValidUtf8(std::string_view bytes);

// Streaming detokenization for generation: feed ids one by one, get the newly completed text.
// Uses vLLM's prefix/read offsets — each step decodes a short window starting a few tokens back and
// emits what the new token added — so decoders whose output depends on a token's position (Metaspace,
// Strip dropping the first leading space) give the same text as a full decode. Only whole UTF-8
// characters are emitted; bytes of an unfinished character wait for the next id or Finish().
// Concatenating every Append() output and Finish() equals ValidUtf8(Decode(all ids)).
// Holds a reference to `tok`, which must outlive it.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens);
  // The text completed by `id` (often ""). An invalid id → InvalidArgument; the state is unchanged.
  StatusOr<std::string> Append(int32_t id);
  // Whatever is still held back (an incomplete character becomes U+FFFD). Further Appends start a new
  // stream.
  std::string Finish();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // start of the window re-decoded each step
  size_t read_offset_ = 0;    // ids before this have had their text emitted
};

}  // namespace shoal
