// Normalizers, pre-tokenizers and decoders of tokenizer.json: parsing (errors name the JSON path) and
// application, each following the semantics of the HF `tokenizers` Rust component of the same name.
#include <algorithm>

#include "model/tokenizer_internal.h"

namespace shoal::tok_internal {
namespace {

const char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

StatusOr<std::string> TypeOf(const json& j, const std::string& path) {
  if (path.size() > 2000) return InvalidArgument(path.substr(0, 200) + "...: nested too deeply");
  if (!j.is_object()) return InvalidArgument(path + ": expected an object, got " + std::string(j.type_name()));
  std::string type;
  SHOAL_RETURN_IF_ERROR(GetString(j, "type", path, type, /*required=*/true));
  return type;
}

Status UnsupportedType(const std::string& path, const std::string& type) {
  return Unimplemented(path + ".type: unsupported " + Quote(type));
}

const json* GetArray(const json& j, const char* key, const std::string& path, Status& st) {
  const json* v = Field(j, key);
  if (v == nullptr || !v->is_array()) {
    st = InvalidArgument(Sub(path, key) + ": expected an array");
    return nullptr;
  }
  return v;
}

// {"String": "..."} or {"Regex": "..."}: exactly one of literal/regex is set.
Status ParsePattern(const json& j, const std::string& path, std::string& literal, std::shared_ptr<Regex>& regex) {
  const json* p = Field(j, "pattern");
  const std::string ppath = Sub(path, "pattern");
  if (p == nullptr || !p->is_object()) return InvalidArgument(ppath + ": expected {\"String\": ...} or {\"Regex\": ...}");
  if (const json* s = Field(*p, "String")) {
    if (!s->is_string()) return InvalidArgument(ppath + ".String: expected a string");
    literal = s->get<std::string>();
    return Status::Ok();
  }
  if (const json* r = Field(*p, "Regex")) {
    if (!r->is_string()) return InvalidArgument(ppath + ".Regex: expected a string");
    SHOAL_ASSIGN_OR_RETURN(regex, Regex::Compile(r->get<std::string>(), ppath + ".Regex"));
    return Status::Ok();
  }
  return Unimplemented(ppath + ": expected a String or Regex pattern");
}

Status GetSize(const json& j, const char* key, const std::string& path, size_t& out) {
  const json* v = Field(j, key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_number_unsigned()) return InvalidArgument(Sub(path, key) + ": expected a non-negative integer");
  out = v->get<size_t>();
  return Status::Ok();
}

Status ParseMetaspace(const json& j, const std::string& path, std::string& replacement, PreTokenizer::Prepend& prepend,
                      bool* split) {
  replacement = "\xE2\x96\x81";  // ▁
  SHOAL_RETURN_IF_ERROR(GetString(j, "replacement", path, replacement, false));
  size_t pos = 0;
  if (replacement.empty() || (NextCodepoint(replacement, pos), pos != replacement.size())) {
    return InvalidArgument(Sub(path, "replacement") + ": expected exactly one character");
  }
  std::string scheme;
  SHOAL_RETURN_IF_ERROR(GetString(j, "prepend_scheme", path, scheme, false));
  if (scheme.empty()) {  // files older than prepend_scheme: add_prefix_space
    bool add = true;
    SHOAL_RETURN_IF_ERROR(GetBool(j, "add_prefix_space", path, add));
    scheme = add ? "always" : "never";
  }
  if (scheme == "always") prepend = PreTokenizer::Prepend::kAlways;
  else if (scheme == "first") prepend = PreTokenizer::Prepend::kFirst;
  else if (scheme == "never") prepend = PreTokenizer::Prepend::kNever;
  else return InvalidArgument(Sub(path, "prepend_scheme") + ": expected always, first or never, got " + Quote(scheme));
  if (split != nullptr) SHOAL_RETURN_IF_ERROR(GetBool(j, "split", path, *split));
  return Status::Ok();
}

// ---- splitting (HF NormalizedString::split) ----

struct Seg {
  size_t b, e;
  bool match;
};

void LiteralSegs(std::string_view s, const std::string& lit, std::vector<Seg>& out) {
  out.clear();
  if (lit.empty()) {
    out.push_back({0, s.size(), false});
    return;
  }
  size_t prev = 0, at = 0;
  while ((at = s.find(lit, at)) != std::string_view::npos) {
    if (at > prev) out.push_back({prev, at, false});
    out.push_back({at, at + lit.size(), true});
    at += lit.size();
    prev = at;
  }
  if (prev < s.size()) out.push_back({prev, s.size(), false});
}

Status RegexSegs(std::string_view s, const Regex& re, std::vector<Seg>& out) {
  out.clear();
  std::vector<std::pair<size_t, size_t>> m;
  SHOAL_RETURN_IF_ERROR(re.FindAll(s, m));
  size_t prev = 0;
  for (auto [b, e] : m) {
    if (b > prev) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev < s.size()) out.push_back({prev, s.size(), false});
  return Status::Ok();
}

template <class Pred>
void CharSegs(std::string_view s, Pred pred, std::vector<Seg>& out) {
  out.clear();
  size_t prev = 0, pos = 0;
  while (pos < s.size()) {
    const size_t at = pos;
    const char32_t c = NextCodepoint(s, pos);
    if (!pred(c)) continue;
    if (at > prev) out.push_back({prev, at, false});
    out.push_back({at, pos, true});
    prev = pos;
  }
  if (prev < s.size()) out.push_back({prev, s.size(), false});
}

// Applies `behavior` to the segments of `p` and appends the resulting non-empty pieces.
void SplitBySegs(const Piece& p, std::vector<Seg> segs, SplitBehavior behavior, bool invert, std::vector<Piece>& out) {
  if (invert) {
    for (Seg& s : segs) s.match = !s.match;
  }
  struct Out {
    size_t b, e;
    bool remove;
  };
  std::vector<Out> res;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Seg& s : segs) res.push_back({s.b, s.e, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Seg& s : segs) res.push_back({s.b, s.e, s.match});
      break;
    case SplitBehavior::kContiguous: {
      bool prev = false;
      for (const Seg& s : segs) {
        if (s.match == prev && !res.empty()) res.back().e = s.e;
        else res.push_back({s.b, s.e, false});
        prev = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev = false;
      for (const Seg& s : segs) {
        if (s.match && !prev && !res.empty()) res.back().e = s.e;
        else res.push_back({s.b, s.e, false});
        prev = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->match && !prev && !res.empty()) res.back().b = it->b;
        else res.push_back({it->b, it->e, false});
        prev = it->match;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
  }
  for (const Out& o : res) {
    if (o.remove || o.e <= o.b) continue;
    out.push_back({p.text.substr(o.b, o.e - o.b), o.b < p.start_len ? p.start_len - o.b : 0});
  }
}

Status ApplyOne(const PreTokenizer& pt, std::vector<Piece>& pieces) {
  if (pt.kind == PreTokenizer::Kind::kSequence) {
    for (const PreTokenizer& c : pt.children) SHOAL_RETURN_IF_ERROR(ApplyOne(c, pieces));
    return Status::Ok();
  }
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  std::vector<Seg> segs;
  for (Piece& p : pieces) {
    switch (pt.kind) {
      case PreTokenizer::Kind::kSplit:
        if (pt.regex) SHOAL_RETURN_IF_ERROR(RegexSegs(p.text, *pt.regex, segs));
        else LiteralSegs(p.text, pt.literal, segs);
        SplitBySegs(p, segs, pt.behavior, pt.invert, out);
        break;
      case PreTokenizer::Kind::kDigits:
        CharSegs(p.text, IsNumeric, segs);
        SplitBySegs(p, segs, pt.individual_digits ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, out);
        break;
      case PreTokenizer::Kind::kMetaspace: {
        std::string t;
        t.reserve(p.text.size() + 3);
        size_t start_len = 0;
        for (size_t k = 0; k < p.text.size(); ++k) {
          if (p.text[k] == ' ') t += pt.replacement;
          else t += p.text[k];
          if (k + 1 == p.start_len) start_len = t.size();
        }
        const bool starts = t.compare(0, pt.replacement.size(), pt.replacement) == 0;
        if (!starts && (pt.prepend == PreTokenizer::Prepend::kAlways ||
                        (pt.prepend == PreTokenizer::Prepend::kFirst && p.start_len > 0))) {
          t.insert(0, pt.replacement);
          if (start_len > 0) start_len += pt.replacement.size();  // the new char aligns with the first
        }
        Piece np{std::move(t), start_len};
        if (pt.split) {
          LiteralSegs(np.text, pt.replacement, segs);
          SplitBySegs(np, segs, SplitBehavior::kMergedWithNext, false, out);
        } else if (!np.text.empty()) {
          out.push_back(std::move(np));
        }
        break;
      }
      case PreTokenizer::Kind::kByteLevel: {
        Piece np = p;
        if (pt.add_prefix_space && (np.text.empty() || np.text[0] != ' ')) {
          np.text.insert(0, " ");
          if (np.start_len > 0) ++np.start_len;
        }
        std::vector<Piece> parts;
        if (pt.regex) {
          SHOAL_RETURN_IF_ERROR(RegexSegs(np.text, *pt.regex, segs));
          SplitBySegs(np, segs, SplitBehavior::kIsolated, false, parts);
        } else if (!np.text.empty()) {
          parts.push_back(std::move(np));
        }
        for (Piece& part : parts) {
          std::string mapped;
          mapped.reserve(part.text.size() * 2);
          size_t start_len = 0;
          for (size_t k = 0; k < part.text.size(); ++k) {
            mapped += ByteLevelChar(static_cast<uint8_t>(part.text[k]));
            if (k + 1 == part.start_len) start_len = mapped.size();
          }
          out.push_back({std::move(mapped), start_len});
        }
        break;
      }
      case PreTokenizer::Kind::kSequence:
        break;
    }
  }
  pieces = std::move(out);
  return Status::Ok();
}

}  // namespace

// ---- normalizers ----

StatusOr<std::optional<Normalizer>> ParseNormalizer(const json& j, const std::string& path) {
  if (j.is_null()) return std::optional<Normalizer>();
  SHOAL_ASSIGN_OR_RETURN(std::string type, TypeOf(j, path));
  Normalizer n;
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    n.kind = Normalizer::Kind::kUnicode;
    n.form = type == "NFC" ? NormForm::kNFC : type == "NFD" ? NormForm::kNFD : type == "NFKC" ? NormForm::kNFKC : NormForm::kNFKD;
  } else if (type == "Lowercase") {
    n.kind = Normalizer::Kind::kLowercase;
  } else if (type == "Prepend") {
    n.kind = Normalizer::Kind::kPrepend;
    SHOAL_RETURN_IF_ERROR(GetString(j, "prepend", path, n.text, true));
  } else if (type == "Replace") {
    n.kind = Normalizer::Kind::kReplace;
    SHOAL_RETURN_IF_ERROR(ParsePattern(j, path, n.literal, n.regex));
    SHOAL_RETURN_IF_ERROR(GetString(j, "content", path, n.text, true));
  } else if (type == "Strip") {
    n.kind = Normalizer::Kind::kStrip;
    n.left = n.right = true;
    SHOAL_RETURN_IF_ERROR(GetBool(j, "strip_left", path, n.left));
    SHOAL_RETURN_IF_ERROR(GetBool(j, "strip_right", path, n.right));
  } else if (type == "Sequence") {
    n.kind = Normalizer::Kind::kSequence;
    Status st;
    const json* arr = GetArray(j, "normalizers", path, st);
    if (arr == nullptr) return st;
    for (size_t i = 0; i < arr->size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(std::optional<Normalizer> c, ParseNormalizer((*arr)[i], Sub(Sub(path, "normalizers"), i)));
      if (c) n.children.push_back(std::move(*c));
    }
  } else {
    return UnsupportedType(path, type);
  }
  return std::optional<Normalizer>(std::move(n));
}

Status Normalize(const Normalizer& n, std::string& s) {
  switch (n.kind) {
    case Normalizer::Kind::kUnicode:
      return UnicodeNormalize(n.form, s);
    case Normalizer::Kind::kLowercase:
      return UnicodeLowercase(s);
    case Normalizer::Kind::kPrepend:
      if (!s.empty()) s.insert(0, n.text);
      return Status::Ok();
    case Normalizer::Kind::kReplace: {
      if (n.regex) return n.regex->ReplaceAll(s, n.text);
      if (n.literal.empty()) return Status::Ok();
      std::string out;
      size_t prev = 0, at = 0;
      while ((at = s.find(n.literal, prev)) != std::string::npos) {
        out.append(s, prev, at - prev);
        out += n.text;
        prev = at + n.literal.size();
      }
      out.append(s, prev, std::string::npos);
      s = std::move(out);
      return Status::Ok();
    }
    case Normalizer::Kind::kStrip: {
      size_t b = 0, e = s.size();
      if (n.left) {
        while (b < e) {
          size_t pos = b;
          if (!IsWhitespace(NextCodepoint(s, pos))) break;
          b = pos;
        }
      }
      if (n.right) {
        while (e > b) {
          size_t start = Utf8CharStart(s, e - 1, b);
          size_t pos = start;
          if (!IsWhitespace(NextCodepoint(s, pos))) break;
          e = start;
        }
      }
      s = s.substr(b, e - b);
      return Status::Ok();
    }
    case Normalizer::Kind::kSequence:
      for (const Normalizer& c : n.children) SHOAL_RETURN_IF_ERROR(Normalize(c, s));
      return Status::Ok();
  }
  return Internal("unknown normalizer kind");
}

// ---- pre-tokenizers ----

StatusOr<std::optional<PreTokenizer>> ParsePreTokenizer(const json& j, const std::string& path) {
  if (j.is_null()) return std::optional<PreTokenizer>();
  SHOAL_ASSIGN_OR_RETURN(std::string type, TypeOf(j, path));
  PreTokenizer p;
  if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::kByteLevel;
    p.add_prefix_space = true;
    bool use_regex = true;
    SHOAL_RETURN_IF_ERROR(GetBool(j, "add_prefix_space", path, p.add_prefix_space));
    SHOAL_RETURN_IF_ERROR(GetBool(j, "use_regex", path, use_regex));
    if (use_regex) {
      SHOAL_ASSIGN_OR_RETURN(p.regex, Regex::Compile(kGpt2Pattern, path));
    }
  } else if (type == "Split") {
    p.kind = PreTokenizer::Kind::kSplit;
    SHOAL_RETURN_IF_ERROR(ParsePattern(j, path, p.literal, p.regex));
    std::string b;
    SHOAL_RETURN_IF_ERROR(GetString(j, "behavior", path, b, true));
    if (b == "Removed") p.behavior = SplitBehavior::kRemoved;
    else if (b == "Isolated") p.behavior = SplitBehavior::kIsolated;
    else if (b == "MergedWithPrevious") p.behavior = SplitBehavior::kMergedWithPrevious;
    else if (b == "MergedWithNext") p.behavior = SplitBehavior::kMergedWithNext;
    else if (b == "Contiguous") p.behavior = SplitBehavior::kContiguous;
    else return InvalidArgument(Sub(path, "behavior") + ": unknown " + Quote(b));
    SHOAL_RETURN_IF_ERROR(GetBool(j, "invert", path, p.invert));
  } else if (type == "Metaspace") {
    p.kind = PreTokenizer::Kind::kMetaspace;
    SHOAL_RETURN_IF_ERROR(ParseMetaspace(j, path, p.replacement, p.prepend, &p.split));
  } else if (type == "Digits") {
    p.kind = PreTokenizer::Kind::kDigits;
    SHOAL_RETURN_IF_ERROR(GetBool(j, "individual_digits", path, p.individual_digits));
  } else if (type == "Sequence") {
    p.kind = PreTokenizer::Kind::kSequence;
    Status st;
    const json* arr = GetArray(j, "pretokenizers", path, st);
    if (arr == nullptr) return st;
    for (size_t i = 0; i < arr->size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(std::optional<PreTokenizer> c,
                             ParsePreTokenizer((*arr)[i], Sub(Sub(path, "pretokenizers"), i)));
      if (c) p.children.push_back(std::move(*c));
    }
  } else {
    return UnsupportedType(path, type);
  }
  return std::optional<PreTokenizer>(std::move(p));
}

Status PreTokenize(const PreTokenizer& p, std::vector<Piece>& pieces) { return ApplyOne(p, pieces); }

// ---- decoders ----

StatusOr<std::optional<Decoder>> ParseDecoder(const json& j, const std::string& path) {
  if (j.is_null()) return std::optional<Decoder>();
  SHOAL_ASSIGN_OR_RETURN(std::string type, TypeOf(j, path));
  Decoder d;
  if (type == "ByteLevel") {
    d.kind = Decoder::Kind::kByteLevel;
  } else if (type == "Metaspace") {
    d.kind = Decoder::Kind::kMetaspace;
    PreTokenizer::Prepend prepend;
    SHOAL_RETURN_IF_ERROR(ParseMetaspace(j, path, d.replacement, prepend, nullptr));
    d.strip_first = prepend != PreTokenizer::Prepend::kNever;
  } else if (type == "Replace") {
    d.kind = Decoder::Kind::kReplace;
    SHOAL_RETURN_IF_ERROR(ParsePattern(j, path, d.literal, d.regex));
    SHOAL_RETURN_IF_ERROR(GetString(j, "content", path, d.content, true));
  } else if (type == "ByteFallback") {
    d.kind = Decoder::Kind::kByteFallback;
  } else if (type == "Fuse") {
    d.kind = Decoder::Kind::kFuse;
  } else if (type == "Strip") {
    d.kind = Decoder::Kind::kStrip;
    SHOAL_RETURN_IF_ERROR(GetString(j, "content", path, d.strip_char, true));
    size_t pos = 0;
    if (d.strip_char.empty() || (NextCodepoint(d.strip_char, pos), pos != d.strip_char.size())) {
      return InvalidArgument(Sub(path, "content") + ": expected exactly one character");
    }
    SHOAL_RETURN_IF_ERROR(GetSize(j, "start", path, d.start));
    SHOAL_RETURN_IF_ERROR(GetSize(j, "stop", path, d.stop));
  } else if (type == "Sequence") {
    d.kind = Decoder::Kind::kSequence;
    Status st;
    const json* arr = GetArray(j, "decoders", path, st);
    if (arr == nullptr) return st;
    for (size_t i = 0; i < arr->size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(std::optional<Decoder> c, ParseDecoder((*arr)[i], Sub(Sub(path, "decoders"), i)));
      if (c) d.children.push_back(std::move(*c));
    }
  } else {
    return UnsupportedType(path, type);
  }
  return std::optional<Decoder>(std::move(d));
}

namespace {

void ReplaceLiteral(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t prev = 0, at = 0;
  while ((at = s.find(from, prev)) != std::string::npos) {
    out.append(s, prev, at - prev);
    out += to;
    prev = at + from.size();
  }
  if (prev == 0) return;
  out.append(s, prev, std::string::npos);
  s = std::move(out);
}

// "<0xAB>" → 0xAB, or -1.
int ByteToken(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

// Tokens are byte strings here: ByteLevel and ByteFallback produce raw bytes where HF would already
// substitute U+FFFD, so a stream that stops inside a character keeps its bytes (see tokenizer.h).
Status DecodeChain(const Decoder& d, std::vector<std::string>& tokens) {
  switch (d.kind) {
    case Decoder::Kind::kSequence:
      for (const Decoder& c : d.children) SHOAL_RETURN_IF_ERROR(DecodeChain(c, tokens));
      return Status::Ok();
    case Decoder::Kind::kByteLevel: {
      std::string out;
      for (const std::string& t : tokens) {
        const size_t mark = out.size();
        size_t pos = 0;
        bool all = true;
        while (pos < t.size()) {
          const int b = ByteLevelByte(NextCodepoint(t, pos));
          if (b < 0) {
            all = false;
            break;
          }
          out += static_cast<char>(b);
        }
        if (!all) {  // a token outside the byte alphabet (an added token) passes through as is
          out.resize(mark);
          out += t;
        }
      }
      tokens.assign(1, std::move(out));
      return Status::Ok();
    }
    case Decoder::Kind::kMetaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        // HF drops every replacement char of the first token (not just a leading one) when it
        // prepends; the others become spaces.
        ReplaceLiteral(tokens[i], d.replacement, i == 0 && d.strip_first ? "" : " ");
      }
      return Status::Ok();
    case Decoder::Kind::kReplace:
      for (std::string& t : tokens) {
        if (d.regex) SHOAL_RETURN_IF_ERROR(d.regex->ReplaceAll(t, d.content));
        else ReplaceLiteral(t, d.literal, d.content);
      }
      return Status::Ok();
    case Decoder::Kind::kByteFallback: {
      std::vector<std::string> out;
      out.reserve(tokens.size());
      std::string bytes;
      bool in_run = false;
      for (std::string& t : tokens) {
        const int b = ByteToken(t);
        if (b >= 0) {
          bytes += static_cast<char>(b);
          in_run = true;
          continue;
        }
        if (in_run) out.push_back(std::move(bytes));
        bytes.clear();
        in_run = false;
        out.push_back(std::move(t));
      }
      if (in_run) out.push_back(std::move(bytes));
      tokens = std::move(out);
      return Status::Ok();
    }
    case Decoder::Kind::kFuse: {
      std::string out;
      for (const std::string& t : tokens) out += t;
      tokens.assign(1, std::move(out));
      return Status::Ok();
    }
    case Decoder::Kind::kStrip: {
      const std::string& c = d.strip_char;
      for (std::string& t : tokens) {
        size_t b = 0, e = t.size();
        for (size_t k = 0; k < d.start && t.compare(b, c.size(), c) == 0 && b + c.size() <= e; ++k) b += c.size();
        for (size_t k = 0; k < d.stop && e >= b + c.size() && t.compare(e - c.size(), c.size(), c) == 0; ++k) {
          e -= c.size();
        }
        t = t.substr(b, e - b);
      }
      return Status::Ok();
    }
  }
  return Internal("unknown decoder kind");
}

}  // namespace shoal::tok_internal
