// Value printing, comparison and JSON, written to agree with CPython (see value.h).
#include "model/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "common/utf8.h"
#include "model/jinja/ast.h"

namespace shoal::jinja {

namespace {

StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& j, int depth) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::object: {
      if (depth >= kMaxValueDepth) {
        return InvalidArgument("JSON nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
      }
      ValueDict d;
      d.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        SHOAL_ASSIGN_OR_RETURN(Value v, FromJsonAt(it.value(), depth + 1));
        d.emplace_back(Value::String(it.key()), std::move(v));
      }
      return Value::Dict(std::move(d));
    }
    case nlohmann::ordered_json::value_t::array: {
      if (depth >= kMaxValueDepth) {
        return InvalidArgument("JSON nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
      }
      ValueList l;
      l.reserve(j.size());
      for (const auto& e : j) {
        SHOAL_ASSIGN_OR_RETURN(Value v, FromJsonAt(e, depth + 1));
        l.push_back(std::move(v));
      }
      return Value::List(std::move(l));
    }
    case nlohmann::ordered_json::value_t::string:
      return Value::String(j.get<std::string>());
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::Int(static_cast<int64_t>(u));
      return Value::Float(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::Float(j.get<double>());
    default:
      return Value::None();
  }
}

// Values freed by nested ReclaimStorage calls on this thread, waiting for the outermost call to free
// them; nullptr while none runs.
thread_local std::vector<Value>* t_reclaim_pending = nullptr;

// Moves `v` to `pending` when it holds storage whose freeing could recurse.
void Defer(Value& v, std::vector<Value>& pending) {
  switch (v.kind()) {
    case Kind::kList:
    case Kind::kDict:
    case Kind::kNamespace:
    case Kind::kFunction:
      try {
        pending.push_back(std::move(v));
      } catch (...) {  // out of memory: push_back left `v` in place, to be freed recursively
      }
      return;
    default: return;
  }
}

void Defer(ValueList& l, std::vector<Value>& pending) {
  for (auto& v : l) Defer(v, pending);
}

void Defer(ValueDict& d, std::vector<Value>& pending) {
  for (auto& [k, v] : d) {
    Defer(k, pending);
    Defer(v, pending);
  }
}

template <class T>
void Reclaim(T* p) noexcept {
  if (t_reclaim_pending) {  // nested: the outermost call frees what p held
    Defer(*p, *t_reclaim_pending);
    delete p;
    return;
  }
  std::vector<Value> pending;
  t_reclaim_pending = &pending;
  Defer(*p, pending);
  delete p;
  while (!pending.empty()) {
    Value last = std::move(pending.back());
    pending.pop_back();
  }  // `last` is freed here; what only it held joins `pending`
  t_reclaim_pending = nullptr;
}

}  // namespace

void ReclaimStorage::operator()(ValueList* p) const noexcept { Reclaim(p); }
void ReclaimStorage::operator()(ValueDict* p) const noexcept { Reclaim(p); }
void ReclaimStorage::operator()(Value* p) const noexcept { Reclaim(p); }

StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& j) { return FromJsonAt(j, 0); }

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0.0;
    case Kind::kString:
      return !str_.empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->empty();
    default:
      return true;
  }
}

std::string FormatFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.2345e+02": shortest round-trip digits
  std::string sign;
  if (!sci.empty() && sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t epos = sci.find('e');
  std::string digits = sci.substr(0, epos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exp = std::atoi(sci.c_str() + epos + 1);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exp >= -5 + 1 && exp < 16) {  // Python's repr switches to exponent form below 1e-4 and from 1e16
    if (exp >= 0) {
      if (static_cast<int>(digits.size()) <= exp + 1) {
        out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += e;
  }
  return sign + out;
}

std::vector<size_t> CodepointOffsets(const std::string& s) {
  std::vector<size_t> off;
  off.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    off.push_back(i);
    const size_t n = Utf8LeadLength(s[i]);
    size_t k = 1;
    while (k < n && i + k < s.size() && IsUtf8Continuation(s[i + k])) ++k;
    i += k;
  }
  off.push_back(s.size());
  return off;
}

namespace {

// Decodes the code point at s[i..i+n).
uint32_t DecodeAt(const std::string& s, size_t i, size_t n) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (n == 1) return c;
  uint32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

// An approximation of !str.isprintable() for non-ASCII code points: separators, format characters,
// C1 controls and private use, which Python's repr escapes.
bool NonPrintable(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0xA0) || cp == 0xAD || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) ||
         (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x2064) || cp == 0x3000 || cp == 0xFEFF ||
         (cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB) || cp >= 0xF0000;
}

}  // namespace

std::string ReprString(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  const std::vector<size_t> off = CodepointOffsets(s);
  for (size_t k = 0; k + 1 < off.size(); ++k) {
    const size_t n = off[k + 1] - off[k];
    const uint32_t cp = DecodeAt(s, off[k], n);
    char buf[16];
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && NonPrintable(cp))) {
      if (cp < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", cp);
      } else if (cp < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", cp);
      }
      out += buf;
    } else {
      out.append(s, off[k], n);
    }
  }
  out += quote;
  return out;
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return tuple_ ? "tuple" : "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kMacro: return "Macro";
    case Kind::kFunction: return "builtin_function_or_method";
  }
  return "object";
}

namespace {

// str() of a value that holds no other values.
std::string ScalarText(const Value& v) {
  switch (v.kind()) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return v.as_bool() ? "True" : "False";
    case Kind::kInt: return std::to_string(v.as_int());
    case Kind::kFloat: return FormatFloat(v.as_double());
    case Kind::kString: return v.str();
    case Kind::kMacro: return "<Macro '" + v.macro()->name + "'>";
    case Kind::kFunction:
      return v.self().is_undefined() ? "<built-in function " + v.str() + ">"
                                     : "<built-in method " + v.str() + " of " + v.self().TypeName() + " object>";
    default: return "";
  }
}

// repr() of any value, the one walk behind all printing. As CPython's Py_ReprEnter arranges, each
// list, dict and namespace marks itself while its items print, and one met again inside itself prints
// as `[...]`, `(...)` or `{...}`; jinja2's Namespace.__repr__ is f"<Namespace {attrs!r}>", so a
// namespace inside itself prints `<Namespace {...}>`. Nesting deeper than kMaxValueDepth or output
// past max_bytes ends the walk with an error, after which the printer is done.
class Printer {
 public:
  explicit Printer(size_t max_bytes) : max_bytes_(max_bytes) {}

  Status Repr(const Value& v) {
    switch (v.kind()) {
      case Kind::kUndefined: return Append("Undefined");
      case Kind::kString: return Append(ReprString(v.str()));
      case Kind::kList: return List(v.list(), v.is_tuple());
      case Kind::kDict: return Items(v.dict(), false);
      case Kind::kNamespace:
        SHOAL_RETURN_IF_ERROR(Append("<Namespace "));
        SHOAL_RETURN_IF_ERROR(Items(v.ns(), true));
        return Append(">");
      default: return Append(ScalarText(v));
    }
  }

  std::string& out() { return out_; }

 private:
  Status Append(std::string_view s) {
    out_ += s;
    if (out_.size() > max_bytes_) {
      return ResourceExhausted("the printed value exceeds the " + std::to_string(max_bytes_) + "-byte limit");
    }
    return Status::Ok();
  }

  // True when `storage` is already being printed further up. Only a cycle leads back to a container,
  // and every cycle passes through a namespace, so with no namespace open there is nothing to search.
  bool Open(const void* storage) const {
    return open_namespaces_ > 0 && std::find(open_.begin(), open_.end(), storage) != open_.end();
  }

  Status Enter(const void* storage, bool is_namespace) {
    if (open_.size() >= static_cast<size_t>(kMaxValueDepth)) {
      return ResourceExhausted("maximum recursion depth exceeded while getting the repr of an object: "
                               "values nested deeper than " + std::to_string(kMaxValueDepth) + " levels");
    }
    open_.push_back(storage);
    open_namespaces_ += is_namespace;
    return Status::Ok();
  }

  void Leave(bool is_namespace) {
    open_.pop_back();
    open_namespaces_ -= is_namespace;
  }

  Status List(const ValueList& l, bool tuple) {
    if (Open(&l)) return Append(tuple ? "(...)" : "[...]");
    SHOAL_RETURN_IF_ERROR(Enter(&l, false));
    SHOAL_RETURN_IF_ERROR(Append(tuple ? "(" : "["));
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) SHOAL_RETURN_IF_ERROR(Append(", "));
      SHOAL_RETURN_IF_ERROR(Repr(l[i]));
    }
    if (tuple && l.size() == 1) SHOAL_RETURN_IF_ERROR(Append(","));
    SHOAL_RETURN_IF_ERROR(Append(tuple ? ")" : "]"));
    Leave(false);
    return Status::Ok();
  }

  Status Items(const ValueDict& d, bool is_namespace) {
    if (Open(&d)) return Append("{...}");
    SHOAL_RETURN_IF_ERROR(Enter(&d, is_namespace));
    SHOAL_RETURN_IF_ERROR(Append("{"));
    for (size_t i = 0; i < d.size(); ++i) {
      if (i) SHOAL_RETURN_IF_ERROR(Append(", "));
      SHOAL_RETURN_IF_ERROR(Repr(d[i].first));
      SHOAL_RETURN_IF_ERROR(Append(": "));
      SHOAL_RETURN_IF_ERROR(Repr(d[i].second));
    }
    SHOAL_RETURN_IF_ERROR(Append("}"));
    Leave(is_namespace);
    return Status::Ok();
  }

  const size_t max_bytes_;
  std::string out_;
  std::vector<const void*> open_;  // the containers being printed, outermost first
  int open_namespaces_ = 0;
};

}  // namespace

StatusOr<std::string> Value::ToString() const {
  switch (kind_) {
    case Kind::kList:
    case Kind::kDict:
    case Kind::kNamespace: return Repr();
    default: return ScalarText(*this);
  }
}

StatusOr<std::string> Value::Repr() const {
  Printer p(kMaxValueBytes);
  SHOAL_RETURN_IF_ERROR(p.Repr(*this));
  return std::move(p.out());
}

std::string Value::ReprForMessage() const {
  constexpr size_t kMaxBytes = 200;
  Printer p(kMaxBytes);
  std::string& s = p.out();
  if (p.Repr(*this).ok()) return std::move(s);
  s.resize(Utf8PrefixLength(s, kMaxBytes));  // keep UTF-8 whole
  return s + "...";
}

namespace {

// One comparison's walk over two values: how deep it is and how many values it may still visit.
struct CompareWalk {
  int64_t steps_left = kMaxCompareSteps;

  Status Visit(int depth) {
    if (depth > kMaxValueDepth) {
      return ResourceExhausted("maximum recursion depth exceeded in comparison: values nested deeper than " +
                               std::to_string(kMaxValueDepth) + " levels");
    }
    if (--steps_left < 0) {
      return ResourceExhausted("comparison visits more than " + std::to_string(kMaxCompareSteps) + " values");
    }
    return Status::Ok();
  }
};

StatusOr<bool> EqualAt(const Value& a, const Value& b, int depth, CompareWalk& w);

StatusOr<const Value*> FindAt(const ValueDict& d, const Value& key, int depth, CompareWalk& w) {
  for (const auto& [k, v] : d) {
    SHOAL_ASSIGN_OR_RETURN(bool eq, EqualAt(k, key, depth, w));
    if (eq) return &v;
  }
  return static_cast<const Value*>(nullptr);
}

StatusOr<bool> EqualAt(const Value& a, const Value& b, int depth, CompareWalk& w) {
  SHOAL_RETURN_IF_ERROR(w.Visit(depth));
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.str() == b.str();
    case Kind::kList: {
      if (a.is_tuple() != b.is_tuple() || a.list().size() != b.list().size()) return false;
      if (&a.list() == &b.list()) return true;
      for (size_t i = 0; i < a.list().size(); ++i) {
        SHOAL_ASSIGN_OR_RETURN(bool eq, EqualAt(a.list()[i], b.list()[i], depth + 1, w));
        if (!eq) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (a.dict().size() != b.dict().size()) return false;
      if (&a.dict() == &b.dict()) return true;
      for (const auto& [k, v] : a.dict()) {
        SHOAL_ASSIGN_OR_RETURN(const Value* other, FindAt(b.dict(), k, depth + 1, w));
        if (!other) return false;
        SHOAL_ASSIGN_OR_RETURN(bool eq, EqualAt(v, *other, depth + 1, w));
        if (!eq) return false;
      }
      return true;
    }
    case Kind::kNamespace: return &a.ns() == &b.ns();
    case Kind::kMacro: return a.macro() == b.macro();
    default: return false;
  }
}

StatusOr<bool> LessAt(const Value& a, const Value& b, int depth, CompareWalk& w) {
  SHOAL_RETURN_IF_ERROR(w.Visit(depth));
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();  // UTF-8 byte order is code point order
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.list();
    const auto& y = b.list();
    if (&x == &y) return false;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(bool eq, EqualAt(x[i], y[i], depth + 1, w));
      if (eq) continue;
      return LessAt(x[i], y[i], depth + 1, w);
    }
    return x.size() < y.size();
  }
  return InvalidArgument("'<' not supported between instances of '" + a.TypeName() + "' and '" + b.TypeName() +
                         "'");
}

}  // namespace

StatusOr<const Value*> Value::Find(const Value& key) const {
  const ValueDict* d = kind_ == Kind::kDict ? dict_.get() : kind_ == Kind::kNamespace ? ns_.get() : nullptr;
  if (!d) return static_cast<const Value*>(nullptr);
  CompareWalk w;
  return FindAt(*d, key, 0, w);
}

const Value* Value::Find(std::string_view key) const {
  const ValueDict* d = kind_ == Kind::kDict ? dict_.get() : kind_ == Kind::kNamespace ? ns_.get() : nullptr;
  if (!d) return nullptr;
  for (const auto& [k, v] : *d) {
    if (k.is_string() && k.str() == key) return &v;
  }
  return nullptr;
}

StatusOr<bool> Equal(const Value& a, const Value& b) {
  CompareWalk w;
  return EqualAt(a, b, 0, w);
}

StatusOr<bool> Less(const Value& a, const Value& b) {
  CompareWalk w;
  return LessAt(a, b, 0, w);
}

namespace {

void JsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  *out += '"';
  const std::vector<size_t> off = CodepointOffsets(s);
  for (size_t k = 0; k + 1 < off.size(); ++k) {
    const size_t n = off[k + 1] - off[k];
    const uint32_t cp = DecodeAt(s, off[k], n);
    char buf[16];
    switch (cp) {
      case '"': *out += "\\\""; continue;
      case '\\': *out += "\\\\"; continue;
      case '\n': *out += "\\n"; continue;
      case '\r': *out += "\\r"; continue;
      case '\t': *out += "\\t"; continue;
      case '\b': *out += "\\b"; continue;
      case '\f': *out += "\\f"; continue;
      default: break;
    }
    if (cp < 0x20 || (ensure_ascii && cp > 0x7E)) {
      if (cp >= 0x10000) {
        const uint32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
      }
      *out += buf;
    } else {
      out->append(s, off[k], n);
    }
  }
  *out += '"';
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return FormatFloat(d);
}

Status JsonKey(const Value& k, const JsonOptions& o, std::string* out) {
  switch (k.kind()) {
    case Kind::kString: JsonString(k.str(), o.ensure_ascii, out); return Status::Ok();
    case Kind::kInt: *out += "\"" + std::to_string(k.as_int()) + "\""; return Status::Ok();
    case Kind::kBool: *out += k.as_bool() ? "\"true\"" : "\"false\""; return Status::Ok();
    case Kind::kNone: *out += "\"null\""; return Status::Ok();
    case Kind::kFloat: *out += "\"" + JsonFloat(k.as_double()) + "\""; return Status::Ok();
    default:
      return InvalidArgument("keys must be str, int, float, bool or None, not " + k.TypeName());
  }
}

// Every call writes at least one byte, so checking the size on entry bounds the walk by kMaxValueBytes
// even on a value built by doubling, which has 2^n paths through n distinct lists.
Status Json(const Value& v, const JsonOptions& o, int level, std::string* out) {
  if (level > 64) return InvalidArgument("tojson: nesting deeper than 64 levels");
  if (out->size() > kMaxValueBytes) {
    return ResourceExhausted("tojson output exceeds the " + std::to_string(kMaxValueBytes) + "-byte limit");
  }
  if (o.has_indent && o.indent.size() * static_cast<size_t>(level + 1) > kMaxValueBytes) {
    return ResourceExhausted("tojson indentation exceeds the " + std::to_string(kMaxValueBytes) + "-byte limit");
  }
  const std::string nl = o.has_indent ? "\n" : "";
  auto indent = [&](int n) {
    std::string s = nl;
    if (o.has_indent) {
      for (int i = 0; i < n; ++i) s += o.indent;
    }
    return s;
  };
  switch (v.kind()) {
    case Kind::kNone: *out += "null"; return Status::Ok();
    case Kind::kBool: *out += v.as_bool() ? "true" : "false"; return Status::Ok();
    case Kind::kInt: *out += std::to_string(v.as_int()); return Status::Ok();
    case Kind::kFloat: *out += JsonFloat(v.as_double()); return Status::Ok();
    case Kind::kString: JsonString(v.str(), o.ensure_ascii, out); return Status::Ok();
    case Kind::kList: {
      if (v.list().empty()) {
        *out += "[]";
        return Status::Ok();
      }
      *out += "[" + indent(level + 1);
      for (size_t i = 0; i < v.list().size(); ++i) {
        if (i) *out += o.item_sep + indent(level + 1);
        SHOAL_RETURN_IF_ERROR(Json(v.list()[i], o, level + 1, out));
      }
      *out += indent(level) + "]";
      return Status::Ok();
    }
    case Kind::kDict: {
      if (v.dict().empty()) {
        *out += "{}";
        return Status::Ok();
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.dict()) items.push_back(&kv);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) {
          auto r = Less(a->first, b->first);
          return r.ok() && *r;
        });
      }
      *out += "{" + indent(level + 1);
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) *out += o.item_sep + indent(level + 1);
        SHOAL_RETURN_IF_ERROR(JsonKey(items[i]->first, o, out));
        *out += o.key_sep;
        SHOAL_RETURN_IF_ERROR(Json(items[i]->second, o, level + 1, out));
      }
      *out += indent(level) + "}";
      return Status::Ok();
    }
    default:
      return InvalidArgument("Object of type " + v.TypeName() + " is not JSON serializable");
  }
}

}  // namespace

StatusOr<std::string> ToJson(const Value& v, const JsonOptions& opts) {
  std::string out;
  SHOAL_RETURN_IF_ERROR(Json(v, opts, 0, &out));
  if (out.size() > kMaxValueBytes) {
    return ResourceExhausted("tojson output exceeds the " + std::to_string(kMaxValueBytes) + "-byte limit");
  }
  return out;
}

}  // namespace shoal::jinja
