#include "coordinator/openai_stream.h"

#include <charconv>

#include "common/utf8.h"

namespace shoal::api {

namespace {

void AppendInt(std::string* out, int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr);
}

void AppendIds(std::string* out, const char* key, const std::vector<int32_t>& ids) {
  out->append(",\"").append(key).append("\":[");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out->push_back(',');
    AppendInt(out, ids[i]);
  }
  out->push_back(']');
}

void AppendFinishReason(std::string* out, std::string_view reason, std::string_view logprobs_json = "") {
  out->append(",\"logprobs\":").append(logprobs_json.empty() ? std::string_view("null") : logprobs_json);
  out->append(",\"finish_reason\":");
  if (reason.empty()) {
    out->append("null");
  } else {
    AppendJsonString(out, reason);
  }
}

}  // namespace

void AppendJsonString(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t run = 0;  // start of the bytes copied as they are
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 1;
    if (c >= 0x80) {
      n = Utf8SequenceLength(s, i);
      if (n > 0) {
        i += n;
        continue;
      }
    }
    out->append(s.data() + run, i - run);
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          out->append(esc, sizeof esc);
        } else {
          out->append("\xEF\xBF\xBD");  // an invalid byte: U+FFFD
        }
    }
    run = ++i;
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
}

StreamWriter::StreamWriter(const StreamContext& ctx) : chat_(ctx.endpoint == StreamContext::Endpoint::kChat) {
  head_ = "data: {\"id\":";
  AppendJsonString(&head_, ctx.id);
  head_ += chat_ ? ",\"object\":\"chat.completion.chunk\",\"created\":" : ",\"object\":\"text_completion\",\"created\":";
  AppendInt(&head_, ctx.created);
  head_ += ",\"model\":";
  AppendJsonString(&head_, ctx.model);
  if (ctx.include_usage) usage_null_ = ",\"usage\":null";
}

void StreamWriter::AppendChoiceHead(std::string* out) const {
  out->append(head_).append(",\"choices\":[{\"index\":");
  AppendInt(out, choice_);
  out->push_back(',');
}

void StreamWriter::Role(std::string* out, const std::vector<int32_t>* prompt_ids) const {
  AppendChoiceHead(out);
  out->append("\"delta\":{\"role\":\"assistant\",\"content\":\"\"}");
  AppendFinishReason(out, "");
  out->append("}]");
  if (prompt_ids != nullptr) AppendIds(out, "prompt_token_ids", *prompt_ids);
  out->append(usage_null_).append("}\n\n");
}

void StreamWriter::Content(std::string* out, std::string_view text, std::string_view finish_reason,
                           const std::vector<int32_t>* token_ids, const std::vector<int32_t>* prompt_ids,
                           std::string_view logprobs_json) const {
  AppendChoiceHead(out);
  if (chat_) {
    out->append("\"delta\":{\"content\":");
    AppendJsonString(out, text);
    out->push_back('}');
  } else {
    out->append("\"text\":");
    AppendJsonString(out, text);
  }
  AppendFinishReason(out, finish_reason, logprobs_json);
  if (prompt_ids != nullptr && !chat_) AppendIds(out, "prompt_token_ids", *prompt_ids);
  if (token_ids != nullptr) AppendIds(out, "token_ids", *token_ids);
  out->append("}]").append(usage_null_).append("}\n\n");
}

void StreamWriter::Reasoning(std::string* out, std::string_view text, const std::vector<int32_t>* token_ids,
                             std::string_view logprobs_json) const {
  AppendChoiceHead(out);
  out->append("\"delta\":{\"reasoning_content\":");
  AppendJsonString(out, text);
  out->push_back('}');
  AppendFinishReason(out, "", logprobs_json);
  if (token_ids != nullptr) AppendIds(out, "token_ids", *token_ids);
  out->append("}]").append(usage_null_).append("}\n\n");
}

void StreamWriter::ToolCalls(std::string* out, std::string_view calls_json) const {
  AppendChoiceHead(out);
  out->append("\"delta\":{\"tool_calls\":").append(calls_json);
  out->push_back('}');
  AppendFinishReason(out, "");
  out->append("}]").append(usage_null_).append("}\n\n");
}

void StreamWriter::Finish(std::string* out, std::string_view finish_reason) const {
  if (!chat_) {
    Content(out, "", finish_reason);
    return;
  }
  AppendChoiceHead(out);
  out->append("\"delta\":{}");
  AppendFinishReason(out, finish_reason);
  out->append("}]").append(usage_null_).append("}\n\n");
}

void StreamWriter::UsageChunk(std::string* out, const Usage& usage) const {
  out->append(head_).append(",\"choices\":[],\"usage\":{\"prompt_tokens\":");
  AppendInt(out, usage.prompt_tokens);
  out->append(",\"completion_tokens\":");
  AppendInt(out, usage.completion_tokens);
  out->append(",\"total_tokens\":");
  AppendInt(out, usage.prompt_tokens + usage.completion_tokens);
  out->append("}}\n\n");
}

std::string ErrorEvent(const ApiError& e) { return "data: " + ErrorBody(e) + "\n\n"; }

std::string CompletionChunk(const StreamContext& ctx, std::string_view text, std::string_view finish_reason,
                            const std::vector<int32_t>* prompt_ids, const std::vector<int32_t>* token_ids) {
  std::string out;
  StreamWriter(ctx).Content(&out, text, finish_reason, token_ids, prompt_ids);
  return out;
}

std::string ChatRoleChunk(const StreamContext& ctx, const std::vector<int32_t>* prompt_ids) {
  std::string out;
  StreamWriter(ctx).Role(&out, prompt_ids);
  return out;
}

std::string ChatChunk(const StreamContext& ctx, std::string_view content, const std::vector<int32_t>* token_ids) {
  std::string out;
  StreamWriter(ctx).Content(&out, content, "", token_ids);
  return out;
}

std::string ChatFinishChunk(const StreamContext& ctx, std::string_view finish_reason) {
  std::string out;
  StreamWriter(ctx).Finish(&out, finish_reason);
  return out;
}

std::string UsageChunk(const StreamContext& ctx, const Usage& usage) {
  std::string out;
  StreamWriter(ctx).UsageChunk(&out, usage);
  return out;
}

}  // namespace shoal::api
