#include "worker/batch_file.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace shoal {

namespace {

using json = nlohmann::json;

StatusOr<int64_t> IntField(const json& v, const std::string& where, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) return InvalidArgument(where + ": expected an integer");
  // Unsigned values above INT64_MAX are rejected by the range check below via this conversion.
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return OutOfRange(where + ": must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    return OutOfRange(where + ": must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                      std::to_string(x));
  }
  return x;
}

StatusOr<double> NumberField(const json& v, const std::string& where, double lo, double hi) {
  if (!v.is_number()) return InvalidArgument(where + ": expected a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    return OutOfRange(where + ": must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

StatusOr<std::vector<int32_t>> TokenArray(const json& v, const std::string& where, int vocab, int64_t max_len) {
  if (!v.is_array()) return InvalidArgument(where + ": expected an array of token ids");
  if (static_cast<int64_t>(v.size()) > max_len) {
    return OutOfRange(where + ": " + std::to_string(v.size()) + " ids, more than the limit of " + std::to_string(max_len));
  }
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    SHOAL_ASSIGN_OR_RETURN(int64_t id, IntField(v[i], where + "[" + std::to_string(i) + "]", 0, vocab - 1));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

Status ParseLine(const std::string& line, const std::string& where, int64_t line_no, int vocab, int default_max_tokens,
                 int64_t max_context, BatchRequest* out) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(where + ": not valid JSON");
  if (!j.is_object()) return InvalidArgument(where + ": expected a JSON object");
  out->id_json = std::to_string(line_no);
  out->request.max_tokens = default_max_tokens;
  bool has_prompt = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    const std::string at = where + ": " + key;
    GenerateRequest& r = out->request;
    if (key == "id") {
      if (!v.is_string() && !v.is_number_integer()) return InvalidArgument(at + ": expected a string or an integer");
      if (v.is_string() && v.get_ref<const std::string&>().size() > 4096) return OutOfRange(at + ": longer than 4096 bytes");
      out->id_json = v.dump();
    } else if (key == "prompt_ids") {
      SHOAL_ASSIGN_OR_RETURN(r.prompt, TokenArray(v, at, vocab, kMaxPromptTokens));
      if (r.prompt.empty()) return InvalidArgument(at + ": empty prompt");
      has_prompt = true;
    } else if (key == "max_tokens") {
      SHOAL_ASSIGN_OR_RETURN(int64_t n, IntField(v, at, 1, kMaxNewTokens));
      r.max_tokens = static_cast<int>(n);
    } else if (key == "temperature") {
      SHOAL_ASSIGN_OR_RETURN(double t, NumberField(v, at, 0.0, 100.0));
      r.sampling.temperature = static_cast<float>(t);
    } else if (key == "top_k") {
      SHOAL_ASSIGN_OR_RETURN(int64_t k, IntField(v, at, 0, vocab));
      r.sampling.top_k = static_cast<int>(k);
    } else if (key == "top_p") {
      SHOAL_ASSIGN_OR_RETURN(double p, NumberField(v, at, 0.0, 1.0));
      if (p <= 0.0) return OutOfRange(at + ": must be in (0, 1]");
      r.sampling.top_p = static_cast<float>(p);
    } else if (key == "seed") {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
        return InvalidArgument(at + ": expected a non-negative integer");
      }
      r.sampling.seed = v.get<uint64_t>();
    } else if (key == "stop_ids") {
      SHOAL_ASSIGN_OR_RETURN(r.stop_ids, TokenArray(v, at, vocab, 1024));
    } else {
      return InvalidArgument(at + ": unknown field (known: id, prompt_ids, max_tokens, temperature, top_k, top_p, "
                                  "seed, stop_ids)");
    }
  }
  if (!has_prompt) return InvalidArgument(where + ": prompt_ids: missing");
  const int64_t need = static_cast<int64_t>(out->request.prompt.size()) + out->request.max_tokens;
  if (need > max_context) {
    return OutOfRange(where + ": prompt_ids (" + std::to_string(out->request.prompt.size()) + ") + max_tokens (" +
                      std::to_string(out->request.max_tokens) + ") exceed the model's context of " +
                      std::to_string(max_context) + " tokens");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<BatchRequest>> ParseBatchFile(const std::string& text, const std::string& source, int vocab_size,
                                                   int default_max_tokens, int64_t max_context) {
  if (static_cast<int64_t>(text.size()) > kMaxBatchFileBytes) {
    return OutOfRange(source + ": larger than the limit of " + std::to_string(kMaxBatchFileBytes) + " bytes");
  }
  if (vocab_size < 1 || default_max_tokens < 1 || default_max_tokens > kMaxNewTokens) {
    return InvalidArgument(source + ": need a positive vocabulary size and default max_tokens in [1, " +
                           std::to_string(kMaxNewTokens) + "]");
  }
  std::vector<BatchRequest> out;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (static_cast<int64_t>(out.size()) >= kMaxBatchRequests) {
      return OutOfRange(source + ":" + std::to_string(line_no) + ": more than " + std::to_string(kMaxBatchRequests) +
                        " requests");
    }
    BatchRequest r;
    SHOAL_RETURN_IF_ERROR(
        ParseLine(line, source + ":" + std::to_string(line_no), line_no, vocab_size, default_max_tokens, max_context, &r));
    out.push_back(std::move(r));
  }
  return out;
}

std::string FormatBatchResult(const BatchRequest& request, const GenerateResult& result) {
  json tokens = result.tokens;
  return "{\"id\": " + request.id_json + ", \"prompt_tokens\": " + std::to_string(request.request.prompt.size()) +
         ", \"tokens\": " + tokens.dump() + ", \"finish_reason\": \"" + result.finish_reason + "\"}\n";
}

}  // namespace shoal
