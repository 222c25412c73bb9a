// Methods of str, dict and list reachable from templates, and the callable globals (see builtins.h).
#include <ctime>

#include "common/utf8.h"
#include "model/jinja/builtins.h"
#include "model/jinja/lexer.h"

namespace shoal::jinja {
namespace {

uint32_t CodepointAt(const std::string& s, size_t b, size_t e) {
  const auto c = static_cast<unsigned char>(s[b]);
  const size_t n = e - b;
  if (n == 1) return c;
  uint32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = b + 1; k < e; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[k]) & 0x3F);
  return cp;
}

// str.isspace() for one code point.
bool PySpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == ' ' || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Code point index of byte offset `byte` in s.
int64_t CpIndex(const std::string& s, size_t byte) {
  int64_t n = 0;
  for (size_t i = 0; i < byte && i < s.size(); ++i) n += !IsUtf8Continuation(s[i]);
  return n;
}

StatusOr<std::string> StrArg(const CallArgs& a, size_t i, const char* name, const std::string& what) {
  const Value* v = a.Get(i, name);
  if (!v) return InvalidArgument(what + " missing required argument '" + name + "'");
  if (!v->is_string()) return InvalidArgument(what + " argument must be str, not " + v->TypeName());
  return v->str();
}

ValueList Split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  ValueList out;
  std::vector<std::string> parts;
  if (!sep || sep->is_none()) {
    // Runs of whitespace separate; leading/trailing whitespace yields no empty parts.
    const std::vector<size_t> off = CodepointOffsets(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t k = 0;
    const size_t n = off.size() - 1;
    while (k < n) {
      while (k < n && PySpace(CodepointAt(s, off[k], off[k + 1]))) ++k;
      if (k == n) break;
      size_t j = k;
      while (j < n && !PySpace(CodepointAt(s, off[j], off[j + 1]))) ++j;
      words.emplace_back(off[k], off[j]);
      k = j;
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
      if (!from_right) {
        const size_t keep = static_cast<size_t>(maxsplit);
        for (size_t i = 0; i < keep; ++i) parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
        parts.push_back(PyStrip(s.substr(words[keep].first), nullptr, false, true));
      } else {
        const size_t first = words.size() - static_cast<size_t>(maxsplit);
        parts.push_back(PyStrip(s.substr(0, words[first - 1].second), nullptr, true, false));
        for (size_t i = first; i < words.size(); ++i) parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
      }
    } else {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    }
  } else {
    const std::string& d = sep->str();
    if (!from_right) {
      size_t start = 0;
      int64_t done = 0;
      while (maxsplit < 0 || done < maxsplit) {
        const size_t p = s.find(d, start);
        if (p == std::string::npos) break;
        parts.push_back(s.substr(start, p - start));
        start = p + d.size();
        ++done;
      }
      parts.push_back(s.substr(start));
    } else {
      size_t end = s.size();
      int64_t done = 0;
      std::vector<std::string> rev;
      while ((maxsplit < 0 || done < maxsplit) && end >= d.size()) {
        const size_t p = s.rfind(d, end - d.size());
        if (p == std::string::npos) break;
        rev.push_back(s.substr(p + d.size(), end - p - d.size()));
        end = p;
        ++done;
      }
      rev.push_back(s.substr(0, end));
      parts.assign(rev.rbegin(), rev.rend());
    }
  }
  for (auto& p : parts) out.push_back(Value::String(std::move(p)));
  return out;
}

StatusOr<Value> StrMethod(const std::string& name, const std::string& s, const CallArgs& a) {
  const std::string what = "str." + name + "()";
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    SHOAL_RETURN_IF_ERROR(a.Check(1, {}, what));
    const Value* chars = a.Get(0, "chars");
    if (chars && !chars->is_none() && !chars->is_string()) return InvalidArgument(what + " arg must be None or str");
    return Value::String(PyStrip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") {
    SHOAL_RETURN_IF_ERROR(a.Check(1, {}, what));
    const Value* p = a.Get(0, "prefix");
    if (!p) return InvalidArgument(what + " takes at least 1 argument");
    std::vector<std::string> cands;
    if (p->is_string()) {
      cands.push_back(p->str());
    } else if (p->is_list()) {
      for (const auto& v : p->list()) {
        if (!v.is_string()) return InvalidArgument("tuple for " + name + " must only contain str");
        cands.push_back(v.str());
      }
    } else {
      return InvalidArgument(name + " first arg must be str or a tuple of str, not " + p->TypeName());
    }
    for (const auto& c : cands) {
      if (c.size() > s.size()) continue;
      if (name == "startswith" ? s.compare(0, c.size(), c) == 0 : s.compare(s.size() - c.size(), c.size(), c) == 0) {
        return Value::Bool(true);
      }
    }
    return Value::Bool(false);
  }
  if (name == "split" || name == "rsplit") {
    SHOAL_RETURN_IF_ERROR(a.Check(2, {"sep", "maxsplit"}, what));
    const Value* sep = a.Get(0, "sep");
    const Value* maxsplit = a.Get(1, "maxsplit");
    if (sep && !sep->is_none() && !sep->is_string()) return InvalidArgument("must be str or None, not " + sep->TypeName());
    if (sep && sep->is_string() && sep->str().empty()) return InvalidArgument("empty separator");
    if (maxsplit && !maxsplit->is_int()) return InvalidArgument(what + " maxsplit must be an integer");
    return Value::List(Split(s, sep, maxsplit ? maxsplit->as_int() : -1, name == "rsplit"));
  }
  if (name == "splitlines") {
    ValueList out;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' || s[i] == '\r') {
        out.push_back(Value::String(s.substr(start, i - start)));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        start = i + 1;
      }
    }
    if (start < s.size()) out.push_back(Value::String(s.substr(start)));
    return Value::List(std::move(out));
  }
  if (name == "replace") {
    SHOAL_ASSIGN_OR_RETURN(std::string from, StrArg(a, 0, "old", what));
    SHOAL_ASSIGN_OR_RETURN(std::string to, StrArg(a, 1, "new", what));
    const Value* count = a.Get(2, "count");
    int64_t left = count && count->is_int() ? count->as_int() : -1;
    std::string out;
    if (from.empty()) {  // Python inserts `to` around every character
      const std::vector<size_t> off = CodepointOffsets(s);
      for (size_t k = 0; k + 1 < off.size(); ++k) {
        if (left != 0) {
          out += to;
          --left;
        }
        out.append(s, off[k], off[k + 1] - off[k]);
      }
      if (left != 0) out += to;
    } else {
      size_t start = 0;
      while (left != 0) {
        const size_t p = s.find(from, start);
        if (p == std::string::npos) break;
        out.append(s, start, p - start);
        out += to;
        start = p + from.size();
        --left;
        if (out.size() > kMaxValueBytes) return ResourceExhausted("str.replace() result exceeds the size limit");
      }
      out.append(s, start);
    }
    if (out.size() > kMaxValueBytes) return ResourceExhausted("str.replace() result exceeds the size limit");
    return Value::String(std::move(out));
  }
  if (name == "upper") return Value::String(PyUpper(s));
  if (name == "lower") return Value::String(PyLower(s));
  if (name == "capitalize") return Value::String(PyCapitalize(s));
  if (name == "title") {
    std::string out = s;
    bool prev_cased = false;
    for (char& c : out) {
      const bool alpha = std::isalpha(static_cast<unsigned char>(c)) != 0;
      if (alpha) c = static_cast<char>(prev_cased ? std::tolower(static_cast<unsigned char>(c))
                                                  : std::toupper(static_cast<unsigned char>(c)));
      prev_cased = alpha;
    }
    return Value::String(out);
  }
  if (name == "find" || name == "rfind" || name == "count") {
    SHOAL_ASSIGN_OR_RETURN(std::string sub, StrArg(a, 0, "sub", what));
    if (name == "count") {
      if (sub.empty()) return Value::Int(CpIndex(s, s.size()) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::Int(n);
    }
    const size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
    return Value::Int(p == std::string::npos ? -1 : CpIndex(s, p));
  }
  if (name == "join") {
    const Value* items = a.Get(0, "iterable");
    if (!items) return InvalidArgument(what + " takes exactly one argument");
    SHOAL_ASSIGN_OR_RETURN(ValueList list, Iterate(*items));
    std::string out;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_string()) {
        return InvalidArgument("sequence item " + std::to_string(i) + ": expected str instance, " +
                               list[i].TypeName() + " found");
      }
      if (i) out += s;
      out += list[i].str();
      if (out.size() > kMaxValueBytes) return ResourceExhausted("str.join() result exceeds the size limit");
    }
    return Value::String(std::move(out));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    SHOAL_ASSIGN_OR_RETURN(std::string fix, StrArg(a, 0, "fix", what));
    if (fix.size() <= s.size()) {
      if (name == "removeprefix" && s.compare(0, fix.size(), fix) == 0) return Value::String(s.substr(fix.size()));
      if (name == "removesuffix" && s.compare(s.size() - fix.size(), fix.size(), fix) == 0) {
        return Value::String(s.substr(0, s.size() - fix.size()));
      }
    }
    return Value::String(s);
  }
  if (name.rfind("is", 0) == 0) {
    if (s.empty()) return Value::Bool(false);
    bool all = true, any_cased = false, upper = false, lower = false;
    for (unsigned char c : s) {
      if (name == "isdigit") all &= std::isdigit(c) != 0;
      if (name == "isalpha") all &= std::isalpha(c) != 0;
      if (name == "isalnum") all &= std::isalnum(c) != 0;
      if (name == "isspace") all &= std::isspace(c) != 0;
      any_cased |= std::isalpha(c) != 0;
      upper |= std::isupper(c) != 0;
      lower |= std::islower(c) != 0;
    }
    if (name == "islower") return Value::Bool(any_cased && !upper);
    if (name == "isupper") return Value::Bool(any_cased && !lower);
    return Value::Bool(all);
  }
  if (name == "format") {
    // The sandbox's str.format: "{}", "{0}" and "{name}" fields without format specs.
    std::string out;
    size_t auto_idx = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
        out += '{';
        ++i;
      } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
        out += '}';
        ++i;
      } else if (s[i] == '{') {
        const size_t close = s.find('}', i);
        if (close == std::string::npos) return InvalidArgument("Single '{' encountered in format string");
        const std::string field = s.substr(i + 1, close - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos) {
          return Unimplemented("str.format() field '{" + field + "}' is not supported");
        }
        const Value* v = nullptr;
        if (field.empty()) {
          v = auto_idx < a.pos.size() ? &a.pos[auto_idx++] : nullptr;
        } else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
          const size_t idx = std::strtoul(field.c_str(), nullptr, 10);
          v = idx < a.pos.size() ? &a.pos[idx] : nullptr;
        } else {
          for (const auto& [k, kv] : a.kw) {
            if (k == field) v = &kv;
          }
        }
        if (!v) return InvalidArgument("str.format(): no argument for field '{" + field + "}'");
        SHOAL_ASSIGN_OR_RETURN(const std::string text, v->ToString());
        out += text;
        if (out.size() > kMaxValueBytes) return ResourceExhausted("str.format() result exceeds the size limit");
        i = close;
      } else if (s[i] == '}') {
        return InvalidArgument("Single '}' encountered in format string");
      } else {
        out += s[i];
      }
    }
    return Value::String(std::move(out));
  }
  return Unimplemented(what + " is not supported");
}

StatusOr<Value> Range(const CallArgs& a) {
  SHOAL_RETURN_IF_ERROR(a.Check(3, {}, "range()"));
  if (a.pos.empty()) return InvalidArgument("range expected at least 1 argument, got 0");
  for (const auto& v : a.pos) {
    if (!v.is_int() && !v.is_bool()) {
      if (v.is_undefined()) return UndefinedError(v);
      return InvalidArgument("'" + v.TypeName() + "' object cannot be interpreted as an integer");
    }
  }
  int64_t start = 0, stop, step = 1;
  if (a.pos.size() == 1) {
    stop = a.pos[0].as_int();
  } else {
    start = a.pos[0].as_int();
    stop = a.pos[1].as_int();
    if (a.pos.size() == 3) step = a.pos[2].as_int();
  }
  if (step == 0) return InvalidArgument("range() arg 3 must not be zero");
  const __int128 span = step > 0 ? (static_cast<__int128>(stop) - start + step - 1) / step
                                 : (static_cast<__int128>(start) - stop - step - 1) / -step;
  if (span > kMaxRange) {
    return InvalidArgument("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" +
                           std::to_string(kMaxRange) + ").");
  }
  ValueList out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::Int(i));
  return Value::List(std::move(out));
}

}  // namespace

std::string PyStrip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::vector<size_t> off = CodepointOffsets(s);
  const bool ws = !chars || chars->is_none();
  auto strip_it = [&](size_t k) {
    if (ws) return PySpace(CodepointAt(s, off[k], off[k + 1]));
    return chars->str().find(s.substr(off[k], off[k + 1] - off[k])) != std::string::npos;
  };
  size_t b = 0, e = off.size() - 1;
  if (left) {
    while (b < e && strip_it(b)) ++b;
  }
  if (right) {
    while (e > b && strip_it(e - 1)) --e;
  }
  return s.substr(off[b], off[e] - off[b]);
}

std::string PyLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string PyUpper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string PyCapitalize(const std::string& s) {
  std::string out = PyLower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

bool IsBuiltinGlobal(const std::string& name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "strftime_now";
}

StatusOr<Value> CallFunction(const Value& fn, const CallArgs& a) {
  const std::string& name = fn.str();
  const Value& self = fn.self();
  if (self.is_string()) return StrMethod(name, self.str(), a);
  if (self.is_dict()) {
    const std::string what = "dict." + name + "()";
    if (name == "get") {
      SHOAL_RETURN_IF_ERROR(a.Check(2, {}, what));
      const Value* key = a.Get(0, "key");
      if (!key) return InvalidArgument("get expected at least 1 argument, got 0");
      SHOAL_ASSIGN_OR_RETURN(const Value* v, self.Find(*key));
      if (v) return *v;
      const Value* def = a.Get(1, "default");
      return def ? *def : Value::None();
    }
    SHOAL_RETURN_IF_ERROR(a.Check(0, {}, what));
    ValueList out;
    for (const auto& [k, v] : self.dict()) {
      if (name == "keys") out.push_back(k);
      if (name == "values") out.push_back(v);
      if (name == "items") out.push_back(Value::List({k, v}, true));
    }
    return Value::List(std::move(out));
  }
  if (self.is_list()) {
    const Value* x = a.Get(0, "value");
    if (!x) return InvalidArgument("list." + name + "() takes exactly one argument");
    int64_t n = 0;
    for (size_t i = 0; i < self.list().size(); ++i) {
      SHOAL_ASSIGN_OR_RETURN(bool eq, Equal(self.list()[i], *x));
      if (!eq) continue;
      if (name == "index") return Value::Int(static_cast<int64_t>(i));
      ++n;
    }
    if (name == "index") return InvalidArgument(x->ReprForMessage() + " is not in list");
    return Value::Int(n);
  }
  if (name == "cycle" && self.is_int()) {  // loop.cycle(...): self holds loop.index0
    if (a.pos.empty()) return InvalidArgument("no items for cycling given");
    return a.pos[static_cast<size_t>(self.as_int()) % a.pos.size()];
  }
  if (name == "range") return Range(a);
  if (name == "namespace" || name == "dict") {
    ValueDict d;
    if (a.pos.size() > 1) return InvalidArgument(name + "() takes at most 1 positional argument");
    if (!a.pos.empty()) {
      if (!a.pos[0].is_dict()) return InvalidArgument(name + "() positional argument must be a mapping");
      d = a.pos[0].dict();
    }
    for (const auto& [k, v] : a.kw) {
      bool replaced = false;
      for (auto& kv : d) {
        if (kv.first.is_string() && kv.first.str() == k) {
          kv.second = v;
          replaced = true;
        }
      }
      if (!replaced) d.emplace_back(Value::String(k), v);
    }
    return name == "dict" ? Value::Dict(std::move(d)) : Value::Namespace(std::move(d));
  }
  if (name == "strftime_now") {
    const Value* fmt = a.Get(0, "format");
    if (!fmt || !fmt->is_string()) return InvalidArgument("strftime_now() needs a format string");
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof(buf), fmt->str().c_str(), &tm);
    return Value::String(std::string(buf, n));
  }
  return Unimplemented("calling '" + name + "' is not supported");
}

}  // namespace shoal::jinja
