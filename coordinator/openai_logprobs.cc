// The `logprobs` object of OpenAI's choices (coordinator/openai_api.h: LogprobsJson), written as text:
// token strings are raw bytes that may not be valid UTF-8 alone (a multi-byte character split over
// tokens), so `token` goes through AppendJsonString (U+FFFD for such bytes) and `bytes` lists them.
#include <charconv>
#include <cmath>
#include <string>

#include "coordinator/openai_api.h"
#include "coordinator/openai_stream.h"

namespace shoal::api {

namespace {

void AppendNumber(std::string* out, double v) {
  if (!std::isfinite(v)) v = -9999.0;  // -inf (a masked token): vLLM's stand-in, since JSON has no -inf
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr);
}

void AppendBytes(std::string* out, const std::string& b) {
  out->push_back('[');
  for (size_t i = 0; i < b.size(); ++i) {
    if (i > 0) out->push_back(',');
    AppendNumber(out, static_cast<unsigned char>(b[i]));
  }
  out->push_back(']');
}

// {"token": …, "logprob": …, "bytes": […]}, without the closing brace.
void AppendChatEntryHead(std::string* out, const std::string& bytes, float logprob) {
  out->append("{\"token\":");
  AppendJsonString(out, bytes);
  out->append(",\"logprob\":");
  AppendNumber(out, logprob);
  out->append(",\"bytes\":");
  AppendBytes(out, bytes);
}

}  // namespace

std::string LogprobsJson(bool chat, std::span<const TokenLogprob> entries,
                         const std::function<std::string(int32_t)>& token_bytes, int64_t* text_offset) {
  std::string out;
  if (chat) {
    out.append("{\"content\":[");
    for (size_t i = 0; i < entries.size(); ++i) {
      const TokenLogprob& e = entries[i];
      if (i > 0) out.push_back(',');
      AppendChatEntryHead(&out, token_bytes(e.token), e.logprob);
      out.append(",\"top_logprobs\":[");
      for (size_t k = 0; k < e.top_ids.size(); ++k) {
        if (k > 0) out.push_back(',');
        AppendChatEntryHead(&out, token_bytes(e.top_ids[k]), e.top_logprobs[k]);
        out.push_back('}');
      }
      out.append("]}");
    }
    out.append("]}");
    return out;
  }
  std::string tokens = "[", values = "[", tops = "[", offsets = "[";
  for (size_t i = 0; i < entries.size(); ++i) {
    const TokenLogprob& e = entries[i];
    const std::string text = token_bytes(e.token);
    if (i > 0) tokens += ',', values += ',', tops += ',', offsets += ',';
    AppendJsonString(&tokens, text);
    AppendNumber(&offsets, static_cast<double>(*text_offset));
    *text_offset += static_cast<int64_t>(text.size());
    if (e.none) {  // the first prompt token (echo): nothing predicted it
      values += "null";
      tops += "null";
      continue;
    }
    AppendNumber(&values, e.logprob);
    tops += '{';
    for (size_t k = 0; k < e.top_ids.size(); ++k) {
      if (k > 0) tops += ',';
      AppendJsonString(&tops, token_bytes(e.top_ids[k]));
      tops += ':';
      AppendNumber(&tops, e.top_logprobs[k]);
    }
    tops += '}';
  }
  out.append("{\"tokens\":").append(tokens).append("],\"token_logprobs\":").append(values);
  out.append("],\"top_logprobs\":").append(tops).append("],\"text_offset\":").append(offsets).append("]}");
  return out;
}

std::string PromptLogprobsJson(std::span<const TokenLogprob> entries,
                               const std::function<std::string(int32_t)>& token_text) {
  std::string out = "[null";
  auto entry = [&](int32_t id, float logprob, int32_t rank) {
    out.push_back('"');
    out.append(std::to_string(id));
    out.append("\":{\"logprob\":");
    AppendNumber(&out, logprob);
    out.append(",\"rank\":").append(std::to_string(rank)).append(",\"decoded_token\":");
    AppendJsonString(&out, token_text(id));
    out.push_back('}');
  };
  for (const TokenLogprob& e : entries) {
    out.append(",{");
    entry(e.token, e.logprob, e.rank);
    for (size_t k = 0; k < e.top_ids.size(); ++k) {
      if (e.top_ids[k] == e.token) continue;  // already there, with its own rank
      out.push_back(',');
      entry(e.top_ids[k], e.top_logprobs[k], static_cast<int32_t>(k + 1));
    }
    out.push_back('}');
  }
  out.push_back(']');
  return out;
}

}  // namespace shoal::api
