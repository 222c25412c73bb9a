// A JSON Schema compiled into the form output can be constrained to (grammar/json_matcher.h walks it
// one byte at a time; grammar/token_constraint.h turns that into a mask over the vocabulary).
//
// What is enforced (everything a tool's `parameters` schema or an OpenAI strict schema uses):
//   type           "object", "array", "string", "number", "integer", "boolean", "null", or a list of them
//   object         properties (written in the schema's order; a property not in `required` may be
//                  left out), required, additionalProperties (false, true or a schema). With
//                  `properties` and no additionalProperties no other key is written (OpenAI's strict
//                  mode; generation never invents keys); an object schema without properties takes
//                  any keys, as JSON Schema says.
//   array          items, minItems, maxItems
//   string         minLength, maxLength (in code points)
//   enum, const    any JSON values, written exactly as compact JSON
//   anyOf, oneOf   alternatives (oneOf is treated as anyOf); sibling keywords apply to every branch
//   $ref           "#", "#/$defs/NAME", "#/definitions/NAME" (recursion allowed, bounded by depth)
//   {} or true     any JSON value
// Annotations (title, description, default, examples, $schema, $id, $comment, deprecated, readOnly,
// writeOnly) are ignored. Numeric bounds, `format` and `uniqueItems` are accepted and NOT enforced
// (the value is well-formed JSON of the right type); `pattern`, `not`, `allOf`, `if`/`then`/`else`,
// `patternProperties`, `prefixItems`, `dependentRequired` and the like are refused with
// Unimplemented naming the keyword and its path, so a schema is never silently weakened.
//
// Numbers are bounded in length (integer part ≤ 19 digits, fraction ≤ 17, exponent ≤ 2: every number
// is a finite double) and whitespace between tokens to runs of ≤ kMaxWhitespaceRun bytes, so a
// constrained generation always ends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/sampling_params.h"
#include "common/status.h"

namespace shoal::grammar {

inline constexpr int kMaxWhitespaceRun = 16;
// Schema text a request may carry, and the compiled size (nodes) one may expand to.
inline constexpr size_t kMaxSchemaBytes = kMaxJsonSchemaBytes;
inline constexpr size_t kMaxSchemaNodes = 4096;
// Alternatives one union may flatten to (anyOf, type lists, the tools of tool_choice "required").
inline constexpr size_t kMaxUnionLeaves = 256;
// Containers one value may nest (the root value's frame counts as 1).
inline constexpr int32_t kMaxNesting = 32;

struct SchemaNode {
  enum class Kind : uint8_t { kAny, kObject, kArray, kString, kNumber, kInteger, kLiterals, kUnion };
  Kind kind = Kind::kAny;
  struct Property {
    std::string key;  // as written in the output: a JSON string, quotes included, compact escapes
    int32_t node = 0;
    bool required = false;
  };
  std::vector<Property> properties;  // kObject, in the schema's order
  int32_t additional = -1;           // kObject: the node of other keys' values; -1: no other keys
  int32_t items = 0;                 // kArray: the node of every item
  int64_t min_items = 0, max_items = -1;    // kArray; -1: no bound
  int64_t min_length = 0, max_length = -1;  // kString, in code points; -1: no bound
  std::vector<std::string> literals;        // kLiterals: compact JSON texts (enum, const, true/false/null)
  std::vector<int32_t> alternatives;        // kUnion, as written (may name other unions, or itself via $ref)
  // kUnion: the non-union nodes it can be, each once (unions and $ref cycles flattened at compile
  // time, so the matcher never recurses through them); at most kMaxUnionLeaves.
  std::vector<int32_t> leaves;
  // Frames a value of this node needs at least to be complete (itself included): what the matcher's
  // nesting bound checks before it starts one, so that every prefix it keeps can still be finished.
  int32_t min_depth = 1;
};

class JsonGrammar {
 public:
  // Node 0 is "any JSON value"; 1, 2, 3 are the literals true, false, null (the matcher's own use).
  static constexpr int32_t kAnyNode = 0, kTrueNode = 1, kFalseNode = 2, kNullNode = 3;

  const SchemaNode& node(int32_t i) const { return nodes_[static_cast<size_t>(i)]; }
  int32_t root() const { return root_; }
  size_t size() const { return nodes_.size(); }

 private:
  friend class SchemaCompiler;
  std::vector<SchemaNode> nodes_;
  int32_t root_ = 0;
};

// Compiles schema text (UTF-8 JSON). InvalidArgument for text that is not JSON or a schema that is
// malformed (naming the path, e.g. "properties.unit.enum"), that allows no value (a $ref to itself and
// nothing else), whose unions flatten past kMaxUnionLeaves, or whose values cannot be completed within
// kMaxNesting levels; Unimplemented for a keyword listed above as refused; `what` prefixes every
// message (e.g. "tools[0].function.parameters"). An `enum` beside `type` keeps the values of that type.
StatusOr<std::shared_ptr<const JsonGrammar>> CompileJsonSchema(std::string_view schema_text, const std::string& what);

}  // namespace shoal::grammar
