// Recursive-descent parser mirroring jinja2/parser.py: the precedence chain is
// cond > or > and > not > compare > (+ -) > ~ > (* / // %) > ** > unary > postfix/filter/test.
#include "model/jinja/parser.h"

#include <utility>

namespace shoal::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& name) : toks_(std::move(toks)), name_(name) {}

  StatusOr<Body> Run() {
    std::string end;
    SHOAL_ASSIGN_OR_RETURN(Body body, ParseBody({}, &end, "", 0));
    return body;
  }

 private:
  // Guards recursion depth; the parser is fed untrusted templates.
  struct DepthGuard {
    explicit DepthGuard(int* d) : d_(d) { ++*d_; }
    ~DepthGuard() { --*d_; }
    int* d_;
  };

  const Token& Cur() const { return toks_[p_]; }
  const Token& Peek(size_t n = 1) const { return toks_[std::min(p_ + n, toks_.size() - 1)]; }
  bool IsOp(const char* op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(const char* n) const { return Cur().type == Tok::kName && Cur().text == n; }
  void Next() {
    if (p_ + 1 < toks_.size()) ++p_;
  }

  Status Error(int line, const std::string& what) const {
    return InvalidArgument(name_ + ":" + std::to_string(line) + ": " + what);
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Tok::kEof: return "end of template";
      case Tok::kBlockEnd: return "end of statement block";
      case Tok::kVarEnd: return "end of print statement";
      case Tok::kString: return "string";
      case Tok::kInt:
      case Tok::kFloat: return "number";
      default: return "'" + t.text + "'";
    }
  }
  Status Unexpected(const std::string& context) const {
    return Error(Cur().line, "unexpected " + Describe(Cur()) + " " + context);
  }
  Status ExpectOp(const char* op, const std::string& context) {
    if (!IsOp(op)) return Unexpected(std::string("(expected '") + op + "' " + context + ")");
    Next();
    return Status::Ok();
  }
  Status ExpectBlockEnd(const std::string& tag) {
    if (Cur().type != Tok::kBlockEnd) return Unexpected("in '{% " + tag + " %}' (expected '%}')");
    Next();
    return Status::Ok();
  }
  StatusOr<std::string> ExpectName(const std::string& context) {
    if (Cur().type != Tok::kName) return Unexpected("(expected a name " + context + ")");
    std::string n = Cur().text;
    Next();
    return n;
  }

  ExprPtr NewExpr(ExprKind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }
  ExprPtr Binary(ExprKind k, std::string op, ExprPtr l, ExprPtr r, int line) {
    auto e = NewExpr(k, line);
    e->name = std::move(op);
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return e;
  }

  // Parses nodes until a {% tag %} named in `ends` (left unconsumed after the name, which is stored in
  // *end), or the end of the template when `ends` is empty.
  StatusOr<Body> ParseBody(const std::vector<std::string>& ends, std::string* end, const std::string& opener,
                           int open_line) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return Error(open_line, "blocks nested deeper than " + std::to_string(kMaxDepth));
    Body body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Tok::kEof) {
        if (ends.empty()) return body;
        return Error(open_line, "'{% " + opener + " %}' is never closed (expected '{% " + ends.back() +
                                    " %}' before the end of the template)");
      }
      if (t.type == Tok::kText) {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kText;
        n->line = t.line;
        n->text = t.text;
        body.push_back(std::move(n));
        Next();
      } else if (t.type == Tok::kVarBegin) {
        Next();
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kOutput;
        n->line = t.line;
        SHOAL_ASSIGN_OR_RETURN(n->expr, ParseTuple(true));
        if (Cur().type != Tok::kVarEnd) return Unexpected("in '{{ ... }}' (expected '}}')");
        Next();
        body.push_back(std::move(n));
      } else if (t.type == Tok::kBlockBegin) {
        Next();
        if (Cur().type != Tok::kName) return Unexpected("(expected a statement name after '{%')");
        const std::string tag = Cur().text;
        for (const auto& e : ends) {
          if (tag == e) {
            *end = tag;
            Next();
            return body;
          }
        }
        SHOAL_ASSIGN_OR_RETURN(NodePtr n, ParseStatement());
        body.push_back(std::move(n));
      } else {
        return Unexpected("outside a tag");
      }
    }
  }

  StatusOr<NodePtr> ParseStatement() {
    const std::string tag = Cur().text;
    const int line = Cur().line;
    auto n = std::make_unique<Node>();
    n->line = line;
    Next();
    std::string end;
    if (tag == "if") {
      n->kind = NodeKind::kIf;
      std::string kw = "if";
      while (true) {
        Branch b;
        if (kw != "else") {
          SHOAL_ASSIGN_OR_RETURN(b.cond, ParseTuple(true));
        }
        SHOAL_RETURN_IF_ERROR(ExpectBlockEnd(kw));
        if (kw == "else") {
          SHOAL_ASSIGN_OR_RETURN(b.body, ParseBody({"endif"}, &end, "if", line));
        } else {
          SHOAL_ASSIGN_OR_RETURN(b.body, ParseBody({"elif", "else", "endif"}, &end, "if", line));
        }
        n->branches.push_back(std::move(b));
        if (end == "endif") break;
        kw = end;
      }
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endif"));
    } else if (tag == "for") {
      n->kind = NodeKind::kFor;
      SHOAL_RETURN_IF_ERROR(ParseTargets(&n->targets));
      if (!IsName("in")) return Unexpected("in '{% for %}' (expected 'in')");
      Next();
      SHOAL_ASSIGN_OR_RETURN(n->expr, ParseTuple(false));
      if (IsName("if")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(n->cond, ParseTuple(true));
      }
      if (IsName("recursive")) return Error(line, "recursive for loops are not supported");
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("for"));
      ++loops_;
      SHOAL_ASSIGN_OR_RETURN(n->body, ParseBody({"endfor", "else"}, &end, "for", line));
      --loops_;
      if (end == "else") {
        SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("else"));
        SHOAL_ASSIGN_OR_RETURN(n->else_body, ParseBody({"endfor"}, &end, "for", line));
      }
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endfor"));
    } else if (tag == "set") {
      n->kind = NodeKind::kSet;
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == ".") {
        n->targets.push_back(Cur().text);
        Next();
        Next();
        SHOAL_ASSIGN_OR_RETURN(n->attr, ExpectName("after '.' in '{% set %}'"));
      } else {
        SHOAL_RETURN_IF_ERROR(ParseTargets(&n->targets));
      }
      if (IsOp("=")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(n->expr, ParseTuple(true));
        SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("set"));
      } else {
        if (n->targets.size() != 1 || !n->attr.empty()) return Unexpected("in '{% set %}' (expected '=')");
        if (Cur().type != Tok::kBlockEnd) return Unexpected("in '{% set %}' (expected '=' or '%}')");
        Next();
        n->kind = NodeKind::kSetBlock;
        SHOAL_ASSIGN_OR_RETURN(n->body, ParseBody({"endset"}, &end, "set", line));
        SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endset"));
      }
    } else if (tag == "macro") {
      n->kind = NodeKind::kMacro;
      n->macro = std::make_unique<MacroNode>();
      n->macro->line = line;
      SHOAL_ASSIGN_OR_RETURN(n->macro->name, ExpectName("after 'macro'"));
      SHOAL_RETURN_IF_ERROR(ExpectOp("(", "after the macro name"));
      while (!IsOp(")")) {
        if (!n->macro->params.empty()) SHOAL_RETURN_IF_ERROR(ExpectOp(",", "between macro parameters"));
        if (IsOp(")")) break;
        SHOAL_ASSIGN_OR_RETURN(std::string param, ExpectName("for a macro parameter"));
        ExprPtr def;
        if (IsOp("=")) {
          Next();
          SHOAL_ASSIGN_OR_RETURN(def, ParseExpr(true));
        } else if (!n->macro->defaults.empty() && n->macro->defaults.back()) {
          return Error(line, "macro parameter '" + param + "' without a default follows one with a default");
        }
        n->macro->params.push_back(std::move(param));
        n->macro->defaults.push_back(std::move(def));
      }
      Next();
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("macro"));
      const int saved_loops = loops_;
      loops_ = 0;
      SHOAL_ASSIGN_OR_RETURN(n->macro->body, ParseBody({"endmacro"}, &end, "macro", line));
      loops_ = saved_loops;
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endmacro"));
    } else if (tag == "break" || tag == "continue") {
      if (loops_ == 0) return Error(line, "'{% " + tag + " %}' outside a for loop");
      n->kind = tag == "break" ? NodeKind::kBreak : NodeKind::kContinue;
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd(tag));
    } else if (tag == "filter") {
      n->kind = NodeKind::kFilterBlock;
      ExprPtr chain;
      do {
        if (chain) Next();  // the '|'
        SHOAL_ASSIGN_OR_RETURN(chain, ParseFilter(std::move(chain)));
      } while (IsOp("|"));
      n->expr = std::move(chain);
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("filter"));
      SHOAL_ASSIGN_OR_RETURN(n->body, ParseBody({"endfilter"}, &end, "filter", line));
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endfilter"));
    } else if (tag == "generation") {
      // transformers' AssistantTracker marks assistant spans with this; rendering is unaffected.
      n->kind = NodeKind::kScope;
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("generation"));
      SHOAL_ASSIGN_OR_RETURN(n->body, ParseBody({"endgeneration"}, &end, "generation", line));
      SHOAL_RETURN_IF_ERROR(ExpectBlockEnd("endgeneration"));
    } else if (tag == "include" || tag == "import" || tag == "from" || tag == "extends" || tag == "block" ||
               tag == "call" || tag == "with" || tag == "do" || tag == "autoescape") {
      return Error(line, "'{% " + tag + " %}' is not supported in chat templates");
    } else if (tag.rfind("end", 0, 3) == 0 || tag == "elif" || tag == "else") {
      return Error(line, "unexpected '{% " + tag + " %}' (no open block it could close)");
    } else {
      return Error(line, "unknown tag '" + tag + "'");
    }
    return n;
  }

  // name | name, name, ... | (name, name)
  Status ParseTargets(std::vector<std::string>* out) {
    const bool paren = IsOp("(");
    if (paren) Next();
    do {
      if (!out->empty()) Next();  // the ','
      SHOAL_ASSIGN_OR_RETURN(std::string n, ExpectName("as an assignment target"));
      out->push_back(std::move(n));
    } while (IsOp(","));
    if (paren) SHOAL_RETURN_IF_ERROR(ExpectOp(")", "after the assignment targets"));
    return Status::Ok();
  }

  // expr (',' expr)* : a bare tuple, as in `{% set a = 1, 2 %}`.
  StatusOr<ExprPtr> ParseTuple(bool with_cond) {
    const int line = Cur().line;
    SHOAL_ASSIGN_OR_RETURN(ExprPtr first, ParseExpr(with_cond));
    if (!IsOp(",")) return first;
    auto t = NewExpr(ExprKind::kTuple, line);
    t->children.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Cur().type == Tok::kBlockEnd || Cur().type == Tok::kVarEnd || IsOp(")")) break;
      SHOAL_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(with_cond));
      t->children.push_back(std::move(e));
    }
    return t;
  }

  StatusOr<ExprPtr> ParseExpr(bool with_cond) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return Error(Cur().line, "expression nested deeper than " + std::to_string(kMaxDepth));
    SHOAL_ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    if (!with_cond) return e;
    while (IsName("if")) {
      const int line = Cur().line;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      auto c = NewExpr(ExprKind::kCond, line);
      c->children.push_back(std::move(e));
      c->children.push_back(std::move(cond));
      if (IsName("else")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(ExprPtr other, ParseExpr(true));
        c->children.push_back(std::move(other));
      } else {
        c->children.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  StatusOr<ExprPtr> ParseOr() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseAnd());
    while (IsName("or")) {
      const int line = Cur().line;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseAnd());
      l = Binary(ExprKind::kOr, "or", std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParseAnd() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseNot());
    while (IsName("and")) {
      const int line = Cur().line;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseNot());
      l = Binary(ExprKind::kAnd, "and", std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(&depth_);
      if (depth_ > kMaxDepth) return Error(Cur().line, "expression nested deeper than " + std::to_string(kMaxDepth));
      auto e = NewExpr(ExprKind::kUnary, Cur().line);
      e->name = "not";
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->children.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  StatusOr<ExprPtr> ParseCompare() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseMath1());
    while (true) {
      const int line = Cur().line;
      std::string op;
      if (Cur().type == Tok::kOp &&
          (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" || Cur().text == ">" ||
           Cur().text == "<=" || Cur().text == ">=")) {
        op = Cur().text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = "not in";
        Next();
        Next();
      } else {
        return l;
      }
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseMath1());
      l = Binary(ExprKind::kBinary, op, std::move(l), std::move(r), line);
    }
  }

  StatusOr<ExprPtr> ParseMath1() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const int line = Cur().line;
      std::string op = Cur().text;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseConcat());
      l = Binary(ExprKind::kBinary, op, std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParseConcat() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseMath2());
    while (IsOp("~")) {
      const int line = Cur().line;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseMath2());
      l = Binary(ExprKind::kBinary, "~", std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParseMath2() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const int line = Cur().line;
      std::string op = Cur().text;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParsePow());
      l = Binary(ExprKind::kBinary, op, std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParsePow() {
    SHOAL_ASSIGN_OR_RETURN(ExprPtr l, ParseUnary(true));
    while (IsOp("**")) {
      const int line = Cur().line;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr r, ParseUnary(true));
      l = Binary(ExprKind::kBinary, "**", std::move(l), std::move(r), line);
    }
    return l;
  }

  StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return Error(Cur().line, "expression nested deeper than " + std::to_string(kMaxDepth));
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      node = NewExpr(ExprKind::kUnary, Cur().line);
      node->name = Cur().text;
      Next();
      SHOAL_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      node->children.push_back(std::move(operand));
    } else {
      SHOAL_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    SHOAL_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (!with_filter) return node;
    while (true) {
      if (IsOp("|")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(node, ParseFilter(std::move(node)));
      } else if (IsName("is")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        SHOAL_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Cur();
    const int line = t.line;
    if (t.type == Tok::kName) {
      auto e = NewExpr(ExprKind::kLiteral, line);
      if (t.text == "true" || t.text == "True") {
        e->literal = Value::Bool(true);
      } else if (t.text == "false" || t.text == "False") {
        e->literal = Value::Bool(false);
      } else if (t.text == "none" || t.text == "None") {
        e->literal = Value::None();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.text;
      }
      Next();
      return e;
    }
    if (t.type == Tok::kString) {
      std::string s;
      while (Cur().type == Tok::kString) {  // adjacent literals concatenate
        s += Cur().text;
        Next();
      }
      auto e = NewExpr(ExprKind::kLiteral, line);
      e->literal = Value::String(std::move(s));
      return e;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = NewExpr(ExprKind::kLiteral, line);
      e->literal = t.type == Tok::kInt ? Value::Int(t.ival) : Value::Float(t.fval);
      Next();
      return e;
    }
    if (IsOp("(")) {
      Next();
      if (IsOp(")")) {
        Next();
        return NewExpr(ExprKind::kTuple, line);
      }
      SHOAL_ASSIGN_OR_RETURN(ExprPtr first, ParseExpr(true));
      if (IsOp(")")) {
        Next();
        return first;
      }
      auto tuple = NewExpr(ExprKind::kTuple, line);
      tuple->children.push_back(std::move(first));
      while (IsOp(",")) {
        Next();
        if (IsOp(")")) break;
        SHOAL_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(true));
        tuple->children.push_back(std::move(e));
      }
      SHOAL_RETURN_IF_ERROR(ExpectOp(")", "to close the tuple"));
      return tuple;
    }
    if (IsOp("[")) {
      Next();
      auto list = NewExpr(ExprKind::kList, line);
      while (!IsOp("]")) {
        if (!list->children.empty()) SHOAL_RETURN_IF_ERROR(ExpectOp(",", "between list items"));
        if (IsOp("]")) break;
        SHOAL_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr(true));
        list->children.push_back(std::move(e));
      }
      Next();
      return list;
    }
    if (IsOp("{")) {
      Next();
      auto dict = NewExpr(ExprKind::kDict, line);
      while (!IsOp("}")) {
        if (!dict->children.empty()) SHOAL_RETURN_IF_ERROR(ExpectOp(",", "between dict items"));
        if (IsOp("}")) break;
        SHOAL_ASSIGN_OR_RETURN(ExprPtr k, ParseExpr(true));
        SHOAL_RETURN_IF_ERROR(ExpectOp(":", "after a dict key"));
        SHOAL_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr(true));
        dict->children.push_back(std::move(k));
        dict->children.push_back(std::move(v));
      }
      Next();
      return dict;
    }
    return Unexpected("(expected an expression)");
  }

  StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      const int line = Cur().line;
      if (IsOp(".")) {
        Next();
        if (Cur().type == Tok::kName) {
          auto e = NewExpr(ExprKind::kGetAttr, line);
          e->name = Cur().text;
          e->children.push_back(std::move(node));
          node = std::move(e);
        } else if (Cur().type == Tok::kInt) {
          auto e = NewExpr(ExprKind::kGetItem, line);
          auto idx = NewExpr(ExprKind::kLiteral, line);
          idx->literal = Value::Int(Cur().ival);
          e->children.push_back(std::move(node));
          e->children.push_back(std::move(idx));
          node = std::move(e);
        } else {
          return Unexpected("after '.' (expected an attribute name)");
        }
        Next();
      } else if (IsOp("[")) {
        Next();
        SHOAL_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), line));
      } else if (IsOp("(")) {
        SHOAL_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  StatusOr<ExprPtr> ParseSubscript(ExprPtr obj, int line) {
    ExprPtr parts[3];
    int n = 0;
    bool slice = false;
    while (true) {
      if (IsOp(":")) {
        slice = true;
        if (++n > 2) return Unexpected("in a slice");
        Next();
        continue;
      }
      if (IsOp("]")) break;
      if (parts[n]) return Unexpected("in a subscript (expected ']')");
      SHOAL_ASSIGN_OR_RETURN(parts[n], ParseExpr(true));
    }
    Next();
    if (!slice) {
      if (!parts[0]) return Error(line, "empty subscript");
      auto e = NewExpr(ExprKind::kGetItem, line);
      e->children.push_back(std::move(obj));
      e->children.push_back(std::move(parts[0]));
      return e;
    }
    auto e = NewExpr(ExprKind::kSlice, line);
    e->children.push_back(std::move(obj));
    for (auto& p : parts) e->children.push_back(std::move(p));
    return e;
  }

  Status ParseArgs(std::vector<Arg>* args) {
    SHOAL_RETURN_IF_ERROR(ExpectOp("(", "to open the arguments"));
    bool seen_kw = false;
    while (!IsOp(")")) {
      if (!args->empty()) SHOAL_RETURN_IF_ERROR(ExpectOp(",", "between arguments"));
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) return Error(Cur().line, "*args and **kwargs in calls are not supported");
      Arg a;
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        a.name = Cur().text;
        Next();
        Next();
        seen_kw = true;
      } else if (seen_kw) {
        return Error(Cur().line, "positional argument follows keyword argument");
      }
      SHOAL_ASSIGN_OR_RETURN(a.value, ParseExpr(true));
      args->push_back(std::move(a));
    }
    Next();
    return Status::Ok();
  }

  StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    auto e = NewExpr(ExprKind::kCall, Cur().line);
    e->children.push_back(std::move(callee));
    SHOAL_RETURN_IF_ERROR(ParseArgs(&e->args));
    return e;
  }

  // `subject | name[(args)]`; subject is null inside {% filter %}.
  StatusOr<ExprPtr> ParseFilter(ExprPtr subject) {
    const int line = Cur().line;
    SHOAL_ASSIGN_OR_RETURN(std::string name, ExpectName("after '|'"));
    if (!IsKnownFilter(name)) return Error(line, "No filter named '" + name + "'.");
    auto e = NewExpr(ExprKind::kFilter, line);
    e->name = std::move(name);
    e->children.push_back(std::move(subject));
    if (IsOp("(")) SHOAL_RETURN_IF_ERROR(ParseArgs(&e->args));
    return e;
  }

  StatusOr<ExprPtr> ParseTest(ExprPtr subject) {
    const int line = Cur().line;
    auto e = NewExpr(ExprKind::kTest, line);
    if (IsName("not")) {
      e->negated = true;
      Next();
    }
    SHOAL_ASSIGN_OR_RETURN(e->name, ExpectName("after 'is'"));
    if (!IsKnownTest(e->name)) return Error(line, "No test named '" + e->name + "'.");
    e->children.push_back(std::move(subject));
    if (IsOp("(")) {
      SHOAL_RETURN_IF_ERROR(ParseArgs(&e->args));
    } else if ((Cur().type == Tok::kName || Cur().type == Tok::kString || Cur().type == Tok::kInt ||
                Cur().type == Tok::kFloat || IsOp("[") || IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      // jinja2 takes one bare argument: `x is divisibleby 3`, `x is sameas none`.
      if (IsName("is")) return Error(line, "You cannot chain multiple tests with is");
      Arg a;
      SHOAL_ASSIGN_OR_RETURN(a.value, ParsePrimary());
      SHOAL_ASSIGN_OR_RETURN(a.value, ParsePostfix(std::move(a.value)));
      e->args.push_back(std::move(a));
    }
    return e;
  }

  std::vector<Token> toks_;
  const std::string& name_;
  size_t p_ = 0;
  int depth_ = 0;
  int loops_ = 0;
};

}  // namespace

StatusOr<Body> ParseTemplate(std::vector<Token> tokens, const std::string& name) {
  return Parser(std::move(tokens), name).Run();
}

}  // namespace shoal::jinja
