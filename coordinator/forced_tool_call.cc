#include "coordinator/forced_tool_call.h"

#include <functional>

#include "grammar/json_schema.h"

namespace shoal::coord {

namespace {

using json = nlohmann::ordered_json;

api::ApiError BadRequest(std::string message, std::string param) {
  return {400, std::move(message), "invalid_request_error", std::move(param), ""};
}

// Calls every schema object inside `s` (itself included): the places keywords sit, not the values of
// const, enum, default or examples.
void ForEachSchema(json& s, const std::function<void(json&)>& fn) {
  if (!s.is_object()) return;
  fn(s);
  for (const char* key : {"properties", "$defs", "definitions"}) {
    if (s.contains(key) && s[key].is_object()) {
      for (auto it = s[key].begin(); it != s[key].end(); ++it) ForEachSchema(it.value(), fn);
    }
  }
  for (const char* key : {"items", "additionalProperties"}) {
    if (s.contains(key)) ForEachSchema(s[key], fn);
  }
  for (const char* key : {"anyOf", "oneOf", "allOf"}) {
    if (s.contains(key) && s[key].is_array()) {
      for (json& alt : s[key]) ForEachSchema(alt, fn);
    }
  }
}

// A tool's parameters schema as the worker gets it: annotations (descriptions, titles, examples)
// dropped — they do not constrain, and a long tool list's text would otherwise crowd the schema size
// limit; none, {} or true mean an object with no properties, as vLLM takes them.
json ParametersOf(const json& tool) {
  const json& f = tool["function"];
  json p = f.contains("parameters") ? f["parameters"] : json();
  if (p.is_null() || p == json(true) || (p.is_object() && p.empty())) {
    return json{{"type", "object"}, {"properties", json::object()}};
  }
  ForEachSchema(p, [](json& s) {
    for (const char* k : {"title", "description", "examples", "default", "$comment", "$schema", "$id", "deprecated",
                          "readOnly", "writeOnly"}) {
      s.erase(k);
    }
  });
  return p;
}

}  // namespace

std::variant<std::string, api::ApiError> ForcedToolSchema(const json& tools, api::ToolChoice choice,
                                                          const std::string& name, bool parallel_tool_calls) {
  // Each tool's own schema first, so that an error names the tool.
  int named_at = -1;
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string fn = tools[i]["function"]["name"];
    if (choice == api::ToolChoice::kNamed && fn != name) continue;
    if (choice == api::ToolChoice::kNamed && named_at < 0) named_at = static_cast<int>(i);
    const std::string at = "tools[" + std::to_string(i) + "].function.parameters";
    auto g = grammar::CompileJsonSchema(ParametersOf(tools[i]).dump(-1, ' ', false, json::error_handler_t::replace), at);
    if (!g.ok()) return BadRequest(g.status().message() + " (tool_choice needs a schema it can enforce)", at);
  }
  if (choice == api::ToolChoice::kNamed) {
    if (named_at < 0) {
      return BadRequest("tool_choice names the function '" + name.substr(0, 64) + "', which is not in tools", "tool_choice");
    }
    return ParametersOf(tools[static_cast<size_t>(named_at)]).dump(-1, ' ', false, json::error_handler_t::replace);
  }
  // required: an array of {name, parameters} objects, one alternative per tool; definitions that
  // the tools' "$ref"s name move to the top, where those references resolve.
  json defs = json::object(), definitions = json::object();
  json alternatives = json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    json params = ParametersOf(tools[i]);
    const std::string at = "tools[" + std::to_string(i) + "].function.parameters";
    // "#" inside a tool's parameters means those parameters, not the array they are wrapped in: they
    // move to a definition of their own, and their "#" references point at it.
    bool self_ref = false;
    ForEachSchema(params, [&](json& s) { self_ref = self_ref || (s.contains("$ref") && s["$ref"] == "#"); });
    const std::string own = "shoal_tool_" + std::to_string(i);
    if (self_ref) {
      ForEachSchema(params, [&](json& s) {
        if (s.contains("$ref") && s["$ref"] == "#") s["$ref"] = "#/$defs/" + own;
      });
    }
    for (auto [section, into] : {std::pair<const char*, json*>{"$defs", &defs}, {"definitions", &definitions}}) {
      if (!params.is_object() || !params.contains(section) || !params[section].is_object()) continue;
      for (auto it = params[section].begin(); it != params[section].end(); ++it) {
        if (into->contains(it.key()) && (*into)[it.key()] != it.value()) {
          return BadRequest("the definition '" + it.key() + "' differs between tools: tool_choice \"required\" needs one",
                            at + "." + section);
        }
        (*into)[it.key()] = it.value();
      }
      params.erase(section);
    }
    if (self_ref) {
      defs[own] = std::move(params);
      params = json{{"$ref", "#/$defs/" + own}};
    }
    json name_schema = {{"type", "string"}, {"enum", json::array({tools[i]["function"]["name"]})}};
    alternatives.push_back(json{{"type", "object"},
                                {"properties", {{"name", std::move(name_schema)}, {"parameters", std::move(params)}}},
                                {"required", {"name", "parameters"}}});
  }
  json schema = {{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", std::move(alternatives)}}}};
  if (!parallel_tool_calls) schema["maxItems"] = 1;
  if (!defs.empty()) schema["$defs"] = std::move(defs);
  if (!definitions.empty()) schema["definitions"] = std::move(definitions);
  std::string text = schema.dump(-1, ' ', false, json::error_handler_t::replace);
  auto g = grammar::CompileJsonSchema(text, "tools");
  if (!g.ok()) return BadRequest(g.status().message(), "tools");
  return text;
}

ForcedToolCallReader::ForcedToolCallReader(api::ToolChoice choice, std::string name) : choice_(choice) {
  if (choice_ == api::ToolChoice::kNamed) calls_.push_back({std::move(name), "", 0});
}

bool ForcedToolCallReader::complete() const {
  if (choice_ == api::ToolChoice::kNamed) return json::accept(calls_[0].arguments);
  return scanner_.calls() > 0 && scanner_.at_top() && ended_ == scanner_.calls();
}

void ForcedToolCallReader::Feed(std::string_view text, std::vector<Delta>* out) {
  if (text.empty()) return;
  if (choice_ == api::ToolChoice::kNamed) {
    calls_[0].arguments.append(text);
    out->push_back(Delta{0, !named_started_, named_started_ ? "" : calls_[0].name, std::string(text)});
    named_started_ = true;
    return;
  }
  std::vector<CallScanner::Event> events;
  scanner_.Feed(text, &events);
  for (CallScanner::Event& e : events) {
    if (e.kind == CallScanner::Event::Kind::kEnd) {
      ++ended_;
      if (e.streamed) continue;
      // Arguments that did not stream (a string or a number): the call whole, now.
      calls_.push_back({e.name, e.text, e.call});
      out->push_back(Delta{e.call, true, std::move(e.name), std::move(e.text)});
      continue;
    }
    if (e.first) calls_.push_back({e.name, "", e.call});
    calls_.back().arguments += e.text;
    if (!e.first && !out->empty() && out->back().index == e.call) {
      out->back().arguments += e.text;
    } else {
      out->push_back(Delta{e.call, e.first, std::move(e.name), std::move(e.text)});
    }
  }
}

std::string ForcedFinishReason(api::ToolChoice choice, const ForcedToolCallReader& reader, const std::string& engine_reason) {
  if (choice == api::ToolChoice::kRequired && engine_reason == "stop" && reader.complete() && !reader.calls().empty()) {
    return "tool_calls";
  }
  return engine_reason;
}

}  // namespace shoal::coord
