// The syntax tree the parser builds and the interpreter walks. Every node carries the template line it
// came from, so runtime errors can name it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/jinja/value.h"

namespace shoal::jinja {

enum class ExprKind {
  kLiteral,     // literal
  kName,        // name
  kList,        // children: items
  kTuple,       // children: items
  kDict,        // children: key0, value0, key1, value1, ...
  kGetAttr,     // children[0].name
  kGetItem,     // children[0][children[1]]
  kSlice,       // children[0][children[1]:children[2]:children[3]]; absent parts are null
  kCall,        // children[0](args)
  kFilter,      // children[0] | name(args); children[0] null inside {% filter %} (the block's text)
  kTest,        // children[0] is [not] name(args)
  kUnary,       // name ("-", "+", "not") children[0]
  kBinary,      // children[0] name children[1]: + - * / // % ** ~ == != < <= > >= in "not in"
  kAnd,         // children[0] and children[1]
  kOr,          // children[0] or children[1]
  kCond,        // children[0] if children[1] else children[2] (null: undefined)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arg {
  std::string name;  // empty for a positional argument
  ExprPtr value;
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<Arg> args;
  bool negated = false;  // `is not`
};

enum class NodeKind {
  kText,        // text
  kOutput,      // {{ expr }}
  kIf,          // branches
  kFor,         // for targets in expr [if cond]: body [else else_body]
  kSet,         // set targets = expr, or set targets[0].attr = expr
  kSetBlock,    // set targets[0] %}body{% endset
  kMacro,       // macro
  kBreak,
  kContinue,
  kFilterBlock,  // filter expr (a kFilter chain with a null innermost subject) over body
  kScope,        // a body rendered in place: {% generation %}
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct MacroNode {
  std::string name;
  int line = 0;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param; null when the param has no default
  Body body;
};

struct Branch {
  ExprPtr cond;  // null for else
  Body body;
};

struct Node {
  NodeKind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;                      // for ... if cond
  std::vector<std::string> targets;  // loop / set variable names
  std::string attr;                  // set ns.attr
  std::vector<Branch> branches;
  Body body, else_body;
  std::unique_ptr<MacroNode> macro;
};

}  // namespace shoal::jinja
