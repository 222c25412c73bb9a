// Forced tool calls — `tool_choice: "required"` or a named function, as vLLM serves them: the request's
// output is held by the worker to a JSON schema (grammar/, Submit.json_schema), and the calls are read
// back out of that text, whole or as stream deltas. (tool_choice "auto" parses a model's own call
// format instead: tool_parser.h.)
//
//   named     the output is the function's arguments: its `parameters` schema ({"type": "object",
//             "properties": {}} when it has none); the whole text is one call's arguments.
//   required  the output is [{"name": <a tool's name>, "parameters": <its arguments>}, …], at least one
//             (exactly one with parallel_tool_calls false); each call's arguments are the text of its
//             "parameters" value, as written. Tools' $defs are gathered at the top of the schema.
//
// Arguments are the model's text exactly (valid JSON under the schema), streamed and whole alike; vLLM
// re-serialises a required call's arguments in its whole response, shoal does not, so a stream's
// concatenated arguments always equal the whole response's.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/call_scanner.h"
#include "coordinator/openai_api.h"
#include "coordinator/tool_parser.h"

namespace shoal::coord {

// The schema the worker constrains the output to. `tools` is the request's validated tools array;
// `name` the forced function (named). A 400 naming the field for a schema shoal cannot enforce
// (grammar/json_schema.h lists what it can).
std::variant<std::string, api::ApiError> ForcedToolSchema(const nlohmann::ordered_json& tools, api::ToolChoice choice,
                                                          const std::string& name, bool parallel_tool_calls);

class ForcedToolCallReader {
 public:
  ForcedToolCallReader(api::ToolChoice choice, std::string name);

  using Delta = ToolCallDelta;
  // The deltas the next piece of output settles (several calls may advance in one piece).
  void Feed(std::string_view text, std::vector<Delta>* out);
  // The calls read so far (named: the one call with all the text so far).
  const std::vector<ToolCall>& calls() const { return calls_; }
  // Every call is whole: named, once its arguments are a whole JSON value; required, once the array
  // has closed.
  bool complete() const;

 private:
  api::ToolChoice choice_;
  std::vector<ToolCall> calls_;
  bool named_started_ = false;
  CallScanner scanner_;  // required: the array of {"name", "parameters"} objects
  int ended_ = 0;        // call objects closed
};

// The finish_reason of a forced choice (OpenAI's and vLLM's rule): "tool_calls" when "required" ended
// by stopping with calls written; otherwise the engine's reason ("stop", "length").
std::string ForcedFinishReason(api::ToolChoice choice, const ForcedToolCallReader& reader, const std::string& engine_reason);

}  // namespace shoal::coord
