// Walks the tree with jinja2's scoping: a for-loop iteration and a macro call get fresh frames (so a
// `set` inside them is invisible afterwards and does not survive into the next iteration, which is why
// templates use namespace()); `if` shares its enclosing frame; macros see their own frame and the
// template's top frame only.
#include "model/jinja/interpreter.h"

#include <memory>
#include <unordered_map>

#include "model/jinja/builtins.h"
#include "model/jinja/lexer.h"
#include "model/jinja/parser.h"

namespace shoal::jinja {
namespace {

class Renderer {
 public:
  Renderer(const std::string& name, const RenderLimits& limits) : name_(name), limits_(limits) {}
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // A namespace that holds itself, directly or through other values, keeps itself alive; emptying every
  // namespace that may be on such a cycle frees them all once the render is over.
  ~Renderer() {
    for (auto& [storage, weak] : cycle_candidates_) {
      if (std::shared_ptr<ValueDict> ns = weak.lock()) {
        ValueDict dead;
        dead.swap(*ns);  // freed here, after the namespace no longer points at it
      }
    }
  }

  StatusOr<std::string> Run(const Body& body, const nlohmann::ordered_json& context) {
    if (!context.is_object() && !context.is_null()) {
      return InvalidArgument(name_ + ": render context must be a JSON object");
    }
    frames_.emplace_back();
    if (context.is_object()) {
      for (auto it = context.begin(); it != context.end(); ++it) {
        auto v = Value::FromJson(it.value());
        if (!v.ok()) {
          return Status(v.status().code(), name_ + ": context variable '" + it.key() + "': " + v.status().message());
        }
        frames_[0].vars[it.key()] = std::move(*v);
      }
    }
    std::string out;
    out_ = &out;
    SHOAL_RETURN_IF_ERROR(Exec(body));
    return out;
  }

 private:
  struct Frame {
    std::unordered_map<std::string, Value> vars;
    bool macro = false;  // lookups stop here and continue in frame 0
  };
  enum class Flow { kNormal, kBreak, kContinue };

  Status Error(int line, const std::string& construct, const Status& cause) const {
    std::string where = name_ + ":" + std::to_string(line) + ": ";
    if (!construct.empty()) where += construct + ": ";
    return Status(cause.code(), where + cause.message());
  }
  Status Error(int line, const std::string& construct, const std::string& what) const {
    return Error(line, construct, InvalidArgument(what));
  }

  Value Lookup(const std::string& n) const {
    for (size_t i = frames_.size(); i-- > 0;) {
      auto it = frames_[i].vars.find(n);
      if (it != frames_[i].vars.end()) return it->second;
      if (frames_[i].macro) {
        auto g = frames_[0].vars.find(n);
        if (g != frames_[0].vars.end()) return g->second;
        break;
      }
    }
    if (IsBuiltinGlobal(n) || n == "raise_exception") return Value::Function(n, Value());
    return Value::Undefined("'" + n + "' is undefined");
  }
  void Assign(const std::string& n, Value v) { frames_.back().vars[n] = std::move(v); }

  Status Emit(int line, const std::string& s) {
    if (out_->size() + s.size() > limits_.max_output_bytes) {
      return Error(line, "", ResourceExhausted("output exceeds the " + std::to_string(limits_.max_output_bytes) +
                                               "-byte limit"));
    }
    *out_ += s;
    return Status::Ok();
  }

  // Output of a printed value, as `{{ }}` and filter blocks write it.
  Status EmitValue(int line, const Value& v) {
    auto s = v.ToString();
    if (!s.ok()) return Error(line, "output", s.status());
    return Emit(line, *s);
  }

  // Every namespace cycle is closed by a `set ns.attr = value` whose value holds other values (a
  // namespace's constructor can only take values older than itself), so remembering the namespaces such
  // assignments write to finds at least one namespace on every cycle.
  void NoteCycleCandidate(const Value& ns, const Value& assigned) {
    switch (assigned.kind()) {
      case Kind::kList:
      case Kind::kDict:
      case Kind::kNamespace:
      case Kind::kFunction: break;
      default: return;
    }
    auto [it, inserted] = cycle_candidates_.try_emplace(&ns.ns(), ns.ns_storage());
    if (!inserted && it->second.expired()) it->second = ns.ns_storage();  // the address was reused
    // Forget namespaces freed since, so a loop that makes a namespace per iteration costs no memory.
    if (cycle_candidates_.size() > 2 * live_candidates_ + 64) {
      std::erase_if(cycle_candidates_, [](const auto& kv) { return kv.second.expired(); });
      live_candidates_ = cycle_candidates_.size();
    }
  }

  Status Unpack(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) {
      Assign(targets[0], v);
      return Status::Ok();
    }
    auto items = Iterate(v);
    if (!items.ok()) return Error(line, "unpacking", items.status());
    if (items->size() != targets.size()) {
      return Error(line, "unpacking",
                   items->size() < targets.size()
                       ? "not enough values to unpack (expected " + std::to_string(targets.size()) + ", got " +
                             std::to_string(items->size()) + ")"
                       : "too many values to unpack (expected " + std::to_string(targets.size()) + ")");
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(targets[i], (*items)[i]);
    return Status::Ok();
  }

  Status Exec(const Body& body) {
    for (const auto& n : body) {
      SHOAL_RETURN_IF_ERROR(ExecNode(*n));
      if (flow_ != Flow::kNormal) return Status::Ok();
    }
    return Status::Ok();
  }

  // Renders `body` into a string instead of the current output.
  StatusOr<std::string> Capture(const Body& body) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    Status s = Exec(body);
    out_ = saved;
    SHOAL_RETURN_IF_ERROR(s);
    return buf;
  }

  Status ExecNode(const Node& n) {
    switch (n.kind) {
      case NodeKind::kText: return Emit(n.line, n.text);
      case NodeKind::kOutput: {
        SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        return EmitValue(n.line, v);
      }
      case NodeKind::kIf:
        for (const auto& b : n.branches) {
          bool take = true;
          if (b.cond) {
            SHOAL_ASSIGN_OR_RETURN(Value c, Eval(*b.cond));
            take = c.Truthy();
          }
          if (take) return Exec(b.body);
        }
        return Status::Ok();
      case NodeKind::kFor: return ExecFor(n);
      case NodeKind::kSet: {
        SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        if (n.attr.empty()) return Unpack(n.targets, v, n.line);
        Value ns = Lookup(n.targets[0]);
        if (ns.kind() != Kind::kNamespace) {
          return Error(n.line, "set", "cannot assign attribute on non-namespace object");
        }
        NoteCycleCandidate(ns, v);
        for (auto& kv : ns.ns()) {
          if (kv.first.is_string() && kv.first.str() == n.attr) {
            kv.second = std::move(v);
            return Status::Ok();
          }
        }
        ns.ns().emplace_back(Value::String(n.attr), std::move(v));
        return Status::Ok();
      }
      case NodeKind::kSetBlock: {
        SHOAL_ASSIGN_OR_RETURN(std::string s, Capture(n.body));
        Assign(n.targets[0], Value::String(std::move(s)));
        return Status::Ok();
      }
      case NodeKind::kMacro: Assign(n.macro->name, Value::Macro(n.macro.get())); return Status::Ok();
      case NodeKind::kBreak: flow_ = Flow::kBreak; return Status::Ok();
      case NodeKind::kContinue: flow_ = Flow::kContinue; return Status::Ok();
      case NodeKind::kFilterBlock: {
        SHOAL_ASSIGN_OR_RETURN(std::string s, Capture(n.body));
        block_value_ = Value::String(std::move(s));
        SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
        return EmitValue(n.line, v);
      }
      case NodeKind::kScope: return Exec(n.body);
    }
    return Status::Ok();
  }

  Status CountIteration(int line) {
    if (++iterations_ > limits_.max_loop_iterations) {
      return Error(line, "for", ResourceExhausted("more than " + std::to_string(limits_.max_loop_iterations) +
                                                  " loop iterations"));
    }
    return Status::Ok();
  }

  Status ExecFor(const Node& n) {
    SHOAL_ASSIGN_OR_RETURN(Value seq, Eval(*n.expr));
    auto all = Iterate(seq);
    if (!all.ok()) return Error(n.line, "for", all.status());
    ValueList items;
    if (n.cond) {  // `for x in xs if cond`: filtered before loop.* is computed, as jinja2 does
      for (auto& item : *all) {
        SHOAL_RETURN_IF_ERROR(CountIteration(n.line));
        frames_.emplace_back();
        Status s = Unpack(n.targets, item, n.line);
        StatusOr<Value> c = s.ok() ? Eval(*n.cond) : StatusOr<Value>(s);
        frames_.pop_back();
        if (!c.ok()) return c.status();
        if (c->Truthy()) items.push_back(std::move(item));
      }
    } else {
      items = std::move(*all);
    }
    if (items.empty()) return Exec(n.else_body);
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      SHOAL_RETURN_IF_ERROR(CountIteration(n.line));
      const auto k = static_cast<size_t>(i);
      ValueDict loop = {
          {Value::String("index"), Value::Int(i + 1)},
          {Value::String("index0"), Value::Int(i)},
          {Value::String("revindex"), Value::Int(len - i)},
          {Value::String("revindex0"), Value::Int(len - i - 1)},
          {Value::String("first"), Value::Bool(i == 0)},
          {Value::String("last"), Value::Bool(i == len - 1)},
          {Value::String("length"), Value::Int(len)},
          {Value::String("depth"), Value::Int(1)},
          {Value::String("depth0"), Value::Int(0)},
          {Value::String("previtem"), i > 0 ? items[k - 1] : Value::Undefined("there is no previous item")},
          {Value::String("nextitem"), i + 1 < len ? items[k + 1] : Value::Undefined("there is no next item")},
          {Value::String("cycle"), Value::Function("cycle", Value::Int(i))},
      };
      frames_.emplace_back();
      Assign("loop", Value::Dict(std::move(loop)));
      Status s = Unpack(n.targets, items[k], n.line);
      if (s.ok()) s = Exec(n.body);
      frames_.pop_back();
      SHOAL_RETURN_IF_ERROR(s);
      const Flow f = flow_;
      flow_ = Flow::kNormal;
      if (f == Flow::kBreak) break;
    }
    return Status::Ok();
  }

  StatusOr<CallArgs> EvalArgs(const std::vector<Arg>& args) {
    CallArgs out;
    for (const auto& a : args) {
      SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*a.value));
      if (a.name.empty()) {
        out.pos.push_back(std::move(v));
      } else {
        out.kw.emplace_back(a.name, std::move(v));
      }
    }
    return out;
  }

  StatusOr<Value> CallMacro(const MacroNode& m, const CallArgs& args, int line) {
    const std::string what = "macro '" + m.name + "'";
    if (args.pos.size() > m.params.size()) {
      return Error(line, what, "macro '" + m.name + "' takes not more than " + std::to_string(m.params.size()) +
                                   " argument(s)");
    }
    if (depth_ >= kMaxDepth) {
      return Error(line, what, ResourceExhausted("macro calls nested deeper than " + std::to_string(kMaxDepth)));
    }
    Frame frame;
    frame.macro = true;
    std::vector<bool> bound(m.params.size(), false);
    for (size_t i = 0; i < args.pos.size(); ++i) {
      frame.vars[m.params[i]] = args.pos[i];
      bound[i] = true;
    }
    for (const auto& [k, v] : args.kw) {
      size_t i = 0;
      while (i < m.params.size() && m.params[i] != k) ++i;
      if (i == m.params.size()) return Error(line, what, "macro '" + m.name + "' takes no keyword argument '" + k + "'");
      if (bound[i]) return Error(line, what, "macro '" + m.name + "' got multiple values for argument '" + k + "'");
      frame.vars[k] = v;
      bound[i] = true;
    }
    // Defaults are evaluated in the macro's own frame, so they may refer to earlier parameters.
    frames_.push_back(std::move(frame));
    ++depth_;
    Status s;
    for (size_t i = 0; i < m.params.size() && s.ok(); ++i) {
      if (bound[i]) continue;
      if (m.defaults[i]) {
        auto d = Eval(*m.defaults[i]);
        if (d.ok()) {
          Assign(m.params[i], *d);
        } else {
          s = d.status();
        }
      } else {
        Assign(m.params[i], Value::Undefined("parameter '" + m.params[i] + "' was not provided"));
      }
    }
    StatusOr<std::string> body = s.ok() ? Capture(m.body) : StatusOr<std::string>(s);
    --depth_;
    frames_.pop_back();
    if (!body.ok()) return body.status();
    return Value::String(std::move(*body));
  }

  StatusOr<Value> Eval(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral: return e.literal;
      case ExprKind::kName: return Lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        ValueList items;
        for (const auto& c : e.children) {
          SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*c));
          items.push_back(std::move(v));
        }
        return Value::List(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        ValueDict d;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          SHOAL_ASSIGN_OR_RETURN(Value k, Eval(*e.children[i]));
          SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*e.children[i + 1]));
          if (k.is_list() && !k.is_tuple()) return Error(e.line, "dict literal", "unhashable type: 'list'");
          if (k.is_dict()) return Error(e.line, "dict literal", "unhashable type: 'dict'");
          bool replaced = false;
          for (auto& kv : d) {
            auto same = Equal(kv.first, k);
            if (!same.ok()) return Error(e.line, "dict literal", same.status());
            if (*same) {
              kv.second = v;
              replaced = true;
            }
          }
          if (!replaced) d.emplace_back(std::move(k), std::move(v));
        }
        return Value::Dict(std::move(d));
      }
      case ExprKind::kGetAttr: {
        SHOAL_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
        auto r = GetAttr(obj, e.name);
        if (!r.ok()) return Error(e.line, "attribute '" + e.name + "'", r.status());
        return r;
      }
      case ExprKind::kGetItem: {
        SHOAL_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
        SHOAL_ASSIGN_OR_RETURN(Value key, Eval(*e.children[1]));
        auto r = GetItem(obj, key);
        if (!r.ok()) return Error(e.line, "subscript", r.status());
        return r;
      }
      case ExprKind::kSlice: {
        SHOAL_ASSIGN_OR_RETURN(Value obj, Eval(*e.children[0]));
        Value parts[3] = {Value::None(), Value::None(), Value::None()};
        for (int i = 0; i < 3; ++i) {
          if (e.children[i + 1]) {
            SHOAL_ASSIGN_OR_RETURN(parts[i], Eval(*e.children[i + 1]));
          }
        }
        auto r = SliceOp(obj, parts[0], parts[1], parts[2]);
        if (!r.ok()) return Error(e.line, "slice", r.status());
        return r;
      }
      case ExprKind::kCall: return EvalCall(e);
      case ExprKind::kFilter: {
        Value subject = block_value_;
        if (e.children[0]) {
          SHOAL_ASSIGN_OR_RETURN(subject, Eval(*e.children[0]));
        }
        SHOAL_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
        auto r = ApplyFilter(e.name, subject, args);
        if (!r.ok()) return Error(e.line, "filter '" + e.name + "'", r.status());
        return r;
      }
      case ExprKind::kTest: {
        SHOAL_ASSIGN_OR_RETURN(Value subject, Eval(*e.children[0]));
        SHOAL_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
        auto r = ApplyTest(e.name, subject, args);
        if (!r.ok()) return Error(e.line, "test '" + e.name + "'", r.status());
        return Value::Bool(*r != e.negated);
      }
      case ExprKind::kUnary: {
        SHOAL_ASSIGN_OR_RETURN(Value v, Eval(*e.children[0]));
        auto r = UnaryOp(e.name, v);
        if (!r.ok()) return Error(e.line, "operator '" + e.name + "'", r.status());
        return r;
      }
      case ExprKind::kBinary: {
        SHOAL_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
        SHOAL_ASSIGN_OR_RETURN(Value b, Eval(*e.children[1]));
        auto r = BinaryOp(e.name, a, b);
        if (!r.ok()) return Error(e.line, "operator '" + e.name + "'", r.status());
        return r;
      }
      case ExprKind::kAnd:
      case ExprKind::kOr: {
        SHOAL_ASSIGN_OR_RETURN(Value a, Eval(*e.children[0]));
        if (a.Truthy() == (e.kind == ExprKind::kOr)) return a;
        return Eval(*e.children[1]);
      }
      case ExprKind::kCond: {
        SHOAL_ASSIGN_OR_RETURN(Value c, Eval(*e.children[1]));
        if (c.Truthy()) return Eval(*e.children[0]);
        if (e.children[2]) return Eval(*e.children[2]);
        return Value::Undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined.");
      }
    }
    return Error(e.line, "", Internal("unknown expression kind"));
  }

  StatusOr<Value> EvalCall(const Expr& e) {
    SHOAL_ASSIGN_OR_RETURN(Value fn, Eval(*e.children[0]));
    SHOAL_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args));
    switch (fn.kind()) {
      case Kind::kMacro: return CallMacro(*fn.macro(), args, e.line);
      case Kind::kFunction: {
        if (fn.str() == "raise_exception" && fn.self().is_undefined()) {
          const Value* msg = args.Get(0, "message");
          auto text = msg ? msg->ToString() : StatusOr<std::string>(std::string());
          if (!text.ok()) return Error(e.line, "raise_exception", text.status());
          return Error(e.line, "raise_exception", *text);
        }
        auto r = CallFunction(fn, args);
        if (!r.ok()) return Error(e.line, fn.str() + "()", r.status());
        return r;
      }
      case Kind::kUndefined: return Error(e.line, "call", UndefinedError(fn));
      default: return Error(e.line, "call", "'" + fn.TypeName() + "' object is not callable");
    }
  }

  const std::string& name_;
  const RenderLimits limits_;
  std::vector<Frame> frames_;
  std::string* out_ = nullptr;
  Flow flow_ = Flow::kNormal;
  Value block_value_;
  int depth_ = 0;
  int64_t iterations_ = 0;
  // Namespaces assigned values that hold other values, by storage address; see NoteCycleCandidate.
  std::unordered_map<const ValueDict*, std::weak_ptr<ValueDict>> cycle_candidates_;
  size_t live_candidates_ = 0;
};

}  // namespace

StatusOr<std::string> RenderTemplate(const ParsedTemplate& t, const std::string& name,
                                     const nlohmann::ordered_json& context, const RenderLimits& limits) {
  try {
    return Renderer(name, limits).Run(t.body, context);
  } catch (const std::exception& ex) {  // bad_alloc and the like: never let them leave the library
    return Internal(name + ": rendering failed: " + ex.what());
  }
}

Template::~Template() = default;

StatusOr<std::shared_ptr<const Template>> Template::Parse(std::string_view source, const std::string& name) {
  try {
    SHOAL_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source, name));
    SHOAL_ASSIGN_OR_RETURN(Body body, ParseTemplate(std::move(tokens), name));
    std::shared_ptr<Template> t(new Template());
    t->name_ = name;
    t->parsed_ = std::make_unique<ParsedTemplate>();
    t->parsed_->body = std::move(body);
    return std::shared_ptr<const Template>(std::move(t));
  } catch (const std::exception& ex) {
    return Internal(name + ": parsing failed: " + ex.what());
  }
}

StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  return Render(context, RenderLimits{});
}

StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context, const RenderLimits& limits) const {
  return RenderTemplate(*parsed_, name_, context, limits);
}

}  // namespace shoal::jinja
