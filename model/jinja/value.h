// Value: the dynamic type a Jinja template computes with, modelled on the Python objects jinja2 sees
// when transformers renders a chat template (none, bool, int, float, str, list, dict, plus jinja's own
// Undefined, namespace and macro objects, and bound built-in methods).
//
// Lists and dicts are shared and immutable once built (transformers renders in jinja2's
// ImmutableSandboxedEnvironment, where list.append and dict.update are refused), so copying a Value is
// cheap. Only a namespace is mutable, and it is shared by reference as in Python.
//
// Printing follows Python's str()/repr() and tojson follows json.dumps(ensure_ascii=False), because the
// rendered prompt must match transformers byte for byte.
//
// A namespace can end up holding itself (`{% set ns.me = ns %}`), and `{% set ns.x = [ns.x] %}` in a loop
// builds values nested arbitrarily deep, so nothing that walks a value trusts its shape: printing and
// comparison track the containers they are inside (a container met again inside itself prints as
// CPython prints it, `[...]` or `{...}`), fail past kMaxValueDepth levels or kMaxValueBytes of output,
// and storage is freed without recursion.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace shoal::jinja {

struct MacroNode;  // ast.h
class Value;
using ValueList = std::vector<Value>;
// Insertion-ordered, like a Python dict; keys compare with Python ==, so lookups are linear (chat
// template dicts hold a handful of keys).
using ValueDict = std::vector<std::pair<Value, Value>>;

// The largest string or list any single operation may build (a printed value, a tojson result); bounds
// memory on hostile input.
inline constexpr size_t kMaxValueBytes = 4u << 20;
// How deep printing, comparison and FromJson follow nested lists, dicts and namespaces before failing;
// CPython would raise RecursionError somewhat deeper (~1000), no chat template nests near either.
inline constexpr int kMaxValueDepth = 256;

// The deleter of every value's shared storage. Freeing a value frees what it alone holds, and so on
// down: on a chain a million links long plain recursion would overflow the stack, so nested frees hand
// their items to the outermost one on the thread, which frees them in a loop (value.cc).
struct ReclaimStorage {
  void operator()(ValueList* p) const noexcept;
  void operator()(ValueDict* p) const noexcept;
  void operator()(Value* p) const noexcept;
};

enum class Kind : uint8_t {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kList,  // also Python tuples (is_tuple set), printed with parentheses
  kDict,
  kNamespace,
  kMacro,
  kFunction,  // a global (range, namespace, ...) or a method bound to `self`
};

class Value {
 public:
  Value() = default;  // undefined
  static Value Undefined(std::string hint = "") {
    Value v;
    v.str_ = std::move(hint);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  static Value Bool(bool b) {
    Value v(Kind::kBool);
    v.int_ = b ? 1 : 0;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(Kind::kInt);
    v.int_ = i;
    return v;
  }
  static Value Float(double d) {
    Value v(Kind::kFloat);
    v.float_ = d;
    return v;
  }
  static Value String(std::string s) {
    Value v(Kind::kString);
    v.str_ = std::move(s);
    return v;
  }
  static Value List(ValueList items, bool is_tuple = false) {
    Value v(Kind::kList);
    v.list_ = std::shared_ptr<const ValueList>(new ValueList(std::move(items)), ReclaimStorage{});
    v.tuple_ = is_tuple;
    return v;
  }
  static Value Dict(ValueDict items) {
    Value v(Kind::kDict);
    v.dict_ = std::shared_ptr<const ValueDict>(new ValueDict(std::move(items)), ReclaimStorage{});
    return v;
  }
  static Value Namespace(ValueDict items) {
    Value v(Kind::kNamespace);
    v.ns_ = std::shared_ptr<ValueDict>(new ValueDict(std::move(items)), ReclaimStorage{});
    return v;
  }
  static Value Macro(const MacroNode* m) {
    Value v(Kind::kMacro);
    v.macro_ = m;
    return v;
  }
  // A built-in: `name` is the global's or method's name; `self` the bound object (undefined for a global).
  static Value Function(std::string name, const Value& self) {
    Value v(Kind::kFunction);
    v.str_ = std::move(name);
    v.self_ = std::shared_ptr<const Value>(new Value(self), ReclaimStorage{});
    return v;
  }
  // Fails on JSON nested deeper than kMaxValueDepth.
  static StatusOr<Value> FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }  // int or bool
  double as_double() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& str() const { return str_; }  // string; function name; undefined hint
  const ValueList& list() const { return *list_; }
  const ValueDict& dict() const { return *dict_; }
  ValueDict& ns() const { return *ns_; }
  // The namespace's storage, without keeping it alive (the renderer breaks namespace cycles with it).
  std::weak_ptr<ValueDict> ns_storage() const { return ns_; }
  const MacroNode* macro() const { return macro_; }
  const Value& self() const { return *self_; }

  // Python truthiness.
  bool Truthy() const;
  // Python str(): what `{{ x }}` prints. Undefined prints as "". Fails (ResourceExhausted) on a list,
  // dict or namespace nested deeper than kMaxValueDepth or printing to more than kMaxValueBytes.
  StatusOr<std::string> ToString() const;
  // Python repr(): how a value looks inside a printed list or dict. Fails as ToString does.
  StatusOr<std::string> Repr() const;
  // repr() for an error message: never fails; a value too deep or too long is cut short, ending "...".
  std::string ReprForMessage() const;
  // "dict", "list", "str", "int", "NoneType", ...: the Python type name used in error messages.
  std::string TypeName() const;

  // dict/namespace lookup by key (Python ==); nullptr when absent. Fails when comparing keys does (Equal).
  StatusOr<const Value*> Find(const Value& key) const;
  // Lookup by a str key, which never fails.
  const Value* Find(std::string_view key) const;

 private:
  explicit Value(Kind k) : kind_(k) {}

  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<const ValueDict> dict_;
  std::shared_ptr<ValueDict> ns_;
  const MacroNode* macro_ = nullptr;
  std::shared_ptr<const Value> self_;
};

// How many values one Equal or Less may visit.
inline constexpr int64_t kMaxCompareSteps = 4'000'000;
// Python ==. Containers sharing storage are equal without a walk (CPython's identity shortcut), and
// namespaces compare by identity, so a walk never meets a cycle; it fails (ResourceExhausted) past
// kMaxValueDepth levels or after visiting kMaxCompareSteps values (two distinct lists built by
// doubling `[x, x]` forty times would otherwise take 2^40 steps).
StatusOr<bool> Equal(const Value& a, const Value& b);
// Python <: numbers with numbers, str with str, list with list; anything else is a TypeError
// (InvalidArgument). Bounded as Equal is.
StatusOr<bool> Less(const Value& a, const Value& b);

// Python float repr: shortest round-trip digits, "1.0", "1e+16", "1e-05", "inf", "nan".
std::string FormatFloat(double d);
// Python repr of a str: quotes chosen as Python does, escapes for control characters.
std::string ReprString(const std::string& s);

struct JsonOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // used when has_indent
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};
// json.dumps(v, ...) as Python writes it; fails on values JSON cannot hold (undefined, namespaces, so
// never on a cycle, macros, ...), nested deeper than 64 levels, or writing more than kMaxValueBytes.
StatusOr<std::string> ToJson(const Value& v, const JsonOptions& opts);

// UTF-8 helpers: code point count and the byte offset of each code point (plus the end).
std::vector<size_t> CodepointOffsets(const std::string& s);

}  // namespace shoal::jinja
