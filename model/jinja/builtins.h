// The built-in operations of the interpreter, as jinja2 running in transformers' sandbox defines them:
// operators, attribute and item access, filters, tests, and methods of str/dict/list.
//
// These functions return bare Python-style messages ("unsupported operand type(s) for +: 'int' and
// 'str'"); the interpreter adds the template name, line and construct.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/jinja/value.h"

namespace shoal::jinja {

// jinja2.sandbox.MAX_RANGE.
inline constexpr int64_t kMaxRange = 100000;

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  // The argument at position `i`, or else keyword `name`; nullptr when neither was given.
  const Value* Get(size_t i, const char* name) const;
  // Fails when a keyword outside `allowed` or more than `max_pos` positionals were passed.
  Status Check(size_t max_pos, std::initializer_list<const char*> allowed, const std::string& what) const;
};

// The error a use of an undefined value raises (jinja2's UndefinedError message).
Status UndefinedError(const Value& u);

StatusOr<Value> BinaryOp(const std::string& op, const Value& a, const Value& b);
StatusOr<Value> UnaryOp(const std::string& op, const Value& a);
StatusOr<bool> Contains(const Value& container, const Value& item);

// Sandboxed getattr/getitem: `obj.name` prefers attributes (methods) over keys, `obj[key]` the
// reverse; a miss yields an Undefined that carries jinja2's message.
StatusOr<Value> GetAttr(const Value& obj, const std::string& name);
StatusOr<Value> GetItem(const Value& obj, const Value& key);
StatusOr<Value> SliceOp(const Value& obj, const Value& start, const Value& stop, const Value& step);

// Python iter(): list items, dict keys, str characters; undefined iterates as empty.
StatusOr<ValueList> Iterate(const Value& v);

StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, const CallArgs& args);
StatusOr<bool> ApplyTest(const std::string& name, const Value& v, const CallArgs& args);
// Calls a kFunction value: a bound method or one of the globals range, namespace, dict, strftime_now.
StatusOr<Value> CallFunction(const Value& fn, const CallArgs& args);
// True for names of the globals CallFunction implements (raise_exception is the interpreter's).
bool IsBuiltinGlobal(const std::string& name);

// str methods shared by filters and methods. Case mapping covers ASCII only.
std::string PyStrip(const std::string& s, const Value* chars, bool left, bool right);
std::string PyLower(std::string s);
std::string PyUpper(std::string s);
std::string PyCapitalize(const std::string& s);

}  // namespace shoal::jinja
