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
// wrote is lost. Streamed and whole responses take the same path: text is content until a call's
// opening marker (a chunk boundary inside the marker is held back). A call's arguments are its
// arguments object's text as written (arguments given as a JSON string: that string's JSON, compact).
// Streaming (Feed with deltas), a JSON call's arguments go out in pieces as they arrive, once its name
// is known (call_scanner.h), as vLLM streams them; the others (DeepSeek's, Mistral's name[ARGS]{…},
// string arguments) go out whole when complete. A streamed call that turns out not to parse cannot be
// taken back: its pieces went out, and its text is content too.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/call_scanner.h"

namespace shoal::coord {

enum class ToolFormat { kNone, kHermes, kMistral, kLlama3Json, kDeepSeekV3 };

// server.tool_parser: "none", "auto" (from the chat template), or a format name as above.
StatusOr<ToolFormat> ParseToolFormat(std::string_view name, std::string_view chat_template);

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object (what OpenAI's function.arguments carries)
  int index = 0;          // its place among the output's calls (the stream's tool_calls index)
};

// A piece of a call being streamed: its first carries the name, each the arguments text it adds.
struct ToolCallDelta {
  int index = 0;
  bool first = false;
  std::string name;
  std::string arguments;
};

class ToolCallParser {
 public:
  explicit ToolCallParser(ToolFormat format);
  // Appends settled content to *content and completed calls to *calls. With `deltas`, calls whose
  // arguments stream go there in pieces instead (and not to *calls once complete).
  void Feed(std::string_view text, std::string* content, std::vector<ToolCall>* calls,
            std::vector<ToolCallDelta>* deltas = nullptr);
  // The end of the output: the held text becomes calls where it parses, content where not. Once:
  // later calls (and Feeds) add nothing.
  void Finish(std::string* content, std::vector<ToolCall>* calls, std::vector<ToolCallDelta>* deltas = nullptr);
  bool saw_calls() const { return saw_calls_; }

 private:
  // Takes the complete calls at the front of buffer_ (all of it when final).
  void TakeCalls(bool final, std::string* content, std::vector<ToolCall>* calls);
  // Feeds held_[scanned_, end) to the scanner: streamed pieces to deltas_.
  void Scan(size_t end);
  void ResetScan();
  // A complete call: to *calls, unless its arguments streamed out already (with deltas_). `object` is
  // its scanner object's number (-1: none).
  void EmitCall(ToolCall c, int object, std::vector<ToolCall>* calls);
  // The arguments of the scanner's object `object` as written, when they were an object or array.
  const std::string* RawArguments(int object) const;

  ToolFormat format_;
  bool in_calls_ = false;  // past the opening marker
  bool at_start_ = true;   // llama3_json: nothing but whitespace seen yet
  bool saw_calls_ = false;
  bool between_calls_ = false;
  bool finished_ = false;  // hermes: after a call's closing tag, before the next opening one
  std::string held_;       // before the marker: a possible partial marker; after: the calls' text
  // Streaming the calls' arguments (JSON formats): the scanner over held_ up to scanned_, and what it
  // saw of each object since the last reset.
  CallScanner scanner_;
  size_t scanned_ = 0;
  struct Seen {
    int index = -1;  // the call index its first streamed piece took
    bool streamed = false, ended = false;
    std::string raw;  // its arguments value as written (once ended)
  };
  std::vector<Seen> seen_;
  int next_index_ = 0;
  std::vector<ToolCallDelta>* deltas_ = nullptr;  // during Feed / Finish
};

}  // namespace shoal::coord
