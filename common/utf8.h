// UTF-8 boundaries: the small checks that text cut, escaped or truncated anywhere in shoal uses, so
// that none writes them again. (Lossy repair of whole strings, ICU-based, is model/tokenizer.h's
// ValidUtf8.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shoal {

// A byte that continues a multi-byte sequence (10xxxxxx).
inline bool IsUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Bytes in the sequence that `lead` starts: 2, 3 or 4 for a lead byte; 1 for ASCII and for bytes no
// valid sequence starts with.
inline size_t Utf8LeadLength(char lead) {
  const auto b = static_cast<unsigned char>(lead);
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

// The start of the character that holds byte i: back over continuation bytes, never before lo.
inline size_t Utf8CharStart(std::string_view s, size_t i, size_t lo = 0) {
  while (i > lo && IsUtf8Continuation(s[i])) --i;
  return i;
}

// The length of the longest prefix of s no longer than max_bytes that ends on a character boundary
// (a whole s when it fits).
inline size_t Utf8PrefixLength(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s.size();
  return Utf8CharStart(s, max_bytes);
}

// Length of the valid UTF-8 sequence starting at s[i] (1 to 4), or 0 when none starts there (a stray
// continuation byte, a truncated or overlong sequence, a surrogate, or above U+10FFFF).
inline size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  const size_t n = Utf8LeadLength(static_cast<char>(c));
  if (n == 1 || i + n > s.size()) return 0;
  uint32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) {
    if (!IsUtf8Continuation(static_cast<char>(b(i + k)))) return 0;
    cp = cp << 6 | (b(i + k) & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

inline bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace shoal
