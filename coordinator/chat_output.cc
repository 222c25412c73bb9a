#include "coordinator/chat_output.h"

namespace shoal::coord {

ChatOutputParser::Piece ChatOutputParser::Feed(std::string_view text, bool last, bool stream) {
  Piece p;
  std::string content;
  reasoning_.Feed(text, &p.reasoning, &content);
  if (last) reasoning_.Finish(&p.reasoning, &content);
  std::vector<ToolCallDelta>* deltas = stream ? &p.deltas : nullptr;
  tools_.Feed(content, &p.content, &p.calls, deltas);
  if (last) tools_.Finish(&p.content, &p.calls, deltas);
  return p;
}

nlohmann::ordered_json ToolCallDeltasJson(const std::vector<ToolCallDelta>& deltas,
                                          const std::function<std::string()>& new_id) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const ToolCallDelta& d : deltas) {
    nlohmann::ordered_json c = nlohmann::ordered_json::object();
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

nlohmann::ordered_json ToolCallsJson(const std::vector<ToolCall>& calls, bool with_index,
                                     const std::function<std::string()>& new_id) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    nlohmann::ordered_json c = nlohmann::ordered_json::object();
    if (with_index) c["index"] = calls[i].index;
    c["id"] = new_id();
    c["type"] = "function";
    c["function"] = {{"name", calls[i].name}, {"arguments", calls[i].arguments}};
    a.push_back(std::move(c));
  }
  return a;
}

}  // namespace shoal::coord
