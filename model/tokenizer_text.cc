// Text primitives for the tokenizer: UTF-8 walking, Unicode properties and normalization (ICU), the
// GPT-2 byte-level alphabet, PCRE2 regexes and JSON field access with path-naming errors.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <array>

#include "model/tokenizer.h"
#include "model/tokenizer_internal.h"

namespace shoal {

std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  const int32_t n = static_cast<int32_t>(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  while (i < s.size()) {
    int32_t j = static_cast<int32_t>(i);
    UChar32 c;
    // ICU's U8_NEXT consumes exactly one maximal invalid subpart on error, the same unit Rust's
    // from_utf8_lossy replaces.
    U8_NEXT(p, j, n, c);
    if (c < 0) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(s.substr(i, j - i));
    }
    i = static_cast<size_t>(j);
  }
  return out;
}

namespace tok_internal {

char32_t NextCodepoint(std::string_view s, size_t& pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  int32_t j = static_cast<int32_t>(pos);
  UChar32 c;
  U8_NEXT(p, j, static_cast<int32_t>(s.size()), c);
  pos = static_cast<size_t>(j);
  return c < 0 ? 0xFFFD : static_cast<char32_t>(c);
}

void AppendUtf8(std::string& out, char32_t cp) {
  char buf[4];
  int32_t len = 0;
  UBool err = false;
  U8_APPEND(reinterpret_cast<uint8_t*>(buf), len, 4, static_cast<UChar32>(cp), err);
  if (err) {
    out += "\xEF\xBF\xBD";
  } else {
    out.append(buf, len);
  }
}

std::optional<size_t> FirstInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const int32_t n = static_cast<int32_t>(s.size());
  int32_t j = 0;
  while (j < n) {
    const int32_t at = j;
    UChar32 c;
    U8_NEXT(p, j, n, c);
    if (c < 0) return static_cast<size_t>(at);
  }
  return std::nullopt;
}

size_t IncompleteUtf8Tail(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<uint8_t>(s[n - back]);
    if (IsUtf8Continuation(static_cast<char>(b))) continue;  // keep looking for the lead
    size_t need = 0;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) need = 3;
    else if (b >= 0xF0 && b <= 0xF4) need = 4;
    if (need <= back) return 0;
    // Only a prefix that can still become a valid character is held back.
    std::string probe(s.substr(n - back));
    while (probe.size() < need) probe += '\x80';
    if (need == 3 && b == 0xE0) probe[1] = static_cast<char>(std::max<uint8_t>(0xA0, probe[1]));
    if (need == 4 && b == 0xF0) probe[1] = static_cast<char>(std::max<uint8_t>(0x90, probe[1]));
    return FirstInvalidUtf8(probe).has_value() ? 0 : back;
  }
  return 0;
}

bool IsWhitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool IsNumeric(char32_t c) {
  const int8_t t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool IsWordChar(char32_t c) {
  const auto u = static_cast<UChar32>(c);
  const int8_t t = u_charType(u);
  return u_isUAlphabetic(u) || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION ||
         u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL);
}

namespace {

Status ToUtf16(const std::string& s, std::u16string& out) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  u_strFromUTF8(nullptr, 0, &len, s.data(), static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) return Internal(std::string("ICU u_strFromUTF8: ") + u_errorName(err));
  out.resize(len);
  err = U_ZERO_ERROR;
  u_strFromUTF8(out.data(), len, &len, s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) return Internal(std::string("ICU u_strFromUTF8: ") + u_errorName(err));
  return Status::Ok();
}

Status FromUtf16(const std::u16string& s, std::string& out) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  u_strToUTF8(nullptr, 0, &len, s.data(), static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) return Internal(std::string("ICU u_strToUTF8: ") + u_errorName(err));
  out.resize(len);
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), len, &len, s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) return Internal(std::string("ICU u_strToUTF8: ") + u_errorName(err));
  return Status::Ok();
}

}  // namespace

Status UnicodeNormalize(NormForm form, std::string& s) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<uint8_t>(c) < 0x80;
  if (ascii) return Status::Ok();  // every form leaves ASCII unchanged
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormForm::kNFC: n = unorm2_getNFCInstance(&err); break;
    case NormForm::kNFD: n = unorm2_getNFDInstance(&err); break;
    case NormForm::kNFKC: n = unorm2_getNFKCInstance(&err); break;
    case NormForm::kNFKD: n = unorm2_getNFKDInstance(&err); break;
  }
  if (U_FAILURE(err)) return Internal(std::string("ICU normalizer: ") + u_errorName(err));
  std::u16string in;
  SHOAL_RETURN_IF_ERROR(ToUtf16(s, in));
  std::u16string out(in.size() * 3 + 16, u'\0');
  int32_t len = unorm2_normalize(n, in.data(), static_cast<int32_t>(in.size()), out.data(),
                                 static_cast<int32_t>(out.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    out.resize(len);
    err = U_ZERO_ERROR;
    len = unorm2_normalize(n, in.data(), static_cast<int32_t>(in.size()), out.data(), len, &err);
  }
  if (U_FAILURE(err)) return Internal(std::string("ICU unorm2_normalize: ") + u_errorName(err));
  out.resize(len);
  return FromUtf16(out, s);
}

Status UnicodeLowercase(std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t at = pos;
    const char32_t c = NextCodepoint(s, pos);
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    // One code point at a time, without context, as Rust's char::to_lowercase (no final-sigma rule).
    std::u16string one;
    SHOAL_RETURN_IF_ERROR(ToUtf16(std::string(s.substr(at, pos - at)), one));
    char16_t buf[8];
    UErrorCode err = U_ZERO_ERROR;
    const int32_t len = u_strToLower(buf, 8, one.data(), static_cast<int32_t>(one.size()), "", &err);
    if (U_FAILURE(err)) return Internal(std::string("ICU u_strToLower: ") + u_errorName(err));
    std::string piece;
    SHOAL_RETURN_IF_ERROR(FromUtf16(std::u16string(buf, len), piece));
    out += piece;
  }
  s = std::move(out);
  return Status::Ok();
}

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> chars;
  std::unordered_map<char32_t, int> bytes;
  ByteLevelTables() {
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      AppendUtf8(chars[b], c);
      bytes[c] = b;
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

const std::string& ByteLevelChar(uint8_t b) { return Tables().chars[b]; }

int ByteLevelByte(char32_t c) {
  const auto& m = Tables().bytes;
  auto it = m.find(c);
  return it == m.end() ? -1 : it->second;
}

// ---- Regex ----

std::string Quote(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

StatusOr<std::shared_ptr<Regex>> Regex::Compile(const std::string& pattern, const std::string& path) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return InvalidArgument(path + ": regex " + Quote(pattern) + " does not compile at offset " +
                           std::to_string(err_off) + ": " + reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is the fallback
  std::shared_ptr<Regex> r(new Regex());
  r->code_ = code;
  r->pattern_ = pattern;
  return r;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

Status Regex::FindAll(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  auto* code = static_cast<pcre2_code*>(code_);
  struct MatchData {
    pcre2_match_data* md = nullptr;
    ~MatchData() { pcre2_match_data_free(md); }
  };
  thread_local MatchData tls;
  if (tls.md == nullptr) tls.md = pcre2_match_data_create(8, nullptr);
  size_t offset = 0;
  while (offset <= s.size()) {
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), offset, PCRE2_NO_UTF_CHECK,
                         tls.md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), offset,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, tls.md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      return ResourceExhausted("regex " + Quote(pattern_) + " failed on a " + std::to_string(s.size()) +
                               "-byte string: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tls.md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      offset = e;
    } else {
      // An empty match splits nothing; step over one character.
      if (b >= s.size()) break;
      size_t next = b;
      NextCodepoint(s, next);
      offset = next;
    }
  }
  return Status::Ok();
}

Status Regex::ReplaceAll(std::string& s, const std::string& content) const {
  std::vector<std::pair<size_t, size_t>> m;
  SHOAL_RETURN_IF_ERROR(FindAll(s, m));
  if (m.empty()) return Status::Ok();
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(s, prev, b - prev);
    out += content;
    prev = e;
  }
  out.append(s, prev, std::string::npos);
  s = std::move(out);
  return Status::Ok();
}

// ---- JSON helpers ----

const json* Field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string Sub(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }
std::string Sub(const std::string& path, size_t index) { return path + "[" + std::to_string(index) + "]"; }

Status GetString(const json& obj, const char* key, const std::string& path, std::string& out, bool required) {
  const json* v = Field(obj, key);
  if (v == nullptr) {
    if (required) return InvalidArgument(Sub(path, key) + ": missing (expected a string)");
    return Status::Ok();
  }
  if (!v->is_string()) return InvalidArgument(Sub(path, key) + ": expected a string, got " + v->type_name());
  out = v->get<std::string>();
  return Status::Ok();
}

Status GetBool(const json& obj, const char* key, const std::string& path, bool& out) {
  const json* v = Field(obj, key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_boolean()) return InvalidArgument(Sub(path, key) + ": expected a boolean, got " + v->type_name());
  out = v->get<bool>();
  return Status::Ok();
}

}  // namespace tok_internal
}  // namespace shoal
