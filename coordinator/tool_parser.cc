#include "coordinator/tool_parser.h"

#include <nlohmann/json.hpp>

namespace shoal::coord {

namespace {

using json = nlohmann::json;

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kMistralOpen = "[TOOL_CALLS]", kMistralArgs = "[ARGS]";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kDsCallsBegin = "<｜tool▁calls▁begin｜>", kDsCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDsCallBegin = "<｜tool▁call▁begin｜>", kDsCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDsSep = "<｜tool▁sep｜>";

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string_view OpenMarker(ToolFormat f) {
  switch (f) {
    case ToolFormat::kHermes: return kHermesOpen;
    case ToolFormat::kMistral: return kMistralOpen;
    case ToolFormat::kDeepSeekV3: return kDsCallsBegin;
    case ToolFormat::kLlama3Json: return kPythonTag;
    case ToolFormat::kNone: break;
  }
  return {};
}

// {"name": str, "arguments"|"parameters": object} → a call; false otherwise. *quoted: the arguments
// were a JSON string holding the object.
bool CallFromJson(const json& j, ToolCall* out, bool* quoted = nullptr) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
  // A call names its arguments (an object that merely has a "name" is not a call, as in vLLM's parsers).
  const json* args = j.contains("arguments") ? &j["arguments"] : j.contains("parameters") ? &j["parameters"] : nullptr;
  if (args == nullptr) return false;
  json parsed;
  if (quoted != nullptr) *quoted = args->is_string();
  if (args->is_string()) {  // some models write the arguments as a JSON string
    parsed = json::parse(args->get<std::string>(), nullptr, false);
    if (parsed.is_discarded()) return false;
    args = &parsed;
  }
  if (!args->is_object()) return false;
  out->name = j["name"].get<std::string>();
  out->arguments = args->dump(-1, ' ', false, json::error_handler_t::replace);
  return true;
}

bool CallFromText(std::string_view text, ToolCall* out, bool* quoted = nullptr) {
  const json j = json::parse(Trim(text), nullptr, false);
  return !j.is_discarded() && CallFromJson(j, out, quoted);
}

// The length of the longest suffix of s that is a proper prefix of marker.
size_t PartialSuffix(std::string_view s, std::string_view marker) {
  for (size_t n = std::min(s.size(), marker.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

}  // namespace

StatusOr<ToolFormat> ParseToolFormat(std::string_view name, std::string_view chat_template) {
  if (name == "none") return ToolFormat::kNone;
  if (name == "hermes") return ToolFormat::kHermes;
  if (name == "mistral") return ToolFormat::kMistral;
  if (name == "llama3_json") return ToolFormat::kLlama3Json;
  if (name == "deepseek_v3") return ToolFormat::kDeepSeekV3;
  if (name != "auto" && !name.empty()) {
    return InvalidArgument("tool parser '" + std::string(name) +
                           "': expected auto, none, hermes, mistral, llama3_json or deepseek_v3");
  }
  // auto: what the chat template teaches the model to write.
  if (chat_template.find(kHermesOpen) != std::string_view::npos) return ToolFormat::kHermes;
  if (chat_template.find(kMistralOpen) != std::string_view::npos) return ToolFormat::kMistral;
  if (chat_template.find("tool▁calls▁begin") != std::string_view::npos) return ToolFormat::kDeepSeekV3;
  if (chat_template.find("ipython") != std::string_view::npos || chat_template.find(kPythonTag) != std::string_view::npos) {
    return ToolFormat::kLlama3Json;
  }
  return ToolFormat::kNone;
}

ToolCallParser::ToolCallParser(ToolFormat format) : format_(format) {}

void ToolCallParser::ResetScan() {
  scanner_ = CallScanner();
  scanned_ = 0;
  seen_.clear();
}

void ToolCallParser::Scan(size_t end) {
  if (end <= scanned_) return;
  std::vector<CallScanner::Event> events;
  scanner_.Feed(std::string_view(held_).substr(scanned_, end - scanned_), &events);
  scanned_ = end;
  for (CallScanner::Event& e : events) {
    if (seen_.size() <= static_cast<size_t>(e.call)) seen_.resize(static_cast<size_t>(e.call) + 1);
    Seen& s = seen_[static_cast<size_t>(e.call)];
    if (e.kind == CallScanner::Event::Kind::kEnd) {
      s.ended = true;
      s.raw = std::move(e.text);
      continue;
    }
    if (e.first) {
      s.streamed = true;
      s.index = next_index_++;
      saw_calls_ = true;
    }
    if (deltas_ == nullptr) continue;
    if (!e.first && !deltas_->empty() && deltas_->back().index == s.index) {
      deltas_->back().arguments += e.text;
    } else {
      deltas_->push_back(ToolCallDelta{s.index, e.first, std::move(e.name), std::move(e.text)});
    }
  }
}

const std::string* ToolCallParser::RawArguments(int object) const {
  if (object < 0 || static_cast<size_t>(object) >= seen_.size()) return nullptr;
  const Seen& s = seen_[static_cast<size_t>(object)];
  if (!s.ended || s.raw.empty() || (s.raw.front() != '{' && s.raw.front() != '[')) return nullptr;
  return &s.raw;
}

void ToolCallParser::EmitCall(ToolCall c, int object, std::vector<ToolCall>* calls) {
  saw_calls_ = true;
  const Seen* s = object >= 0 && static_cast<size_t>(object) < seen_.size() ? &seen_[static_cast<size_t>(object)] : nullptr;
  if (s != nullptr && s->streamed) {
    if (deltas_ != nullptr) return;  // its pieces went out already
    c.index = s->index;
  } else {
    c.index = next_index_++;
  }
  calls->push_back(std::move(c));
}

void ToolCallParser::Feed(std::string_view text, std::string* content, std::vector<ToolCall>* calls,
                          std::vector<ToolCallDelta>* deltas) {
  if (finished_) return;
  deltas_ = deltas;
  if (format_ == ToolFormat::kNone) {
    content->append(text);
    return;
  }
  held_.append(text);
  if (!in_calls_) {
    if (format_ == ToolFormat::kLlama3Json && at_start_) {
      // Llama's calls are the whole output: a JSON object from the first non-space character.
      const std::string_view t = Trim(held_);
      if (t.empty()) return;
      if (t.front() == '{' || t.rfind(kPythonTag, 0) == 0) {
        in_calls_ = true;
        held_.erase(0, held_.find_first_not_of(" \t\r\n"));  // leading space only: the rest is the call's
        if (held_.rfind(kPythonTag, 0) == 0) held_.erase(0, kPythonTag.size());
        ResetScan();
      } else if (kPythonTag.substr(0, t.size()) == t) {
        return;  // maybe the tag
      }
      at_start_ = false;
    }
    if (!in_calls_) {
      const std::string_view marker = OpenMarker(format_);
      const size_t at = format_ == ToolFormat::kLlama3Json ? std::string::npos : held_.find(marker);
      if (at == std::string::npos) {
        const size_t keep = format_ == ToolFormat::kLlama3Json ? 0 : PartialSuffix(held_, marker);
        content->append(held_, 0, held_.size() - keep);
        held_.erase(0, held_.size() - keep);
        return;
      }
      content->append(held_, 0, at);
      held_.erase(0, at + marker.size());
      in_calls_ = true;
      ResetScan();
    }
  }
  TakeCalls(/*final=*/false, content, calls);
  deltas_ = nullptr;
}

void ToolCallParser::Finish(std::string* content, std::vector<ToolCall>* calls, std::vector<ToolCallDelta>* deltas) {
  if (format_ == ToolFormat::kNone || finished_) return;
  finished_ = true;
  if (!in_calls_) {
    content->append(held_);
    held_.clear();
    return;
  }
  deltas_ = deltas;
  TakeCalls(/*final=*/true, content, calls);
  deltas_ = nullptr;
}

void ToolCallParser::TakeCalls(bool final, std::string* content, std::vector<ToolCall>* calls) {
  switch (format_) {
    case ToolFormat::kHermes:
      while (true) {
        if (between_calls_) {
          // Text after a call is held until the next call opens (then it is content, unless it is
          // only whitespace) or the output ends.
          const size_t at = held_.find(kHermesOpen);
          if (at == std::string::npos) break;
          const std::string_view gap = std::string_view(held_).substr(0, at);
          if (!Trim(gap).empty()) content->append(gap);
          held_.erase(0, at + kHermesOpen.size());
          between_calls_ = false;
          ResetScan();
        }
        const size_t close = held_.find(kHermesClose);
        if (close == std::string::npos) {
          Scan(held_.size() - PartialSuffix(held_, kHermesClose));  // a cut close tag is not the call's
          break;
        }
        Scan(close);
        ToolCall c;
        bool quoted = false;
        if (CallFromText(std::string_view(held_).substr(0, close), &c, &quoted)) {
          if (const std::string* raw = RawArguments(0); raw != nullptr && !quoted) c.arguments = *raw;
          EmitCall(std::move(c), 0, calls);
        } else {
          content->append(kHermesOpen).append(held_, 0, close + kHermesClose.size());
        }
        held_.erase(0, close + kHermesClose.size());
        between_calls_ = true;
        ResetScan();
      }
      if (final) {
        ToolCall c;
        bool quoted = false;
        if (!between_calls_) Scan(held_.size());
        if (between_calls_) {
          if (!Trim(held_).empty()) content->append(held_);
        } else if (CallFromText(held_, &c, &quoted)) {  // an unterminated last call
          if (const std::string* raw = RawArguments(0); raw != nullptr && !quoted) c.arguments = *raw;
          EmitCall(std::move(c), 0, calls);
        } else {
          content->append(kHermesOpen).append(held_);
        }
        held_.clear();
      }
      return;
    case ToolFormat::kDeepSeekV3:
      while (true) {
        const size_t end = held_.find(kDsCallEnd);
        if (end == std::string::npos) break;
        std::string_view call = Trim(std::string_view(held_).substr(0, end));
        if (call.rfind(kDsCallBegin, 0) == 0) call.remove_prefix(kDsCallBegin.size());
        ToolCall c;
        const size_t sep = call.find(kDsSep);
        bool ok = false;
        if (sep != std::string_view::npos) {
          std::string_view rest = call.substr(sep + kDsSep.size());
          const size_t nl = rest.find('\n');
          c.name = std::string(Trim(rest.substr(0, nl)));
          std::string_view args = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
          args = Trim(args);
          if (args.rfind("```json", 0) == 0) args.remove_prefix(7);
          if (args.size() >= 3 && args.substr(args.size() - 3) == "```") args.remove_suffix(3);
          const json j = json::parse(Trim(args), nullptr, false);
          if (!c.name.empty() && !j.is_discarded() && j.is_object()) {
            c.arguments = std::string(Trim(args));  // as written
            ok = true;
          }
        }
        if (ok) {
          EmitCall(std::move(c), -1, calls);
        } else {
          content->append(held_, 0, end + kDsCallEnd.size());
        }
        held_.erase(0, end + kDsCallEnd.size());
      }
      if (final) {
        std::string_view rest = Trim(held_);
        if (rest.rfind(kDsCallsEnd, 0) == 0) rest.remove_prefix(kDsCallsEnd.size());
        held_ = std::string(Trim(rest));
      }
      break;
    case ToolFormat::kMistral:
    case ToolFormat::kLlama3Json: {
      Scan(held_.size());  // arguments stream as they come; whether they were calls is decided at the end
      if (!final) break;
      const std::string_view t = Trim(held_);
      std::vector<ToolCall> found;
      std::vector<bool> quoted;  // per found call: its arguments were a JSON string
      bool ok = false;
      if (format_ == ToolFormat::kMistral && t.find(kMistralArgs) != std::string_view::npos) {
        // name[ARGS]{…}[TOOL_CALLS]name[ARGS]{…}
        ok = true;
        std::string_view rest = t;
        while (ok && !rest.empty()) {
          const size_t args = rest.find(kMistralArgs);
          if (args == std::string_view::npos) {
            ok = false;
            break;
          }
          ToolCall c;
          c.name = std::string(Trim(rest.substr(0, args)));
          rest.remove_prefix(args + kMistralArgs.size());
          const size_t next = rest.find(kMistralOpen);
          const json j = json::parse(Trim(rest.substr(0, next)), nullptr, false);
          ok = !c.name.empty() && !j.is_discarded() && j.is_object();
          if (ok) c.arguments = std::string(Trim(rest.substr(0, next))), found.push_back(c), quoted.push_back(true);
          rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + kMistralOpen.size());
        }
      } else {
        const json j = json::parse(t, nullptr, false);
        if (!j.is_discarded()) {
          ok = true;
          for (const json& item : j.is_array() ? j : json::array({j})) {
            ToolCall c;
            bool q = false;
            ok = ok && CallFromJson(item, &c, &q);
            if (ok) found.push_back(c), quoted.push_back(q);
          }
          ok = ok && !found.empty();
        } else if (format_ == ToolFormat::kLlama3Json) {
          // Several calls separated by ";".
          ok = true;
          size_t from = 0;
          while (ok && from <= t.size()) {
            const size_t semi = t.find(';', from);
            ToolCall c;
            bool q = false;
            ok = CallFromText(t.substr(from, semi == std::string_view::npos ? std::string_view::npos : semi - from), &c, &q);
            if (ok) found.push_back(c), quoted.push_back(q);
            if (semi == std::string_view::npos) break;
            from = semi + 1;
          }
        }
      }
      if (ok) {
        // The k-th call is the scanner's k-th object (name[ARGS]{…}: objects without names, never
        // streamed); its arguments as written where they were an object.
        for (size_t k = 0; k < found.size(); ++k) {
          ToolCall c = std::move(found[k]);
          const int object = static_cast<int>(k);
          if (const std::string* raw = RawArguments(object); raw != nullptr && !quoted[k]) c.arguments = *raw;
          EmitCall(std::move(c), object, calls);
        }
        held_.clear();
      } else {
        content->append(format_ == ToolFormat::kMistral ? std::string(kMistralOpen) : std::string()).append(held_);
        held_.clear();
      }
      return;
    }
    case ToolFormat::kNone: break;
  }
  if (final && !held_.empty()) {
    // Text after DeepSeek's calls (whitespace alone is dropped).
    if (!Trim(held_).empty()) content->append(held_);
    held_.clear();
  }
}

}  // namespace shoal::coord
