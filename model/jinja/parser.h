// Parser: tokens -> syntax tree (ast.h), following jinja2's grammar and operator precedence
// (jinja2/parser.py). Unknown filters and tests are rejected here, as jinja2 rejects them when it
// compiles the template.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "model/jinja/ast.h"
#include "model/jinja/lexer.h"

namespace shoal::jinja {

// Nesting limit for blocks and expressions in the parser, and for macro calls in the interpreter.
inline constexpr int kMaxDepth = 64;

// Errors read "<name>:<line>: <what>".
StatusOr<Body> ParseTemplate(std::vector<Token> tokens, const std::string& name);

// The filter and test names filters.cc implements.
bool IsKnownFilter(const std::string& name);
bool IsKnownTest(const std::string& name);

}  // namespace shoal::jinja
