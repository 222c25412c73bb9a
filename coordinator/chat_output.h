// A chat's generated text through the parsers a response may need (internal to coordinator/): the
// reasoning split (reasoning.h) first, then tool calls out of what remains (tool_parser.h). Streamed
// and whole responses both feed it, so they agree piece for piece.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/reasoning.h"
#include "coordinator/tool_parser.h"

namespace shoal::coord {

class ChatOutputParser {
 public:
  // tools: kNone when the request has no tools (or tool_choice "none").
  ChatOutputParser(ReasoningFormat reasoning, ToolFormat tools)
      : reasoning_(reasoning),
        tools_(tools),
        reasoning_on_(reasoning != ReasoningFormat::kNone),
        tools_on_(tools != ToolFormat::kNone) {}
  bool active() const { return reasoning_on_ || tools_on_; }

  struct Piece {
    std::string reasoning, content;
    std::vector<ToolCall> calls;        // calls complete in this piece (whole)
    std::vector<ToolCallDelta> deltas;  // stream: pieces of calls whose arguments stream
  };
  // What `text` settles; `last` flushes everything held. With `stream`, JSON calls' arguments come
  // as deltas as they arrive (and not again whole).
  Piece Feed(std::string_view text, bool last, bool stream = false);
  // Whether any call was parsed: the response's finish_reason is then "tool_calls", as vLLM's.
  bool saw_calls() const { return tools_.saw_calls(); }

 private:
  ReasoningSplitter reasoning_;
  ToolCallParser tools_;
  bool reasoning_on_, tools_on_;
};

// OpenAI's tool_calls array: {id, type: "function", function: {name, arguments}}, with each call's
// "index" for stream deltas. new_id() gives each call's id.
nlohmann::ordered_json ToolCallsJson(const std::vector<ToolCall>& calls, bool with_index,
                                     const std::function<std::string()>& new_id);
// A stream's tool_calls delta array: a call's first delta {index, id, type, function: {name,
// arguments}}, later ones {index, function: {arguments}} (vLLM's shape).
nlohmann::ordered_json ToolCallDeltasJson(const std::vector<ToolCallDelta>& deltas,
                                          const std::function<std::string()>& new_id);

}  // namespace shoal::coord
