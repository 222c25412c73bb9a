// A hand-written equivalent of jinja2's regex lexer (jinja2/lexer.py), restricted to the default
// delimiters. The whitespace handling mirrors Lexer.tokeniter: `line_starting` is whether the previous
// match ended in "\n", and lstrip applies to {% and {# only.
#include "model/jinja/lexer.h"

#include <cctype>

namespace shoal::jinja {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  Lexer(std::string src, const std::string& name) : src_(std::move(src)), name_(name) {}

  StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      const size_t tag = FindTagStart(pos_);
      if (tag == std::string::npos) {
        Emit(Tok::kText, src_.substr(pos_));
        break;
      }
      std::string text = src_.substr(pos_, tag - pos_);
      const char kind = src_[tag + 1];  // '%', '{' or '#'
      const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+') ? src_[tag + 2] : 0;
      const int text_line = line_;
      line_ += Count(text);
      StripBefore(&text, sign, kind != '{');
      if (!text.empty()) tokens_.push_back({Tok::kText, text_line, std::move(text)});
      pos_ = tag + 2 + (sign ? 1 : 0);
      size_t raw_end = 0;
      if (kind == '%' && IsRawBegin(pos_, &raw_end)) {
        line_ += Count(src_.substr(pos_, raw_end - pos_));
        line_starting_ = src_[raw_end - 1] == '\n';
        pos_ = raw_end;
        SHOAL_RETURN_IF_ERROR(LexRaw());
      } else if (kind == '#') {
        SHOAL_RETURN_IF_ERROR(LexComment());
      } else {
        SHOAL_RETURN_IF_ERROR(LexTag(kind == '%'));
      }
    }
    tokens_.push_back({Tok::kEof, line_, ""});
    return std::move(tokens_);
  }

 private:
  Status Error(int line, const std::string& what) const {
    return InvalidArgument(name_ + ":" + std::to_string(line) + ": " + what);
  }
  static int Count(std::string_view s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
  }
  void Emit(Tok t, std::string text) { tokens_.push_back({t, line_, std::move(text)}); }

  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '%' || src_[i + 1] == '{' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  // OptionalLStrip: `-` strips all whitespace; otherwise lstrip_blocks removes the indentation of a
  // block or comment tag that starts its line.
  void StripBefore(std::string* text, char sign, bool is_block) const {
    if (sign == '-') {
      size_t end = text->size();
      while (end > 0 && IsSpace((*text)[end - 1])) --end;
      text->resize(end);
    } else if (sign != '+' && is_block) {
      const size_t nl = text->rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && l_pos < text->size()) {
        bool all_space = true;
        for (size_t i = l_pos; i < text->size(); ++i) all_space &= IsSpace((*text)[i]);
        if (all_space) text->resize(l_pos);
      }
    }
  }

  size_t SkipSpace(size_t p) const {
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    return p;
  }

  // After "{%[-+]": `\s*raw\s*(-%}\s*|%})`. Note: no trim_blocks after {% raw %}, as in jinja2.
  bool IsRawBegin(size_t p, size_t* end) const {
    p = SkipSpace(p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p = SkipSpace(p + 3);
    if (src_.compare(p, 3, "-%}") == 0) {
      *end = SkipSpace(p + 3);
      return true;
    }
    if (src_.compare(p, 2, "%}") == 0) {
      *end = p + 2;
      return true;
    }
    return false;
  }

  // Consumes a block end at p if there is one: "+%}", "-%}\s*" or "%}\n?" (trim_blocks).
  bool BlockEnd(size_t p, const char* close, bool trim, size_t* end) const {
    if (src_.compare(p, 3, std::string("+") + close) == 0 && trim) {
      *end = p + 3;
      return true;
    }
    if (src_.compare(p, 3, std::string("-") + close) == 0) {
      *end = SkipSpace(p + 3);
      return true;
    }
    if (src_.compare(p, 2, close) == 0) {
      *end = p + 2;
      if (trim && *end < src_.size() && src_[*end] == '\n') ++*end;
      return true;
    }
    return false;
  }

  void Finish(size_t end) {
    line_ += Count(std::string_view(src_).substr(pos_, end - pos_));
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    pos_ = end;
  }

  Status LexComment() {
    const int start = line_;
    for (size_t p = pos_; p < src_.size(); ++p) {
      size_t end;
      if (BlockEnd(p, "#}", true, &end)) {
        Finish(end);
        return Status::Ok();
      }
    }
    return Error(start, "missing end of comment tag");
  }

  Status LexRaw() {
    const int start = line_;
    for (size_t p = pos_; p + 1 < src_.size(); ++p) {
      if (src_[p] != '{' || src_[p + 1] != '%') continue;
      size_t q = p + 2;
      const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : 0;
      if (sign) ++q;
      q = SkipSpace(q);
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q = SkipSpace(q + 6);
      size_t end;
      if (!BlockEnd(q, "%}", true, &end)) continue;
      std::string text = src_.substr(pos_, p - pos_);
      StripBefore(&text, sign, true);
      tokens_.push_back({Tok::kText, line_, std::move(text)});
      Finish(end);
      return Status::Ok();
    }
    return Error(start, "missing end of raw directive");
  }

  Status LexString(char quote, Token* tok) {
    size_t p = pos_ + 1;
    std::string out;
    while (p < src_.size() && src_[p] != quote) {
      char c = src_[p];
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) break;
      const char e = src_[p + 1];
      p += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            if (p + k >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[p + k]))) {
              return Error(line_, std::string("truncated \\") + e + " escape in string literal");
            }
            const char h = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[p + k])));
            cp = cp * 16 + static_cast<uint32_t>(h <= '9' ? h - '0' : h - 'a' + 10);
          }
          if (cp > 0x10FFFF) return Error(line_, "illegal Unicode character in string literal");
          AppendUtf8(cp, &out);
          p += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k, ++p) {
              cp = cp * 8 + static_cast<uint32_t>(src_[p] - '0');
            }
            AppendUtf8(cp, &out);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    if (p >= src_.size()) return Error(line_, "unterminated string literal");
    tok->type = Tok::kString;
    tok->text = std::move(out);
    Finish(p + 1);
    return Status::Ok();
  }

  // Digits with jinja's optional `_` separators; returns the end.
  size_t Digits(size_t p) const {
    while (p < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[p])) ||
                               (src_[p] == '_' && p + 1 < src_.size() &&
                                std::isdigit(static_cast<unsigned char>(src_[p + 1]))))) {
      ++p;
    }
    return p;
  }

  Status LexTag(bool block) {
    const int start = line_;
    tokens_.push_back({block ? Tok::kBlockBegin : Tok::kVarBegin, line_, ""});
    std::vector<char> balance;
    while (true) {
      if (pos_ >= src_.size()) {
        return Error(start, std::string("unexpected end of template: missing '") + (block ? "%}" : "}}") +
                                "' for the tag opened here");
      }
      size_t end;
      if (balance.empty() && BlockEnd(pos_, block ? "%}" : "}}", block, &end)) {
        tokens_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, line_, ""});
        Finish(end);
        return Status::Ok();
      }
      const char c = src_[pos_];
      if (IsSpace(c)) {
        Finish(SkipSpace(pos_));
        continue;
      }
      Token tok{Tok::kOp, line_, ""};
      if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t p = Digits(pos_);
        bool is_float = false;
        if (p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          p = Digits(p + 1);
          is_float = true;
        }
        if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
            p = Digits(q);
            is_float = true;
          }
        }
        std::string num;
        for (size_t k = pos_; k < p; ++k) {
          if (src_[k] != '_') num += src_[k];
        }
        if (is_float) {
          tok.type = Tok::kFloat;
          tok.fval = std::strtod(num.c_str(), nullptr);
        } else {
          tok.type = Tok::kInt;
          errno = 0;
          tok.ival = std::strtoll(num.c_str(), nullptr, 10);
          if (errno == ERANGE) return Error(line_, "integer literal " + num + " is out of range");
        }
        Finish(p);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t p = pos_;
        while (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        tok.type = Tok::kName;
        tok.text = src_.substr(pos_, p - pos_);
        Finish(p);
      } else if (c == '\'' || c == '"') {
        SHOAL_RETURN_IF_ERROR(LexString(c, &tok));
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
        std::string op;
        for (const char* t : kTwo) {
          if (src_.compare(pos_, 2, t) == 0) op = t;
        }
        if (op.empty()) {
          if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
            return Error(line_, std::string("unexpected character '") + c + "' in tag");
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (balance.empty()) return Error(line_, "unexpected '" + op + "'");
          if (balance.back() != op[0]) {
            return Error(line_, "unexpected '" + op + "', expected '" + std::string(1, balance.back()) + "'");
          }
          balance.pop_back();
        }
        tok.text = op;
        Finish(pos_ + op.size());
      }
      tokens_.push_back(std::move(tok));
    }
  }

  std::string src_;
  const std::string& name_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

StatusOr<std::vector<Token>> Lex(std::string_view source, const std::string& name) {
  if (source.size() > kMaxTemplateBytes) {
    return InvalidArgument(name + ": template is " + std::to_string(source.size()) + " bytes, more than the " +
                           std::to_string(kMaxTemplateBytes) + " allowed");
  }
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();  // keep_trailing_newline=False
  return Lexer(std::move(src), name).Run();
}

}  // namespace shoal::jinja
