#include "grammar/json_schema.h"

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

namespace shoal::grammar {

namespace {

using json = nlohmann::ordered_json;

constexpr int kMaxCompileDepth = 64;

// Keywords that only describe a value.
bool IsAnnotation(std::string_view k) {
  static constexpr std::string_view kNames[] = {"title",    "description", "default", "examples", "$schema",
                                                "$id",      "$comment",    "deprecated", "readOnly", "writeOnly",
                                                "$defs",    "definitions", "strict", "discriminator"};
  return std::find(std::begin(kNames), std::end(kNames), k) != std::end(kNames);
}

// Accepted, not enforced (the header lists them).
bool IsUnenforced(std::string_view k) {
  static constexpr std::string_view kNames[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                                "multipleOf", "format", "uniqueItems", "contentMediaType",
                                                "contentEncoding"};
  return std::find(std::begin(kNames), std::end(kNames), k) != std::end(kNames);
}

bool IsEnforced(std::string_view k) {
  static constexpr std::string_view kNames[] = {"type",     "properties", "required", "additionalProperties",
                                                "items",    "minItems",   "maxItems", "minLength",
                                                "maxLength", "enum",      "const",    "anyOf",
                                                "oneOf",    "allOf",      "$ref",     "nullable"};
  return std::find(std::begin(kNames), std::end(kNames), k) != std::end(kNames);
}

SchemaNode Union(std::vector<int32_t> alternatives) {
  SchemaNode n;
  n.kind = SchemaNode::Kind::kUnion;
  n.alternatives = std::move(alternatives);
  return n;
}

std::string Compact(const json& v) { return v.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict); }

}  // namespace

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, std::string what) : root_(root), what_(std::move(what)) {
    SchemaNode any;
    g_->nodes_.push_back(any);
    for (const char* lit : {"true", "false", "null"}) {
      SchemaNode n;
      n.kind = SchemaNode::Kind::kLiterals;
      n.literals = {lit};
      g_->nodes_.push_back(std::move(n));
    }
  }

  StatusOr<std::shared_ptr<const JsonGrammar>> Run() {
    StatusOr<int32_t> r = Compile(root_, "", 0);
    if (!r.ok()) return r.status();
    g_->root_ = *r;
    SHOAL_RETURN_IF_ERROR(FlattenUnions());
    SHOAL_RETURN_IF_ERROR(ComputeMinDepth());
    return std::shared_ptr<const JsonGrammar>(std::move(g_));
  }

 private:
  Status Error(const std::string& path, const std::string& msg) const {
    return InvalidArgument(what_ + (path.empty() ? "" : "." + path) + ": " + msg);
  }
  static std::string Join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

  StatusOr<int32_t> NewNode(SchemaNode n, const std::string& path) {
    if (g_->nodes_.size() >= kMaxSchemaNodes) {
      return Error(path, "the schema expands to more than " + std::to_string(kMaxSchemaNodes) + " nodes");
    }
    g_->nodes_.push_back(std::move(n));
    return static_cast<int32_t>(g_->nodes_.size() - 1);
  }

  StatusOr<int64_t> Count(const json& s, const char* key, const std::string& path) const {
    const json& v = s[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0) return Error(Join(path, key), "must be a non-negative integer");
    return v.get<int64_t>();
  }

  // The schema a "$ref" names (only local references into the document).
  StatusOr<const json*> Resolve(const json& ref, const std::string& path) const {
    if (!ref.is_string()) return Error(Join(path, "$ref"), "must be a string");
    const std::string& r = ref.get_ref<const std::string&>();
    if (r == "#") return &root_;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (r.compare(0, p.size(), p) != 0) continue;
      const std::string section = p.substr(2, p.size() - 3);
      const std::string name = r.substr(p.size());
      if (root_.is_object() && root_.contains(section) && root_[section].is_object() && root_[section].contains(name)) {
        return &root_[section][name];
      }
      return Error(Join(path, "$ref"), "'" + r + "' names no definition in the schema");
    }
    return Error(Join(path, "$ref"), "'" + r.substr(0, 80) + "' is not supported (only #, #/$defs/NAME, #/definitions/NAME)");
  }

  StatusOr<int32_t> Compile(const json& s, const std::string& path, int depth) {
    if (depth > kMaxCompileDepth) return Error(path, "nested more than " + std::to_string(kMaxCompileDepth) + " levels");
    if (s.is_boolean()) {
      if (s.get<bool>()) return JsonGrammar::kAnyNode;
      return Error(path, "the schema false allows no value");
    }
    if (!s.is_object()) return Error(path, "a schema must be an object or a boolean");
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& k = it.key();
      if (IsAnnotation(k) || IsUnenforced(k) || IsEnforced(k)) continue;
      return Status(StatusCode::kUnimplemented,
                    what_ + "." + Join(path, k) + ": the keyword '" + k + "' cannot be enforced while generating");
    }
    if (s.contains("$ref")) {
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (it.key() != "$ref" && !IsAnnotation(it.key())) {
          return Status(StatusCode::kUnimplemented, what_ + "." + Join(path, "$ref") + ": '$ref' beside '" + it.key() +
                                                        "' is not supported (only annotations may sit beside it)");
        }
      }
      const std::string ref = s["$ref"].is_string() ? s["$ref"].get<std::string>() : "";
      if (auto m = refs_.find(ref); m != refs_.end()) return m->second;
      StatusOr<const json*> target = Resolve(s["$ref"], path);
      if (!target.ok()) return target.status();
      // Reserve the node first, so a recursive reference finds it: a union of one alternative.
      SHOAL_ASSIGN_OR_RETURN(int32_t slot, NewNode(Union({}), path));
      refs_[ref] = slot;
      SHOAL_ASSIGN_OR_RETURN(int32_t body, Compile(**target, ref, depth + 1));
      g_->nodes_[static_cast<size_t>(slot)].alternatives = {body};
      return slot;
    }
    if (s.contains("allOf")) {
      const json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) {
        return Status(StatusCode::kUnimplemented, what_ + "." + Join(path, "allOf") + ": only an allOf of one schema is supported");
      }
      json rest = s;
      rest.erase("allOf");
      if (!HasConstraints(rest)) return Compile(all[0], Join(path, "allOf[0]"), depth + 1);
      if (!all[0].is_object() || all[0].contains("$ref")) {
        return Status(StatusCode::kUnimplemented, what_ + "." + Join(path, "allOf") + ": allOf beside other keywords is not supported");
      }
      json merged = all[0];
      for (auto it = rest.begin(); it != rest.end(); ++it) merged[it.key()] = it.value();
      return Compile(merged, path, depth + 1);
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      const json& alts = s[key];
      if (!alts.is_array() || alts.empty()) return Error(Join(path, key), "must be a non-empty array");
      json siblings = s;
      siblings.erase("anyOf");
      siblings.erase("oneOf");
      const bool merge = HasConstraints(siblings);
      SchemaNode u;
      u.kind = SchemaNode::Kind::kUnion;
      for (size_t i = 0; i < alts.size(); ++i) {
        const std::string p = Join(path, std::string(key) + "[" + std::to_string(i) + "]");
        if (!merge) {
          SHOAL_ASSIGN_OR_RETURN(int32_t n, Compile(alts[i], p, depth + 1));
          u.alternatives.push_back(n);
          continue;
        }
        if (!alts[i].is_object() || alts[i].contains("$ref")) {
          return Status(StatusCode::kUnimplemented, what_ + "." + p + ": a $ref alternative beside other keywords is not supported");
        }
        json merged = siblings;
        for (auto it = alts[i].begin(); it != alts[i].end(); ++it) merged[it.key()] = it.value();
        SHOAL_ASSIGN_OR_RETURN(int32_t n, Compile(merged, p, depth + 1));
        u.alternatives.push_back(n);
      }
      return NewNode(std::move(u), path);
    }
    if (s.contains("nullable") && s["nullable"] == true) {
      json inner = s;
      inner.erase("nullable");
      SHOAL_ASSIGN_OR_RETURN(int32_t n, Compile(inner, path, depth + 1));
      return NewNode(Union({n, JsonGrammar::kNullNode}), path);
    }
    if (s.contains("const") || s.contains("enum")) {
      SchemaNode n;
      n.kind = SchemaNode::Kind::kLiterals;
      if (s.contains("const")) {
        n.literals.push_back(Compact(s["const"]));
      } else {
        const json& e = s["enum"];
        if (!e.is_array() || e.empty()) return Error(Join(path, "enum"), "must be a non-empty array");
        for (const json& v : e) {
          if (!OfDeclaredType(s, v)) continue;  // both keywords apply: a value of another type never validates
          std::string lit = Compact(v);
          if (std::find(n.literals.begin(), n.literals.end(), lit) == n.literals.end()) n.literals.push_back(std::move(lit));
        }
      }
      if (n.literals.empty()) return Error(Join(path, "enum"), "has no value of the schema's type");
      return NewNode(std::move(n), path);
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const json& x : t) {
          if (!x.is_string()) return Error(Join(path, "type"), "must be a string or an array of strings");
          types.push_back(x.get<std::string>());
        }
      } else {
        return Error(Join(path, "type"), "must be a string or a non-empty array of strings");
      }
    } else if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("minLength") || s.contains("maxLength")) {
      types.push_back("string");
    } else {
      return JsonGrammar::kAnyNode;
    }
    if (types.size() == 1) return CompileType(s, types[0], path, depth);
    SchemaNode u;
    u.kind = SchemaNode::Kind::kUnion;
    for (const std::string& t : types) {
      SHOAL_ASSIGN_OR_RETURN(int32_t n, CompileType(s, t, path, depth));
      u.alternatives.push_back(n);
    }
    return NewNode(std::move(u), path);
  }

  // Whether v is of a type the schema's "type" names (true without one).
  static bool OfDeclaredType(const json& s, const json& v) {
    if (!s.contains("type")) return true;
    auto is = [&](const json& t) {
      if (!t.is_string()) return false;
      const std::string& n = t.get_ref<const std::string&>();
      return (n == "string" && v.is_string()) || (n == "integer" && v.is_number_integer()) ||
             (n == "number" && v.is_number()) || (n == "boolean" && v.is_boolean()) || (n == "null" && v.is_null()) ||
             (n == "array" && v.is_array()) || (n == "object" && v.is_object());
    };
    const json& t = s["type"];
    if (t.is_array()) return std::any_of(t.begin(), t.end(), is);
    return is(t);
  }

  static bool HasConstraints(const json& s) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (!IsAnnotation(it.key())) return true;
    }
    return false;
  }

  StatusOr<int32_t> CompileType(const json& s, const std::string& t, const std::string& path, int depth) {
    SchemaNode n;
    if (t == "string") {
      n.kind = SchemaNode::Kind::kString;
      if (s.contains("minLength")) {
        SHOAL_ASSIGN_OR_RETURN(n.min_length, Count(s, "minLength", path));
      }
      if (s.contains("maxLength")) {
        SHOAL_ASSIGN_OR_RETURN(n.max_length, Count(s, "maxLength", path));
      }
      if (n.max_length >= 0 && n.max_length < n.min_length) return Error(path, "maxLength is below minLength");
    } else if (t == "number") {
      n.kind = SchemaNode::Kind::kNumber;
    } else if (t == "integer") {
      n.kind = SchemaNode::Kind::kInteger;
    } else if (t == "boolean") {
      n.kind = SchemaNode::Kind::kLiterals;
      n.literals = {"true", "false"};
    } else if (t == "null") {
      return JsonGrammar::kNullNode;
    } else if (t == "array") {
      n.kind = SchemaNode::Kind::kArray;
      n.items = JsonGrammar::kAnyNode;
      if (s.contains("items")) {
        SHOAL_ASSIGN_OR_RETURN(n.items, Compile(s["items"], Join(path, "items"), depth + 1));
      }
      if (s.contains("minItems")) {
        SHOAL_ASSIGN_OR_RETURN(n.min_items, Count(s, "minItems", path));
      }
      if (s.contains("maxItems")) {
        SHOAL_ASSIGN_OR_RETURN(n.max_items, Count(s, "maxItems", path));
      }
      if (n.max_items >= 0 && n.max_items < n.min_items) return Error(path, "maxItems is below minItems");
    } else if (t == "object") {
      return CompileObject(s, path, depth);
    } else {
      return Error(Join(path, "type"), "unknown type '" + t.substr(0, 40) + "'");
    }
    return NewNode(std::move(n), path);
  }

  StatusOr<int32_t> CompileObject(const json& s, const std::string& path, int depth) {
    SchemaNode n;
    n.kind = SchemaNode::Kind::kObject;
    std::vector<std::string> required;
    if (s.contains("required")) {
      const json& r = s["required"];
      if (!r.is_array()) return Error(Join(path, "required"), "must be an array of strings");
      for (const json& k : r) {
        if (!k.is_string()) return Error(Join(path, "required"), "must be an array of strings");
        required.push_back(k.get<std::string>());
      }
    }
    bool has_properties = false;
    if (s.contains("properties")) {
      const json& props = s["properties"];
      if (!props.is_object()) return Error(Join(path, "properties"), "must be an object");
      has_properties = !props.empty();
      for (auto it = props.begin(); it != props.end(); ++it) {
        SchemaNode::Property p;
        p.key = Compact(json(it.key()));
        SHOAL_ASSIGN_OR_RETURN(p.node, Compile(it.value(), Join(path, "properties." + it.key()), depth + 1));
        p.required = std::find(required.begin(), required.end(), it.key()) != required.end();
        n.properties.push_back(std::move(p));
      }
    }
    n.additional = has_properties ? -1 : JsonGrammar::kAnyNode;
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (a.is_boolean()) {
        n.additional = a.get<bool>() ? JsonGrammar::kAnyNode : -1;
      } else {
        SHOAL_ASSIGN_OR_RETURN(n.additional, Compile(a, Join(path, "additionalProperties"), depth + 1));
      }
    }
    // A required key that `properties` does not declare: written after the declared ones, with the
    // schema other keys get.
    for (const std::string& k : required) {
      const std::string key = Compact(json(k));
      if (std::any_of(n.properties.begin(), n.properties.end(), [&](const auto& p) { return p.key == key; })) continue;
      if (n.additional < 0) return Error(Join(path, "required"), "'" + k + "' is required but no property may be named so");
      n.properties.push_back({key, n.additional, true});
    }
    return NewNode(std::move(n), path);
  }

  // Every union's leaves: the non-union nodes reachable through unions, once each. A union reached
  // again while being expanded ($ref cycles through anyOf) adds nothing.
  Status FlattenUnions() {
    std::vector<SchemaNode>& nodes = g_->nodes_;
    for (size_t u = 0; u < nodes.size(); ++u) {
      if (nodes[u].kind != SchemaNode::Kind::kUnion) continue;
      std::vector<int32_t> leaves, stack = {static_cast<int32_t>(u)};
      std::vector<uint8_t> seen(nodes.size(), 0);
      seen[u] = 1;
      while (!stack.empty()) {
        const int32_t n = stack.back();
        stack.pop_back();
        const std::vector<int32_t>& alts = nodes[static_cast<size_t>(n)].alternatives;
        for (auto it = alts.rbegin(); it != alts.rend(); ++it) {  // in the order written
          if (seen[static_cast<size_t>(*it)]) continue;
          seen[static_cast<size_t>(*it)] = 1;
          if (nodes[static_cast<size_t>(*it)].kind == SchemaNode::Kind::kUnion) {
            stack.push_back(*it);
          } else {
            leaves.push_back(*it);
          }
        }
      }
      if (leaves.empty()) return InvalidArgument(what_ + ": a schema refers only to itself and allows no value");
      if (leaves.size() > kMaxUnionLeaves) {
        return InvalidArgument(what_ + ": a union of " + std::to_string(leaves.size()) + " alternatives; at most " +
                               std::to_string(kMaxUnionLeaves));
      }
      nodes[u].leaves = std::move(leaves);
    }
    return Status::Ok();
  }

  // The fewest frames each node's value needs (a fixed point: recursive schemas converge, or stay
  // unbounded when a value can never end — e.g. a required property that is itself).
  Status ComputeMinDepth() {
    std::vector<SchemaNode>& nodes = g_->nodes_;
    constexpr int32_t kUnbounded = 1 << 20;
    for (SchemaNode& n : nodes) n.min_depth = kUnbounded;
    bool changed = true;
    while (changed) {
      changed = false;
      for (SchemaNode& n : nodes) {
        int32_t d = 1;
        switch (n.kind) {
          case SchemaNode::Kind::kObject:
            for (const auto& p : n.properties) {
              if (p.required) d = std::max(d, 1 + nodes[static_cast<size_t>(p.node)].min_depth);
            }
            break;
          case SchemaNode::Kind::kArray:
            if (n.min_items > 0) d = 1 + nodes[static_cast<size_t>(n.items)].min_depth;
            break;
          case SchemaNode::Kind::kUnion:
            d = kUnbounded;
            for (int32_t l : n.leaves) d = std::min(d, nodes[static_cast<size_t>(l)].min_depth);
            break;
          default:
            break;
        }
        d = std::min(d, kUnbounded);
        if (d < n.min_depth) {
          n.min_depth = d;
          changed = true;
        }
      }
    }
    const int32_t root = nodes[static_cast<size_t>(g_->root_)].min_depth;
    if (root > kMaxNesting) {
      return InvalidArgument(what_ + (root >= kUnbounded ? ": no value can ever complete it (a required property "
                                                           "that contains itself)"
                                                         : ": its values nest " + std::to_string(root) +
                                                               " levels deep; at most " + std::to_string(kMaxNesting)));
    }
    return Status::Ok();
  }

  const json& root_;
  std::string what_;
  std::unique_ptr<JsonGrammar> g_ = std::make_unique<JsonGrammar>();
  std::map<std::string, int32_t> refs_;
};

StatusOr<std::shared_ptr<const JsonGrammar>> CompileJsonSchema(std::string_view schema_text, const std::string& what) {
  if (schema_text.size() > kMaxSchemaBytes) {
    return InvalidArgument(what + ": the schema is " + std::to_string(schema_text.size()) + " bytes; at most " +
                           std::to_string(kMaxSchemaBytes));
  }
  json schema = json::parse(schema_text, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded()) return InvalidArgument(what + ": not valid JSON");
  try {
    return SchemaCompiler(schema, what).Run();
  } catch (const json::exception& e) {  // dump() of invalid UTF-8 inside the schema
    return InvalidArgument(what + ": " + e.what());
  }
}

}  // namespace shoal::grammar
