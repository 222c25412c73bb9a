// Internal to the tokenizer (model/tokenizer*.cc): the pipeline components parsed from tokenizer.json.
//
// Each component is a small tagged struct parsed once (errors name the JSON path, e.g.
// "pre_tokenizer.pretokenizers[0].pattern.Regex") and applied by a free function. Strings are UTF-8
// bytes throughout; the input is validated once in Encode, and every step keeps it valid, so PCRE2 runs
// with PCRE2_NO_UTF_CHECK.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/utf8.h"

namespace shoal::tok_internal {

using json = nlohmann::json;

// ---- UTF-8 and Unicode properties (tokenizer_text.cc) ----

// Decodes the code point at s[pos] and advances pos; s must be valid UTF-8.
char32_t NextCodepoint(std::string_view s, size_t& pos);
void AppendUtf8(std::string& out, char32_t cp);
// Byte offset of the first invalid UTF-8 sequence, or nullopt if s is valid.
std::optional<size_t> FirstInvalidUtf8(std::string_view s);
// Length of a trailing sequence that is a proper prefix of some valid UTF-8 character (0..3).
size_t IncompleteUtf8Tail(std::string_view s);
bool IsWhitespace(char32_t c);  // Unicode White_Space (Rust char::is_whitespace, regex \s)
bool IsNumeric(char32_t c);     // general category Nd, Nl or No (Rust char::is_numeric)
bool IsWordChar(char32_t c);    // Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control

enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };
Status UnicodeNormalize(NormForm form, std::string& s);
Status UnicodeLowercase(std::string& s);  // per code point full lowercase mapping, like HF

// GPT-2 byte ↔ printable-character table used by the ByteLevel pre-tokenizer and decoder.
const std::string& ByteLevelChar(uint8_t b);      // UTF-8 of the char standing for byte b
int ByteLevelByte(char32_t c);                    // the byte a char stands for, or -1

// A PCRE2 pattern compiled in UTF + UCP mode (JIT when available), as HF's Oniguruma regexes.
class Regex {
 public:
  static StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern, const std::string& path);
  ~Regex();
  // All non-overlapping, non-empty matches as byte ranges [begin, end), left to right.
  Status FindAll(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  // Replaces every match by `content` (literal).
  Status ReplaceAll(std::string& s, const std::string& content) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code*
  std::string pattern_;
};

// JSON field helpers: missing and null are the same; a present field of the wrong type is an error
// naming `path.key`.
const json* Field(const json& obj, const char* key);
Status GetString(const json& obj, const char* key, const std::string& path, std::string& out, bool required);
Status GetBool(const json& obj, const char* key, const std::string& path, bool& out);
std::string Sub(const std::string& path, const char* key);
std::string Sub(const std::string& path, size_t index);
std::string Quote(const std::string& s);  // as a JSON string literal, for messages

// ---- normalizers, pre-tokenizers, decoders (tokenizer_pretokenize.cc) ----

struct Normalizer {
  enum class Kind { kUnicode, kLowercase, kPrepend, kReplace, kStrip, kSequence } kind = Kind::kSequence;
  NormForm form = NormForm::kNFC;
  std::string text;                // Prepend text; Replace content
  std::string literal;             // Replace String pattern
  std::shared_ptr<Regex> regex;    // Replace Regex pattern
  bool left = false, right = false;  // Strip
  std::vector<Normalizer> children;
};
// nullopt for a JSON null.
StatusOr<std::optional<Normalizer>> ParseNormalizer(const json& j, const std::string& path);
Status Normalize(const Normalizer& n, std::string& s);

// A pre-token. start_len > 0 when the piece begins with text that HF aligns to offset 0 of the original
// input (what Metaspace's prepend_scheme "first" tests): that many leading bytes of `text` do. More than
// the first byte can: "½" normalized by NFKC to "1⁄2" is all at offset 0, so each of its digit splits is.
struct Piece {
  std::string text;
  size_t start_len = 0;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizer {
  enum class Kind { kByteLevel, kSplit, kMetaspace, kDigits, kSequence } kind = Kind::kSequence;
  bool add_prefix_space = false;   // ByteLevel
  std::shared_ptr<Regex> regex;    // Split (Regex), ByteLevel with use_regex
  std::string literal;             // Split (String)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  std::string replacement;         // Metaspace
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
  bool split = true;               // Metaspace
  bool individual_digits = false;  // Digits
  std::vector<PreTokenizer> children;
};
StatusOr<std::optional<PreTokenizer>> ParsePreTokenizer(const json& j, const std::string& path);
Status PreTokenize(const PreTokenizer& p, std::vector<Piece>& pieces);

struct Decoder {
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip, kSequence } kind =
      Kind::kSequence;
  std::string literal, content;   // Replace: String pattern and content
  std::shared_ptr<Regex> regex;   // Replace: Regex pattern
  std::string strip_char;         // Strip: the character (UTF-8)
  size_t start = 0, stop = 0;     // Strip
  std::string replacement;        // Metaspace
  bool strip_first = true;        // Metaspace: prepend_scheme != never
  std::vector<Decoder> children;
};
StatusOr<std::optional<Decoder>> ParseDecoder(const json& j, const std::string& path);
Status DecodeChain(const Decoder& d, std::vector<std::string>& tokens);

// ---- BPE model (tokenizer_bpe.cc) ----

class BpeModel {
 public:
  static StatusOr<std::unique_ptr<BpeModel>> Parse(const json& j, const std::string& path);
  // Appends the ids of one pre-token.
  void Tokenize(std::string_view word, std::vector<int32_t>& out) const;
  std::optional<int32_t> Find(std::string_view token) const;
  const std::string* IdToToken(int32_t id) const;  // nullptr if no vocab entry has this id
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  struct MergeResult {
    int32_t rank;
    int32_t new_id;
  };
  void MergeWord(std::string_view word, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> vocab_;
  std::vector<const std::string*> id_to_token_;
  std::unordered_map<uint64_t, MergeResult> merges_;  // key: (left id << 32) | right id
  int32_t byte_ids_[256];                             // <0xAB> tokens, -1 when absent
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  static constexpr size_t kCacheMax = 1 << 16;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> cache_;
};

}  // namespace shoal::tok_internal
