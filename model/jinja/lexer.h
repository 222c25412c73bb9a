// Lexer: template source -> tokens, applying jinja2's whitespace rules as transformers configures them
// (trim_blocks and lstrip_blocks on, `-`/`+` modifiers, newlines normalised to "\n", one trailing
// newline dropped). Comments are dropped and {% raw %} bodies become text here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::jinja {

enum class Tok { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  int line = 0;
  std::string text;  // text, name, operator, decoded string literal
  int64_t ival = 0;
  double fval = 0;
};

// Bounds what a template may hold; Lex fails beyond it.
inline constexpr size_t kMaxTemplateBytes = 1 << 20;

// Errors read "<name>:<line>: <what>".
StatusOr<std::vector<Token>> Lex(std::string_view source, const std::string& name);

// Appends the UTF-8 encoding of `cp`.
void AppendUtf8(uint32_t cp, std::string* out);

}  // namespace shoal::jinja
