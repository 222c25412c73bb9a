// Filters and tests, following jinja2/filters.py and jinja2/tests.py (see builtins.h); tojson is the
// one transformers installs: json.dumps(x, ensure_ascii=False, indent=indent, ...).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "model/jinja/builtins.h"

namespace shoal::jinja {
namespace {

const std::set<std::string>& Filters() {
  static const std::set<std::string> k = {
      "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
      "forceescape", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min",
      "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string",
      "sum", "title", "tojson", "trim", "unique", "upper", "wordcount"};
  return k;
}

const std::set<std::string>& Tests() {
  static const std::set<std::string> k = {
      "defined", "undefined", "none", "string", "number", "mapping", "iterable", "sequence", "boolean",
      "integer", "float", "true", "false", "odd", "even", "divisibleby", "equalto", "eq", "ne", "lt", "le",
      "gt", "ge", "in", "sameas", "lower", "upper", "callable", "escaped", "filter", "test"};
  return k;
}

// jinja2's make_attrgetter: "a.b.0" walks items (getitem first, then attributes).
StatusOr<Value> AttrPath(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    SHOAL_ASSIGN_OR_RETURN(cur, GetItem(cur, digits ? Value::Int(std::stoll(part)) : Value::String(part)));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// The attribute argument of sort/map/join/sum, printed as jinja2 does before splitting it at dots.
StatusOr<Value> AttrPath(const Value& v, const Value& attribute) {
  SHOAL_ASSIGN_OR_RETURN(std::string path, attribute.ToString());
  return AttrPath(v, path);
}

StatusOr<std::string> StringArg(const Value* v, const char* what) {
  if (!v || !v->is_string()) return InvalidArgument(std::string(what) + " must be a string");
  return v->str();
}

// Sort/unique key: the attribute, lowercased when comparing case-insensitively.
StatusOr<Value> SortKey(const Value& v, const Value* attribute, bool case_sensitive) {
  Value k = v;
  if (attribute && !attribute->is_none()) {
    SHOAL_ASSIGN_OR_RETURN(k, AttrPath(v, *attribute));
  }
  if (!case_sensitive && k.is_string()) k = Value::String(PyLower(k.str()));
  return k;
}

StatusOr<ValueList> SortList(ValueList items, const Value* attribute, bool case_sensitive, bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) {
    SHOAL_ASSIGN_OR_RETURN(Value k, SortKey(v, attribute, case_sensitive));
    keyed.emplace_back(std::move(k), std::move(v));
  }
  Status err;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    auto r = reverse ? Less(y.first, x.first) : Less(x.first, y.first);
    if (!r.ok()) {
      if (err.ok()) err = r.status();
      return false;
    }
    return *r;
  });
  SHOAL_RETURN_IF_ERROR(err);
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

bool BoolArg(const Value* v, bool def) { return v ? v->Truthy() : def; }

// select/reject/selectattr/rejectattr: args are ([attr,] test, test args...).
StatusOr<Value> SelectOrReject(const std::string& name, const Value& v, const CallArgs& a) {
  const bool by_attr = name.find("attr") != std::string::npos;
  const bool keep_if = name.rfind("select", 0) == 0;
  size_t i = 0;
  std::string attr;
  if (by_attr) {
    if (a.pos.empty()) return InvalidArgument(name + " needs an attribute name");
    SHOAL_ASSIGN_OR_RETURN(attr, StringArg(&a.pos[0], "attribute"));
    i = 1;
  }
  std::string test;
  if (i < a.pos.size()) {
    SHOAL_ASSIGN_OR_RETURN(test, StringArg(&a.pos[i], "test name"));
    if (!Tests().count(test)) return InvalidArgument("No test named '" + test + "'.");
    ++i;
  }
  CallArgs test_args;
  test_args.pos.assign(a.pos.begin() + static_cast<long>(std::min(i, a.pos.size())), a.pos.end());
  SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
  ValueList out;
  for (const auto& item : items) {
    Value subject = item;
    if (by_attr) {
      SHOAL_ASSIGN_OR_RETURN(subject, AttrPath(item, attr));
    }
    bool pass;
    if (test.empty()) {
      pass = subject.Truthy();
    } else {
      SHOAL_ASSIGN_OR_RETURN(pass, ApplyTest(test, subject, test_args));
    }
    if (pass == keep_if) out.push_back(item);
  }
  return Value::List(std::move(out));
}

StatusOr<Value> ToInt(const Value& v, const Value& def) {
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_int() || v.is_bool()) return Value::Int(v.as_int());
  if (v.is_float()) {
    if (!std::isfinite(v.as_double()) || std::fabs(v.as_double()) > 9.2e18) return def;
    return Value::Int(static_cast<int64_t>(v.as_double()));
  }
  if (v.is_string()) {
    std::string s = PyStrip(v.str(), nullptr, true, true);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    if (s.empty()) return def;
    char* end = nullptr;
    errno = 0;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0' && errno == 0) return Value::Int(i);
    const double d = std::strtod(s.c_str(), &end);
    if (*end == '\0' && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value::Int(static_cast<int64_t>(d));
  }
  return def;
}

StatusOr<Value> ToFloat(const Value& v, const Value& def) {
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_number()) return Value::Float(v.as_double());
  if (v.is_string()) {
    const std::string s = PyStrip(v.str(), nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') return Value::Float(d);
  }
  return def;
}

std::string Indent(std::string s, const std::string& ind, bool first, bool blank) {
  s += "\n";  // jinja2's quirk: splitlines() then drops the final empty line
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      lines.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  std::string rv;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) rv += "\n";
    if (i && (blank || !lines[i].empty())) rv += ind;
    rv += lines[i];
  }
  if (first) rv = ind + rv;
  return rv;
}

StatusOr<Value> ToJsonFilter(const Value& v, const CallArgs& a) {
  SHOAL_RETURN_IF_ERROR(a.Check(4, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson"));
  JsonOptions o;
  o.ensure_ascii = BoolArg(a.Get(0, "ensure_ascii"), false);
  o.sort_keys = BoolArg(a.Get(3, "sort_keys"), false);
  if (const Value* ind = a.Get(1, "indent"); ind && !ind->is_none()) {
    o.has_indent = true;
    if (ind->is_string()) {
      o.indent = ind->str();
    } else if (ind->is_int()) {
      o.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(ind->as_int(), 0, 64)), ' ');
    } else {
      return InvalidArgument("tojson indent must be an int or a string");
    }
    o.item_sep = ",";
  }
  if (const Value* sep = a.Get(2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->list().size() != 2 || !sep->list()[0].is_string() || !sep->list()[1].is_string()) {
      return InvalidArgument("tojson separators must be a pair of strings");
    }
    o.item_sep = sep->list()[0].str();
    o.key_sep = sep->list()[1].str();
  }
  SHOAL_ASSIGN_OR_RETURN(std::string s, ToJson(v, o));
  return Value::String(std::move(s));
}

StatusOr<Value> MinMax(const std::string& name, const Value& v, const CallArgs& a) {
  SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  SHOAL_ASSIGN_OR_RETURN(ValueList sorted, SortList(std::move(items), a.Get(1, "attribute"),
                                                    BoolArg(a.Get(0, "case_sensitive"), false), name == "max"));
  return sorted.front();
}

}  // namespace

bool IsKnownFilter(const std::string& name) { return Filters().count(name) > 0; }
bool IsKnownTest(const std::string& name) { return Tests().count(name) > 0; }

StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, const CallArgs& a) {
  if (name == "default" || name == "d") {
    const Value* def = a.Get(0, "default_value");
    const bool boolean = BoolArg(a.Get(1, "boolean"), false);
    if (v.is_undefined() || (boolean && !v.Truthy())) return def ? *def : Value::String("");
    return v;
  }
  if (name == "safe") return v;
  if (name == "tojson") return ToJsonFilter(v, a);
  if (name == "length" || name == "count") {
    switch (v.kind()) {
      case Kind::kUndefined: return Value::Int(0);
      case Kind::kString: return Value::Int(static_cast<int64_t>(CodepointOffsets(v.str()).size()) - 1);
      case Kind::kList: return Value::Int(static_cast<int64_t>(v.list().size()));
      case Kind::kDict: return Value::Int(static_cast<int64_t>(v.dict().size()));
      default: return InvalidArgument("object of type '" + v.TypeName() + "' has no len()");
    }
  }
  if (name == "string") {
    SHOAL_ASSIGN_OR_RETURN(std::string s, v.ToString());
    return Value::String(std::move(s));
  }
  if (name == "trim" || name == "upper" || name == "lower" || name == "capitalize") {
    SHOAL_ASSIGN_OR_RETURN(std::string s, v.ToString());
    if (name == "trim") return Value::String(PyStrip(s, a.Get(0, "chars"), true, true));
    if (name == "upper") return Value::String(PyUpper(std::move(s)));
    if (name == "lower") return Value::String(PyLower(std::move(s)));
    return Value::String(PyCapitalize(s));
  }
  if (name == "title") {
    // jinja2's do_title: capitalise each chunk that follows whitespace or one of -({[<.
    SHOAL_ASSIGN_OR_RETURN(std::string s, v.ToString());
    bool start = true;
    for (char& c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (std::isspace(u) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<') {
        start = true;
        continue;
      }
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = false;
    }
    return Value::String(s);
  }
  if (name == "escape" || name == "e" || name == "forceescape") {
    SHOAL_ASSIGN_OR_RETURN(const std::string s, v.ToString());
    std::string out;
    for (char c : s) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return Value::String(std::move(out));
  }
  if (name == "replace") {
    CallArgs r = a;
    if (v.is_undefined()) return Value::String("");
    SHOAL_ASSIGN_OR_RETURN(std::string s, v.ToString());
    return CallFunction(Value::Function("replace", Value::String(std::move(s))), r);
  }
  if (name == "int") {
    const Value* def = a.Get(0, "default");
    return ToInt(v, def ? *def : Value::Int(0));
  }
  if (name == "float") {
    const Value* def = a.Get(0, "default");
    return ToFloat(v, def ? *def : Value::Float(0.0));
  }
  if (name == "abs") {
    if (v.is_float()) return Value::Float(std::fabs(v.as_double()));
    if (v.is_int() || v.is_bool()) {
      if (v.as_int() == INT64_MIN) return OutOfRange("integer overflow in abs");
      return Value::Int(std::llabs(v.as_int()));
    }
    if (v.is_undefined()) return UndefinedError(v);
    return InvalidArgument("bad operand type for abs(): '" + v.TypeName() + "'");
  }
  if (name == "round") {
    if (!v.is_number()) return v.is_undefined() ? UndefinedError(v) : InvalidArgument("round() needs a number");
    const Value* prec = a.Get(0, "precision");
    const Value* method = a.Get(1, "method");
    std::string m = "common";
    if (method) {
      SHOAL_ASSIGN_OR_RETURN(m, method->ToString());
    }
    const int64_t digits = prec && prec->is_int() ? std::clamp<int64_t>(prec->as_int(), -308, 308) : 0;
    if (m == "common" && digits > 0 && std::isfinite(v.as_double())) {
      // Python's round() rounds the exact binary value, half to even, as printf does: round(2.675, 2)
      // is 2.67, where scaling by 100 first would give 2.68.
      char buf[512];
      std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(digits), v.as_double());
      return Value::Float(std::strtod(buf, nullptr));
    }
    const double scale = std::pow(10.0, static_cast<double>(digits));
    const double x = v.as_double() * scale;
    double r;
    if (m == "common") {
      r = std::nearbyint(x);  // half to even
    } else if (m == "ceil") {
      r = std::ceil(x);
    } else if (m == "floor") {
      r = std::floor(x);
    } else {
      return InvalidArgument("method must be common, ceil or floor");
    }
    return Value::Float(r / scale);
  }
  if (name == "first" || name == "last") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    if (items.empty()) return Value::Undefined("No " + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    return Value::List(std::move(items));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      const std::vector<size_t> off = CodepointOffsets(v.str());
      std::string out;
      for (size_t k = off.size() - 1; k > 0; --k) out.append(v.str(), off[k - 1], off[k] - off[k - 1]);
      return Value::String(std::move(out));
    }
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "items" || name == "dictsort") {
    if (v.is_undefined()) return Value::List({});
    if (!v.is_dict()) return InvalidArgument("Can only get item pairs from a mapping.");
    ValueList out;
    for (const auto& [k, x] : v.dict()) out.push_back(Value::List({k, x}, true));
    if (name == "items") return Value::List(std::move(out));
    std::string by = "key";
    if (const Value* b = a.Get(1, "by")) {
      SHOAL_ASSIGN_OR_RETURN(by, b->ToString());
    }
    const bool by_value = by == "value";
    ValueList keyed;
    // Sort pairs by their key (or value), case-insensitively unless asked otherwise.
    std::vector<std::pair<Value, Value>> tmp;
    for (auto& p : out) tmp.emplace_back(p.list()[by_value ? 1 : 0], p);
    const bool cs = BoolArg(a.Get(0, "case_sensitive"), false);
    const bool rev = BoolArg(a.Get(2, "reverse"), false);
    Status err;
    std::stable_sort(tmp.begin(), tmp.end(), [&](const auto& x, const auto& y) {
      auto kx = SortKey(x.first, nullptr, cs), ky = SortKey(y.first, nullptr, cs);
      auto r = rev ? Less(*ky, *kx) : Less(*kx, *ky);
      if (!r.ok()) {
        err = r.status();
        return false;
      }
      return *r;
    });
    SHOAL_RETURN_IF_ERROR(err);
    for (auto& t : tmp) keyed.push_back(t.second);
    return Value::List(std::move(keyed));
  }
  if (name == "join") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    const Value* sep = a.Get(0, "d");
    const Value* attr = a.Get(1, "attribute");
    std::string sep_text;
    if (sep) {
      SHOAL_ASSIGN_OR_RETURN(sep_text, sep->ToString());
    }
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep_text;
      Value item = items[i];
      if (attr && !attr->is_none()) {
        SHOAL_ASSIGN_OR_RETURN(item, AttrPath(item, *attr));
      }
      SHOAL_ASSIGN_OR_RETURN(const std::string text, item.ToString());
      out += text;
      if (out.size() > kMaxValueBytes) return ResourceExhausted("join result exceeds the size limit");
    }
    return Value::String(std::move(out));
  }
  if (name == "map") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    ValueList out;
    if (a.pos.empty()) {
      const Value* attr = a.Get(99, "attribute");
      if (!attr) return InvalidArgument("map needs a filter name or attribute=");
      const Value* def = a.Get(99, "default");
      for (const auto& item : items) {
        SHOAL_ASSIGN_OR_RETURN(Value x, AttrPath(item, *attr));
        if (x.is_undefined() && def) x = *def;
        out.push_back(std::move(x));
      }
    } else {
      SHOAL_ASSIGN_OR_RETURN(std::string filter, StringArg(&a.pos[0], "map filter name"));
      if (!IsKnownFilter(filter) || filter == "map") return InvalidArgument("No filter named '" + filter + "'.");
      CallArgs rest;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      rest.kw = a.kw;
      for (const auto& item : items) {
        SHOAL_ASSIGN_OR_RETURN(Value x, ApplyFilter(filter, item, rest));
        out.push_back(std::move(x));
      }
    }
    return Value::List(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(name, v, a);
  }
  if (name == "sort") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    SHOAL_ASSIGN_OR_RETURN(ValueList sorted, SortList(std::move(items), a.Get(2, "attribute"),
                                                      BoolArg(a.Get(1, "case_sensitive"), false),
                                                      BoolArg(a.Get(0, "reverse"), false)));
    return Value::List(std::move(sorted));
  }
  if (name == "unique") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    const bool cs = BoolArg(a.Get(0, "case_sensitive"), false);
    ValueList out, seen;
    for (const auto& item : items) {
      SHOAL_ASSIGN_OR_RETURN(Value k, SortKey(item, a.Get(1, "attribute"), cs));
      bool dup = false;
      for (size_t i = 0; i < seen.size() && !dup; ++i) {
        SHOAL_ASSIGN_OR_RETURN(dup, Equal(seen[i], k));
      }
      if (dup) continue;
      seen.push_back(k);
      out.push_back(item);
    }
    return Value::List(std::move(out));
  }
  if (name == "min" || name == "max") return MinMax(name, v, a);
  if (name == "sum") {
    SHOAL_ASSIGN_OR_RETURN(ValueList items, Iterate(v));
    const Value* attr = a.Get(0, "attribute");
    const Value* start = a.Get(1, "start");
    Value total = start ? *start : Value::Int(0);
    for (const auto& item : items) {
      Value x = item;
      if (attr && !attr->is_none()) {
        SHOAL_ASSIGN_OR_RETURN(x, AttrPath(item, *attr));
      }
      SHOAL_ASSIGN_OR_RETURN(total, BinaryOp("+", total, x));
    }
    return total;
  }
  if (name == "attr") {
    SHOAL_ASSIGN_OR_RETURN(std::string attr, StringArg(a.Get(0, "name"), "attribute name"));
    return GetAttr(v, attr);
  }
  if (name == "indent") {
    const Value* width = a.Get(0, "width");
    std::string ind = "    ";
    if (width) ind = width->is_string() ? width->str() : std::string(static_cast<size_t>(std::clamp<int64_t>(
                                                                        width->is_int() ? width->as_int() : 4, 0, 256)),
                                                                    ' ');
    SHOAL_ASSIGN_OR_RETURN(std::string s, v.ToString());
    std::string out = Indent(std::move(s), ind, BoolArg(a.Get(1, "first"), false), BoolArg(a.Get(2, "blank"), false));
    if (out.size() > kMaxValueBytes) return ResourceExhausted("indent result exceeds the size limit");
    return Value::String(std::move(out));
  }
  if (name == "wordcount") {
    SHOAL_ASSIGN_OR_RETURN(const std::string s, v.ToString());
    int64_t n = 0;
    bool in_word = false;
    for (unsigned char c : s) {
      const bool w = std::isalnum(c) || c == '_' || c >= 0x80;
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::Int(n);
  }
  return Unimplemented("filter '" + name + "' is not supported");
}

StatusOr<bool> ApplyTest(const std::string& name, const Value& v, const CallArgs& a) {
  const Value* arg = a.Get(0, "other");
  auto need_arg = [&]() -> Status {
    if (!arg) return InvalidArgument("test '" + name + "' needs an argument");
    return Status::Ok();
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable" || name == "sequence") {
    return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  }
  if (name == "boolean") return v.is_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.kind() == Kind::kMacro || v.kind() == Kind::kFunction;
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    auto r = CallFunction(Value::Function(name == "lower" ? "islower" : "isupper", v), {});
    return r.ok() && r->Truthy();
  }
  if (name == "filter") return v.is_string() && IsKnownFilter(v.str());
  if (name == "test") return v.is_string() && IsKnownTest(v.str());
  if (name == "odd" || name == "even" || name == "divisibleby") {
    Value d = Value::Int(2);
    if (name == "divisibleby") {
      SHOAL_RETURN_IF_ERROR(need_arg());
      d = *arg;
    }
    SHOAL_ASSIGN_OR_RETURN(Value r, BinaryOp("%", v, d));
    return Equal(r, Value::Int(name == "odd" ? 1 : 0));
  }
  SHOAL_RETURN_IF_ERROR(need_arg());
  if (name == "equalto" || name == "eq") return Equal(v, *arg);
  if (name == "ne") {
    SHOAL_ASSIGN_OR_RETURN(bool eq, Equal(v, *arg));
    return !eq;
  }
  if (name == "sameas") {
    if (v.kind() != arg->kind()) return false;
    return (v.is_none() || v.is_bool() || v.is_undefined()) ? Equal(v, *arg) : false;
  }
  if (name == "in") return Contains(*arg, v);
  const char* op = name == "lt" ? "<" : name == "le" ? "<=" : name == "gt" ? ">" : name == "ge" ? ">=" : nullptr;
  if (op) {
    SHOAL_ASSIGN_OR_RETURN(Value r, BinaryOp(op, v, *arg));
    return r.Truthy();
  }
  return Unimplemented("test '" + name + "' is not supported");
}

}  // namespace shoal::jinja
