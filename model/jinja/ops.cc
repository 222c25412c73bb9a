// Operators and access with Python/jinja2 semantics (see builtins.h).
#include <cmath>
#include <set>

#include "model/jinja/builtins.h"

namespace shoal::jinja {

const Value* CallArgs::Get(size_t i, const char* name) const {
  if (i < pos.size()) return &pos[i];
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

Status CallArgs::Check(size_t max_pos, std::initializer_list<const char*> allowed, const std::string& what) const {
  if (pos.size() > max_pos) {
    return InvalidArgument(what + " takes at most " + std::to_string(max_pos) + " positional arguments (" +
                           std::to_string(pos.size()) + " given)");
  }
  for (const auto& [k, v] : kw) {
    bool ok = false;
    for (const char* a : allowed) ok |= k == a;
    if (!ok) return InvalidArgument(what + " got an unexpected keyword argument '" + k + "'");
  }
  return Status::Ok();
}

Status UndefinedError(const Value& u) {
  return InvalidArgument(u.str().empty() ? "value is undefined" : u.str());
}

namespace {

std::string TypeRepr(const Value& v) {  // jinja2.utils.object_type_repr
  if (v.is_none()) return "None";
  if (v.kind() == Kind::kNamespace) return "jinja2.utils.Namespace object";
  return v.TypeName() + " object";
}

Value NoAttribute(const Value& obj, const std::string& name) {
  return Value::Undefined(ReprString(TypeRepr(obj)) + " has no attribute " + ReprString(name));
}

Value NoElement(const Value& obj, const Value& key) {
  if (key.is_string()) return NoAttribute(obj, key.str());
  return Value::Undefined(TypeRepr(obj) + " has no element " + key.ReprForMessage());
}

Status TypeError(const std::string& op, const Value& a, const Value& b) {
  return InvalidArgument("unsupported operand type(s) for " + op + ": '" + a.TypeName() + "' and '" +
                         b.TypeName() + "'");
}

StatusOr<Value> CheckedString(std::string s) {
  if (s.size() > kMaxValueBytes) {
    return ResourceExhausted("string of " + std::to_string(s.size()) + " bytes exceeds the " +
                             std::to_string(kMaxValueBytes) + "-byte limit");
  }
  return Value::String(std::move(s));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t PyMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

StatusOr<Value> Repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value::String("") : Value::List({}, seq.is_tuple());
  if (seq.is_string()) {
    if (!seq.str().empty() && static_cast<uint64_t>(n) > kMaxValueBytes / seq.str().size()) {
      return ResourceExhausted("string repetition exceeds the " + std::to_string(kMaxValueBytes) + "-byte limit");
    }
    std::string out;
    for (int64_t i = 0; i < n && !seq.str().empty(); ++i) out += seq.str();
    return Value::String(std::move(out));
  }
  if (!seq.list().empty() && static_cast<uint64_t>(n) > kMaxValueBytes / 16 / seq.list().size()) {
    return ResourceExhausted("list repetition exceeds the size limit");
  }
  ValueList out;
  for (int64_t i = 0; i < n && !seq.list().empty(); ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return Value::List(std::move(out), seq.is_tuple());
}

}  // namespace

StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    SHOAL_ASSIGN_OR_RETURN(std::string left, a.ToString());
    SHOAL_ASSIGN_OR_RETURN(std::string right, b.ToString());
    return CheckedString(left + right);
  }
  if (op == "==" || op == "!=") {
    SHOAL_ASSIGN_OR_RETURN(bool eq, Equal(a, b));
    return Value::Bool(eq == (op == "=="));
  }
  if (op == "in" || op == "not in") {
    SHOAL_ASSIGN_OR_RETURN(bool in, Contains(b, a));
    return Value::Bool(op == "in" ? in : !in);
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    const bool swap = op == ">" || op == "<=";
    auto lt = swap ? Less(b, a) : Less(a, b);
    // A TypeError is restated with the operator as written; a comparison past its limits is passed on.
    if (!lt.ok() && lt.status().code() != StatusCode::kInvalidArgument) return lt.status();
    if (!lt.ok()) {
      return InvalidArgument("'" + op + "' not supported between instances of '" + a.TypeName() + "' and '" +
                             b.TypeName() + "'");
    }
    return Value::Bool(op == "<" || op == ">" ? *lt : !*lt);
  }
  const bool nums = a.is_number() && b.is_number();
  const bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) return OutOfRange("integer overflow in +");
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) return CheckedString(a.str() + b.str());
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      if ((a.list().size() + b.list().size()) * 16 > kMaxValueBytes) return ResourceExhausted("list too long");
      ValueList out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return Value::List(std::move(out), a.is_tuple());
    }
    if (a.is_string() || a.is_list()) {
      return InvalidArgument("can only concatenate " + a.TypeName() + " (not \"" + b.TypeName() + "\") to " +
                             a.TypeName());
    }
    return TypeError(op, a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) return OutOfRange("integer overflow in -");
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.as_double() - b.as_double());
    return TypeError(op, a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) return OutOfRange("integer overflow in *");
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) return Repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())) return Repeat(b, a.as_int());
    return TypeError(op, a, b);
  }
  if (!nums) {
    if (op == "%" && a.is_string()) return Unimplemented("printf-style string formatting ('%') is not supported");
    return TypeError(op, a, b);
  }
  if (op == "/") {
    if (b.as_double() == 0) return InvalidArgument("division by zero");
    return Value::Float(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (b.as_double() == 0) {
      return InvalidArgument(ints ? "integer division or modulo by zero" : "float divmod()");
    }
    if (ints) {
      if (a.as_int() == INT64_MIN && b.as_int() == -1) return OutOfRange("integer overflow in " + op);
      return Value::Int(op == "//" ? FloorDiv(a.as_int(), b.as_int()) : PyMod(a.as_int(), b.as_int()));
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "//") return Value::Float(std::floor(x / y));
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::Float(m);
  }
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t r = 1, base = a.as_int();
      for (int64_t e = b.as_int(); e > 0; --e) {
        if (__builtin_mul_overflow(r, base, &r)) return OutOfRange("integer overflow in **");
        if (r == 0 || r == 1) break;
      }
      return Value::Int(r);
    }
    return Value::Float(std::pow(a.as_double(), b.as_double()));
  }
  return Internal("unknown operator " + op);
}

StatusOr<Value> UnaryOp(const std::string& op, const Value& a) {
  if (op == "not") return Value::Bool(!a.Truthy());
  if (a.is_undefined()) return UndefinedError(a);
  if (a.is_float()) return Value::Float(op == "-" ? -a.as_double() : a.as_double());
  if (a.is_int() || a.is_bool()) {
    if (op == "-" && a.as_int() == INT64_MIN) return OutOfRange("integer overflow in unary -");
    return Value::Int(op == "-" ? -a.as_int() : a.as_int());
  }
  return InvalidArgument("bad operand type for unary " + op + ": '" + a.TypeName() + "'");
}

StatusOr<bool> Contains(const Value& c, const Value& item) {
  switch (c.kind()) {
    case Kind::kUndefined: return false;
    case Kind::kString:
      if (!item.is_string()) {
        return InvalidArgument("'in <string>' requires string as left operand, not " + item.TypeName());
      }
      return c.str().find(item.str()) != std::string::npos;
    case Kind::kList:
      for (const auto& v : c.list()) {
        SHOAL_ASSIGN_OR_RETURN(bool eq, Equal(v, item));
        if (eq) return true;
      }
      return false;
    case Kind::kDict: {
      SHOAL_ASSIGN_OR_RETURN(const Value* v, c.Find(item));
      return v != nullptr;
    }
    default: return InvalidArgument("argument of type '" + c.TypeName() + "' is not iterable");
  }
}

StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
  static const std::set<std::string> kDictMethods = {"items", "keys", "values", "get"};
  static const std::set<std::string> kDictUnsafe = {"pop", "popitem", "update", "clear", "setdefault"};
  static const std::set<std::string> kStrMethods = {
      "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "rsplit", "splitlines", "replace",
      "upper", "lower", "title", "capitalize", "find", "rfind", "count", "join", "isdigit", "isalpha",
      "isspace", "isalnum", "islower", "isupper", "removeprefix", "removesuffix", "format"};
  static const std::set<std::string> kListMethods = {"index", "count"};
  static const std::set<std::string> kListUnsafe = {"append", "pop", "extend", "insert", "remove",
                                                    "sort", "reverse", "clear"};
  if (obj.is_undefined()) return UndefinedError(obj);
  if (!name.empty() && name[0] == '_') {
    return Value::Undefined("access to attribute '" + name + "' of '" + obj.TypeName() + "' object is unsafe.");
  }
  switch (obj.kind()) {
    case Kind::kDict:
      if (kDictMethods.count(name)) return Value::Function(name, obj);
      if (kDictUnsafe.count(name)) {
        return Value::Undefined("access to attribute '" + name + "' of 'dict' object is unsafe.");
      }
      if (const Value* v = obj.Find(name)) return *v;
      return NoAttribute(obj, name);
    case Kind::kNamespace:
      if (const Value* v = obj.Find(name)) return *v;
      return NoAttribute(obj, name);
    case Kind::kString:
      if (kStrMethods.count(name)) return Value::Function(name, obj);
      return NoAttribute(obj, name);
    case Kind::kList:
      if (kListMethods.count(name)) return Value::Function(name, obj);
      if (kListUnsafe.count(name) && !obj.is_tuple()) {
        return Value::Undefined("access to attribute '" + name + "' of 'list' object is unsafe.");
      }
      return NoAttribute(obj, name);
    default: return NoAttribute(obj, name);
  }
}

StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  switch (obj.kind()) {
    case Kind::kDict:
    case Kind::kNamespace: {
      SHOAL_ASSIGN_OR_RETURN(const Value* v, obj.Find(key));
      if (v) return *v;
      break;
    }
    case Kind::kList:
    case Kind::kString:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.as_int();
        if (obj.is_list()) {
          const auto n = static_cast<int64_t>(obj.list().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.list()[static_cast<size_t>(i)];
        } else {
          const std::vector<size_t> off = CodepointOffsets(obj.str());
          const auto n = static_cast<int64_t>(off.size()) - 1;
          if (i < 0) i += n;
          if (i >= 0 && i < n) {
            const auto k = static_cast<size_t>(i);
            return Value::String(obj.str().substr(off[k], off[k + 1] - off[k]));
          }
        }
        return NoElement(obj, key);
      }
      break;
    default: break;
  }
  if (key.is_string()) return GetAttr(obj, key.str());
  return NoElement(obj, key);
}

StatusOr<Value> SliceOp(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is_none() && !v->is_int() && !v->is_bool()) {
      if (v->is_undefined()) return UndefinedError(*v);
      return InvalidArgument("slice indices must be integers or None");
    }
  }
  if (!obj.is_list() && !obj.is_string()) return InvalidArgument("'" + obj.TypeName() + "' object is not subscriptable");
  std::vector<size_t> off;
  int64_t len;
  if (obj.is_string()) {
    off = CodepointOffsets(obj.str());
    len = static_cast<int64_t>(off.size()) - 1;
  } else {
    len = static_cast<int64_t>(obj.list().size());
  }
  const int64_t st = step.is_none() ? 1 : step.as_int();
  if (st == 0) return InvalidArgument("slice step cannot be zero");
  auto adjust = [&](const Value& v, bool is_start) -> int64_t {
    if (v.is_none()) return st < 0 ? (is_start ? len - 1 : -1) : (is_start ? 0 : len);
    int64_t i = v.as_int();
    if (i < 0) {
      i += len;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= len) {
      i = st < 0 ? len - 1 : len;
    }
    return i;
  };
  const int64_t b = adjust(start, true), e = adjust(stop, false);
  std::string s;
  ValueList l;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    const auto k = static_cast<size_t>(i);
    if (obj.is_string()) {
      s.append(obj.str(), off[k], off[k + 1] - off[k]);
    } else {
      l.push_back(obj.list()[k]);
    }
  }
  if (obj.is_string()) return Value::String(std::move(s));
  return Value::List(std::move(l), obj.is_tuple());
}

StatusOr<ValueList> Iterate(const Value& v) {
  switch (v.kind()) {
    case Kind::kUndefined: return ValueList{};
    case Kind::kList: return v.list();
    case Kind::kDict: {
      ValueList keys;
      for (const auto& kv : v.dict()) keys.push_back(kv.first);
      return keys;
    }
    case Kind::kString: {
      ValueList chars;
      const std::vector<size_t> off = CodepointOffsets(v.str());
      for (size_t k = 0; k + 1 < off.size(); ++k) chars.push_back(Value::String(v.str().substr(off[k], off[k + 1] - off[k])));
      return chars;
    }
    default: return InvalidArgument("'" + v.TypeName() + "' object is not iterable");
  }
}

}  // namespace shoal::jinja
