#include "coordinator/forced_tool_call.h"

#include "grammar/json_schema.h"

namespace shoal::coord {

namespace {

using json = nlohmann::ordered_json;

api::ApiError BadRequest(std::string message, std::string param) {
  return {400, std::move(message), "invalid_request_error", std::move(param), ""};
}

json ParametersOf(const json& tool) {
  const json& f = tool["function"];
  if (f.contains("parameters") && !f["parameters"].is_null()) return f["parameters"];
  return json{{"type", "object"}, {"properties", json::object()}};
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

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
    auto g = grammar::CompileJsonSchema(ParametersOf(tools[i]).dump(), at);
    if (!g.ok()) return BadRequest(g.status().message() + " (tool_choice needs a schema it can enforce)", at);
  }
  if (choice == api::ToolChoice::kNamed) {
    if (named_at < 0) {
      return BadRequest("tool_choice names the function '" + name.substr(0, 64) + "', which is not in tools", "tool_choice");
    }
    return ParametersOf(tools[static_cast<size_t>(named_at)]).dump();
  }
  // required: an array of {name, parameters} objects, one alternative per tool; definitions that
  // the tools' "$ref"s name move to the top, where those references resolve.
  json defs = json::object(), definitions = json::object();
  json alternatives = json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    json params = ParametersOf(tools[i]);
    const std::string at = "tools[" + std::to_string(i) + "].function.parameters";
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
    json name_schema = {{"type", "string"}, {"enum", json::array({tools[i]["function"]["name"]})}};
    alternatives.push_back(json{{"type", "object"},
                                {"properties", {{"name", std::move(name_schema)}, {"parameters", std::move(params)}}},
                                {"required", {"name", "parameters"}}});
  }
  json schema = {{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", std::move(alternatives)}}}};
  if (!parallel_tool_calls) schema["maxItems"] = 1;
  if (!defs.empty()) schema["$defs"] = std::move(defs);
  if (!definitions.empty()) schema["definitions"] = std::move(definitions);
  std::string text = schema.dump();
  auto g = grammar::CompileJsonSchema(text, "tools");
  if (!g.ok()) return BadRequest(g.status().message(), "tools");
  return text;
}

ForcedToolCallReader::ForcedToolCallReader(api::ToolChoice choice, std::string name) : choice_(choice) {
  if (choice_ == api::ToolChoice::kNamed) calls_.push_back({std::move(name), ""});
}

void ForcedToolCallReader::Feed(std::string_view text, std::vector<Delta>* out) {
  if (text.empty()) return;
  if (choice_ == api::ToolChoice::kNamed) {
    calls_[0].arguments.append(text);
    out->push_back(Delta{0, !named_started_, named_started_ ? "" : calls_[0].name, std::string(text)});
    named_started_ = true;
    return;
  }
  for (char c : text) Step(c, out);
}

void ForcedToolCallReader::AddArguments(char c, std::vector<Delta>* out) {
  calls_.back().arguments.push_back(c);
  const int index = static_cast<int>(calls_.size()) - 1;
  if (out->empty() || out->back().index != index) out->push_back(Delta{index, false, "", ""});
  out->back().arguments.push_back(c);
}

void ForcedToolCallReader::EndArguments() {
  state_ = State::kInCall;
  key_.clear();
  after_colon_ = false;
}

void ForcedToolCallReader::Step(char c, std::vector<Delta>* out) {
  switch (state_) {
    case State::kBeforeArray:
      if (c == '[') state_ = State::kInArray;
      return;
    case State::kInArray:
      if (c == '{') {
        state_ = State::kInCall;
        key_.clear();
        name_.clear();
        after_colon_ = false;
      } else if (c == ']') {
        state_ = State::kDone;
      }
      return;
    case State::kInCall:
      if (in_literal_) {
        literal_.push_back(c);
        if (literal_escape_) {
          literal_escape_ = false;
        } else if (c == '\\') {
          literal_escape_ = true;
        } else if (c == '"') {
          in_literal_ = false;
          const json v = json::parse(literal_, nullptr, /*allow_exceptions=*/false);
          const std::string s = v.is_string() ? v.get<std::string>() : std::string();
          if (!after_colon_) {
            key_ = s;
          } else if (key_ == "name") {
            name_ = s;
          }
        }
        return;
      }
      if (c == '"') {
        in_literal_ = true;
        literal_ = "\"";
      } else if (c == ':') {
        after_colon_ = true;
        if (key_ == "parameters") {
          state_ = State::kInArguments;
          arg_depth_ = 0;
          arg_string_ = arg_escape_ = arg_scalar_ = false;
        }
      } else if (c == ',') {
        after_colon_ = false;
        key_.clear();
      } else if (c == '}') {
        state_ = State::kInArray;
      }
      return;
    case State::kInArguments: {
      const bool started = arg_depth_ > 0 || arg_string_ || arg_scalar_;
      if (!started) {
        if (IsSpace(c)) return;  // whitespace before the value is not part of the arguments
        calls_.push_back({name_, ""});
        out->push_back(Delta{static_cast<int>(calls_.size()) - 1, true, name_, ""});
        AddArguments(c, out);
        if (c == '{' || c == '[') {
          arg_depth_ = 1;
        } else if (c == '"') {
          arg_string_ = true;
        } else {
          arg_scalar_ = true;
        }
        return;
      }
      if (arg_scalar_) {
        if (IsSpace(c) || c == ',' || c == '}') {
          EndArguments();
          Step(c, out);
        } else {
          AddArguments(c, out);
        }
        return;
      }
      AddArguments(c, out);
      if (arg_string_) {
        if (arg_escape_) {
          arg_escape_ = false;
        } else if (c == '\\') {
          arg_escape_ = true;
        } else if (c == '"') {
          arg_string_ = false;
          if (arg_depth_ == 0) EndArguments();
        }
        return;
      }
      if (c == '"') {
        arg_string_ = true;
      } else if (c == '{' || c == '[') {
        ++arg_depth_;
      } else if ((c == '}' || c == ']') && --arg_depth_ == 0) {
        EndArguments();
      }
      return;
    }
    case State::kDone:
      return;
  }
}

json ForcedDeltasJson(const std::vector<ForcedToolCallReader::Delta>& deltas, const std::function<std::string()>& new_id) {
  json a = json::array();
  for (const auto& d : deltas) {
    json c = json::object();
    c["index"] = d.index;
    if (d.first) {
      c["id"] = new_id();
      c["type"] = "function";
      c["function"] = {{"name", d.name}, {"arguments", d.arguments}};
    } else {
      c["function"] = {{"arguments", d.arguments}};
    }
    a.push_back(std::move(c));
  }
  return a;
}

std::string ForcedFinishReason(api::ToolChoice choice, const ForcedToolCallReader& reader, const std::string& engine_reason) {
  if (choice == api::ToolChoice::kRequired && engine_reason == "stop" && reader.complete() && !reader.calls().empty()) {
    return "tool_calls";
  }
  return engine_reason;
}

}  // namespace shoal::coord
