// Tool calls parsed out of a chat's generated text, as vLLM's --tool-call-parser does, in the formats
// of the model families shoal serves (each what the family's own chat template teaches the model):
//
//   hermes       Qwen2.5 / Qwen3 / Hermes: <tool_call>{"name": …, "arguments": {…}}</tool_call>, repeated
//   mistral      Mistral / Mixtral: [TOOL_CALLS][{"name": …, "arguments": {…}}, …] (or name[ARGS]{…})
//   llama3_json  Llama 3 / 4: the output is {"name": …, "parameters": {…}} (after an optional
//                <|python_tag|>), several separated by ";"
//   deepseek_v3  DeepSeek-V3: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//                ```json {…} ```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>
//
// Text before the first call is content (hermes: text between calls too, whitespace alone dropped); a
// call whose JSON does not parse, or names no arguments, stays content (raw), so nothing the model
// wrote is lost. Streamed and whole responses take the same path: text is content
// until a call's opening marker (a chunk boundary inside the marker is held back), then held until a
// call is complete, which is emitted whole (one tool_calls delta with its name and all its arguments).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace shoal::coord {

enum class ToolFormat { kNone, kHermes, kMistral, kLlama3Json, kDeepSeekV3 };

// server.tool_parser: "none", "auto" (from the chat template), or a format name as above.
StatusOr<ToolFormat> ParseToolFormat(std::string_view name, std::string_view chat_template);

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object, compact (what OpenAI's function.arguments carries)
};

class ToolCallParser {
 public:
  explicit ToolCallParser(ToolFormat format);
  // Appends settled content to *content and completed calls to *calls.
  void Feed(std::string_view text, std::string* content, std::vector<ToolCall>* calls);
  // The end of the output: the held text becomes calls where it parses, content where not. Once:
  // later calls (and Feeds) add nothing.
  void Finish(std::string* content, std::vector<ToolCall>* calls);
  bool saw_calls() const { return saw_calls_; }

 private:
  // Takes the complete calls at the front of buffer_ (all of it when final).
  void TakeCalls(bool final, std::string* content, std::vector<ToolCall>* calls);

  ToolFormat format_;
  bool in_calls_ = false;  // past the opening marker
  bool at_start_ = true;   // llama3_json: nothing but whitespace seen yet
  bool saw_calls_ = false;
  bool between_calls_ = false;
  bool finished_ = false;  // hermes: after a call's closing tag, before the next opening one
  std::string held_;       // before the marker: a possible partial marker; after: the calls' text
};

}  // namespace shoal::coord
