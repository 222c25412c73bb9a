#include "coordinator/openai_api.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <limits>
#include <utility>

#include "model/chat_template.h"

namespace shoal::api {
namespace {

using json = nlohmann::ordered_json;
using Err = std::optional<ApiError>;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// Dumps `j` as compact JSON. Invalid UTF-8 (a model can emit half a character) becomes U+FFFD
// instead of an exception.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A short rendering of a user-supplied value for an error message.
std::string Show(const json& v) {
  std::string s = Dump(v);
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

ApiError TypeError(const std::string& param, const char* want, const json& v) {
  return InvalidRequest(param + " must be " + want + ", got " + v.type_name(), param);
}

// The field, or nullptr when absent or null: OpenAI and vLLM treat null as "use the default".
const json* Field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

Err GetBool(const json& obj, const char* key, bool* out) {
  const json* v = Field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return TypeError(key, "a boolean", *v);
  *out = v->get<bool>();
  return std::nullopt;
}

Err GetString(const json& obj, const char* key, std::string* out) {
  const json* v = Field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return TypeError(key, "a string", *v);
  *out = v->get<std::string>();
  return std::nullopt;
}

// A number in [lo, hi], or (lo, hi] when lo_open.
Err GetFloat(const json& obj, const char* key, double lo, double hi, bool lo_open, float* out) {
  const json* v = Field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return TypeError(key, "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d) || (lo_open ? d <= lo : d < lo) || d > hi) {
    char range[64];
    std::snprintf(range, sizeof(range), "%c%g, %g]", lo_open ? '(' : '[', lo, hi);
    return InvalidRequest(std::string(key) + " must be in " + range + ", got " + Show(*v), key);
  }
  *out = static_cast<float>(d);
  return std::nullopt;
}

// An integer (or an integral float, as pydantic accepts) converted to int64; false when not integral
// or outside int64.
bool AsInt64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // 2^63 is exactly representable; anything >= it does not fit.
    if (!std::isfinite(d) || d != std::floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) {
      return false;
    }
    *out = static_cast<int64_t>(d);
    return true;
  }
  return false;
}

Err GetInt(const json& obj, const char* key, int64_t lo, int64_t hi, const char* what, int64_t* out) {
  const json* v = Field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return TypeError(key, "an integer", *v);
  int64_t i = 0;
  if (!AsInt64(*v, &i) || i < lo || i > hi) {
    return InvalidRequest(std::string(key) + " must be " + what + ", got " + Show(*v), key);
  }
  *out = i;
  return std::nullopt;
}

// A field OpenAI or vLLM defines but shoal cannot honour: fine when absent, null, or `accept(value)`.
template <class Pred>
Err Unsupported(const json& obj, const char* key, Pred accept, const char* why) {
  const json* v = Field(obj, key);
  if (v == nullptr || accept(*v)) return std::nullopt;
  return InvalidRequest(std::string(key) + " = " + Show(*v) + " is not supported by shoal (" + why + ")", key);
}

bool IsFalse(const json& v) { return v.is_boolean() && !v.get<bool>(); }
bool IsNumber(const json& v, double x) { return v.is_number() && v.get<double>() == x; }

// Rejects nesting deeper than kMaxJsonDepth by scanning brackets outside strings, so a hostile body
// never builds a deep tree (whose destruction and our own walks would recurse).
Err CheckDepth(std::string_view body) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) {
        return InvalidRequest("request body is nested more than " + std::to_string(kMaxJsonDepth) +
                                  " levels deep (at byte " + std::to_string(i) + ")",
                              "");
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return std::nullopt;
}

std::variant<json, ApiError> ParseBody(std::string_view body) {
  if (auto e = CheckDepth(body)) return *e;
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 7: ...", or
    // out_of_range.406 for a number like 1e400 that overflows a double.
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return InvalidRequest("request body is not valid JSON: " + what, "");
  }
  if (!j.is_object()) {
    return InvalidRequest(std::string("request body must be a JSON object, got ") + j.type_name(), "");
  }
  return j;
}

Err CheckStopBytes(size_t total) {
  if (total <= kMaxStopBytes) return std::nullopt;
  return InvalidRequest("stop sequences may total at most " + std::to_string(kMaxStopBytes) + " bytes, got " +
                            std::to_string(total),
                        "stop");
}

Err ParseStop(const json& obj, std::vector<std::string>* out) {
  const json* v = Field(obj, "stop");
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) {
    if (v->get_ref<const std::string&>().empty()) return InvalidRequest("stop must not be an empty string", "stop");
    if (auto e = CheckStopBytes(v->get_ref<const std::string&>().size())) return e;
    out->push_back(v->get<std::string>());
    return std::nullopt;
  }
  if (!v->is_array()) return TypeError("stop", "a string or an array of strings", *v);
  if (v->size() > static_cast<size_t>(kMaxStopSequences)) {
    return InvalidRequest("stop may hold at most " + std::to_string(kMaxStopSequences) + " sequences, got " +
                              std::to_string(v->size()),
                          "stop");
  }
  size_t total = 0;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& s = (*v)[i];
    if (!s.is_string()) return TypeError("stop", "a string or an array of strings", *v);
    if (s.get_ref<const std::string&>().empty()) {
      return InvalidRequest("stop[" + std::to_string(i) + "] must not be an empty string", "stop");
    }
    total += s.get_ref<const std::string&>().size();
    out->push_back(s.get<std::string>());
  }
  return CheckStopBytes(total);
}

Err ParseStopTokenIds(const json& obj, std::vector<int32_t>* out) {
  const json* v = Field(obj, "stop_token_ids");
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return TypeError("stop_token_ids", "an array of token ids", *v);
  if (v->size() > kMaxStopTokenIds) {
    return InvalidRequest("stop_token_ids has " + std::to_string(v->size()) + " entries; at most " +
                              std::to_string(kMaxStopTokenIds) + " are allowed",
                          "stop_token_ids");
  }
  for (size_t i = 0; i < v->size(); ++i) {
    int64_t id = -1;
    if (!AsInt64((*v)[i], &id) || id < 0 || id > kInt32Max) {
      return InvalidRequest("stop_token_ids[" + std::to_string(i) + "] must be a token id in [0, 2147483647], got " +
                                Show((*v)[i]),
                            "stop_token_ids");
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

Err ParseSampling(const json& obj, bool chat, SamplingOptions* s) {
  int64_t i = 0;
  if (auto e = GetInt(obj, "max_tokens", 1, kInt32Max, "an integer >= 1", &i)) return e;
  if (Field(obj, "max_tokens") != nullptr) s->max_tokens = static_cast<int>(i);
  if (chat) {
    if (auto e = GetInt(obj, "max_completion_tokens", 1, kInt32Max, "an integer >= 1", &i)) return e;
    if (Field(obj, "max_completion_tokens") != nullptr) s->max_tokens = static_cast<int>(i);
  }
  SamplingParams& p = s->params;
  if (auto e = GetFloat(obj, "temperature", 0.0, 2.0, false, &p.temperature)) return e;
  if (auto e = GetFloat(obj, "top_p", 0.0, 1.0, true, &p.top_p)) return e;
  if (auto e = GetFloat(obj, "presence_penalty", -2.0, 2.0, false, &p.presence_penalty)) return e;
  if (auto e = GetFloat(obj, "frequency_penalty", -2.0, 2.0, false, &p.frequency_penalty)) return e;
  if (auto e = GetInt(obj, "top_k", -1, kInt32Max, "-1 (off), 0 (off) or an integer >= 1", &i)) return e;
  if (Field(obj, "top_k") != nullptr) p.top_k = i <= 0 ? 0 : static_cast<int32_t>(i);
  if (auto e = GetFloat(obj, "min_p", 0.0, 1.0, false, &p.min_p)) return e;
  if (auto e = GetFloat(obj, "repetition_penalty", 0.0, 100.0, true, &p.repetition_penalty)) return e;
  if (auto e = GetInt(obj, "min_tokens", 0, kInt32Max, "an integer >= 0", &i)) return e;
  if (Field(obj, "min_tokens") != nullptr) p.min_tokens = static_cast<int32_t>(i);
  if (s->max_tokens >= 0 && p.min_tokens > s->max_tokens) {
    return InvalidRequest("min_tokens (" + std::to_string(p.min_tokens) + ") must not exceed max_tokens (" +
                              std::to_string(s->max_tokens) + ")",
                          "min_tokens");
  }
  const std::pair<const char*, uint32_t> given[] = {{"temperature", SamplingOptions::kTemperature},
                                                    {"top_p", SamplingOptions::kTopP},
                                                    {"top_k", SamplingOptions::kTopK},
                                                    {"min_p", SamplingOptions::kMinP},
                                                    {"repetition_penalty", SamplingOptions::kRepetitionPenalty}};
  for (const auto& [key, bit] : given) {
    if (Field(obj, key) != nullptr) s->given |= bit;
  }
  if (const json* v = Field(obj, "logit_bias")) {
    if (!v->is_object()) return TypeError("logit_bias", "an object mapping token ids to biases", *v);
    if (v->size() > static_cast<size_t>(kMaxLogitBias)) {
      return InvalidRequest("logit_bias has " + std::to_string(v->size()) + " entries; at most " +
                                std::to_string(kMaxLogitBias) + " are allowed",
                            "logit_bias");
    }
    std::vector<std::pair<int32_t, float>> bias;
    for (const auto& [key, value] : v->items()) {
      char* end = nullptr;
      const long long id = key.empty() || key.size() > 10 ? -1 : std::strtoll(key.c_str(), &end, 10);
      if (id < 0 || id > kInt32Max || end == nullptr || *end != '\0') {
        return InvalidRequest("logit_bias keys must be token ids, got \"" + key.substr(0, 32) + "\"", "logit_bias");
      }
      if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < -100 ||
          value.get<double>() > 100) {
        return InvalidRequest("logit_bias[" + key + "] must be a number in [-100, 100], got " + Show(value), "logit_bias");
      }
      bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(value.get<double>()));
    }
    std::sort(bias.begin(), bias.end());
    for (size_t k = 1; k < bias.size(); ++k) {
      if (bias[k].first == bias[k - 1].first) {
        return InvalidRequest("logit_bias names token " + std::to_string(bias[k].first) + " twice", "logit_bias");
      }
    }
    for (const auto& [id, b] : bias) {
      s->bias_ids.push_back(id);
      s->bias_values.push_back(b);
    }
  }
  if (const json* v = Field(obj, "seed")) {
    s->has_seed = true;
    if (v->is_number_unsigned()) {
      p.seed = v->get<uint64_t>();
    } else if (int64_t seed = 0; AsInt64(*v, &seed)) {
      p.seed = static_cast<uint64_t>(seed);
    } else {
      return InvalidRequest("seed must be a 64-bit integer, got " + Show(*v), "seed");
    }
  }
  // logprobs: chat's a boolean with top_logprobs beside it, completions' the number of alternatives.
  if (chat) {
    bool want = false;
    if (auto e = GetBool(obj, "logprobs", &want)) return e;
    if (auto e = GetInt(obj, "top_logprobs", 0, kMaxTopLogprobs, "an integer in [0, 20]", &i)) return e;
    const bool has_top = Field(obj, "top_logprobs") != nullptr;
    if (has_top && !want) return InvalidRequest("top_logprobs requires logprobs: true", "top_logprobs");
    if (want) s->logprobs = has_top ? static_cast<int>(i) : 0;
  } else {
    if (auto e = GetInt(obj, "logprobs", 0, kMaxTopLogprobs, "an integer in [0, 20]", &i)) return e;
    if (Field(obj, "logprobs") != nullptr) s->logprobs = static_cast<int>(i);
  }
  if (auto e = ParseStop(obj, &s->stop)) return e;
  if (auto e = ParseStopTokenIds(obj, &s->stop_token_ids)) return e;
  if (auto e = GetBool(obj, "ignore_eos", &s->ignore_eos)) return e;
  if (auto e = GetBool(obj, "skip_special_tokens", &s->skip_special_tokens)) return e;
  return std::nullopt;
}

// Fields OpenAI or vLLM define that shoal cannot honour; ignoring them would change the output silently.
Err RejectUnsupported(const json& obj, bool chat) {
  if (chat) {
    if (auto e = Unsupported(obj, "echo", IsFalse, "chat does not echo")) return e;
  }
  auto never = [](const json&) { return false; };
  // best_of: only its default (= n), which returns the n choices as they are.
  const json* n_field = Field(obj, "n");
  int64_t n_given = 1;
  if (n_field != nullptr && n_field->is_number()) AsInt64(*n_field, &n_given);
  auto best_of_default = [n_given](const json& v) { return IsNumber(v, n_given); };
  if (auto e = Unsupported(obj, "best_of", best_of_default, "best_of other than n")) return e;
  if (auto e = Unsupported(obj, "use_beam_search", IsFalse, "no beam search")) return e;
  auto text_format = [](const json& v) { return v.is_object() && v.value("type", json()) == "text"; };
  if (auto e = Unsupported(obj, "response_format", text_format, "no structured output")) return e;
  for (const char* key : {"guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs"}) {
    if (auto e = Unsupported(obj, key, never, "no structured output")) return e;
  }
  return std::nullopt;
}

// Fields shared by both endpoints: model, user, stream options, sampling, vLLM's return_token_ids.
struct Common {
  std::string model, user;
  SamplingOptions sampling;
  bool stream = false, include_usage = false, return_token_ids = false;
};

Err ParseCommon(const json& obj, bool chat, Common* c) {
  if (auto e = GetString(obj, "model", &c->model)) return e;
  if (auto e = GetString(obj, "user", &c->user)) return e;
  if (auto e = GetBool(obj, "stream", &c->stream)) return e;
  if (const json* so = Field(obj, "stream_options")) {
    if (!so->is_object()) return TypeError("stream_options", "an object", *so);
    if (!c->stream) return InvalidRequest("stream_options is only allowed when stream is true", "stream_options");
    if (const json* iu = Field(*so, "include_usage")) {
      if (!iu->is_boolean()) return TypeError("stream_options.include_usage", "a boolean", *iu);
      c->include_usage = iu->get<bool>();
    }
  }
  if (auto e = GetBool(obj, "return_token_ids", &c->return_token_ids)) return e;
  if (auto e = ParseSampling(obj, chat, &c->sampling)) return e;
  // n choices of one prompt (prefilled once, worker/scheduler.h), each with the seed + its index.
  int64_t n = 1;
  if (auto e = GetInt(obj, "n", 1, kMaxChoices, "an integer in [1, 128]", &n)) return e;
  c->sampling.n = static_cast<int>(n);
  // prompt_logprobs (vLLM extension): null or 0..20 alternatives (vLLM's -1, the whole vocabulary, is
  // not offered: a prompt of n tokens would send n × vocabulary numbers). Not streamed, as in vLLM.
  if (const json* v = Field(obj, "prompt_logprobs"); v != nullptr && !v->is_null()) {
    int64_t k = 0;
    if (auto e = GetInt(obj, "prompt_logprobs", 0, kMaxTopLogprobs, "an integer in [0, 20]", &k)) return e;
    if (c->stream) return InvalidRequest("prompt_logprobs are not available when stream is true", "prompt_logprobs");
    c->sampling.prompt_logprobs = static_cast<int>(k);
  }
  return RejectUnsupported(obj, chat);
}

// A list of token ids for `param`, or an error naming the bad element.
Err ParseTokenIds(const json& arr, const std::string& param, std::vector<int32_t>* out) {
  if (arr.empty()) return InvalidRequest(param + " must not be empty", "prompt");
  out->reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    int64_t id = -1;
    if (!arr[i].is_number() || !AsInt64(arr[i], &id) || id < 0 || id > kInt32Max) {
      return InvalidRequest(param + "[" + std::to_string(i) + "] must be a token id in [0, 2147483647], got " +
                                Show(arr[i]),
                            "prompt");
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

Err ParsePrompt(const json& obj, std::variant<std::string, std::vector<int32_t>>* out) {
  const json* p = Field(obj, "prompt");
  if (p == nullptr) return InvalidRequest("prompt is required", "prompt");
  if (p->is_string()) {
    *out = p->get<std::string>();
    return std::nullopt;
  }
  if (!p->is_array()) return TypeError("prompt", "a string or an array of token ids", *p);
  if (p->empty()) return InvalidRequest("prompt must not be empty", "prompt");
  const json& first = p->front();
  if (first.is_string() || first.is_array()) {
    // A batch: OpenAI accepts several prompts per request; shoal serves one.
    if (p->size() != 1) return InvalidRequest("only one prompt per request is supported", "prompt");
    if (first.is_string()) {
      *out = first.get<std::string>();
      return std::nullopt;
    }
    std::vector<int32_t> ids;
    if (auto e = ParseTokenIds(first, "prompt[0]", &ids)) return e;
    *out = std::move(ids);
    return std::nullopt;
  }
  std::vector<int32_t> ids;
  if (auto e = ParseTokenIds(*p, "prompt", &ids)) return e;
  *out = std::move(ids);
  return std::nullopt;
}

bool KnownRole(const std::string& r) {
  return r == "system" || r == "user" || r == "assistant" || r == "tool" || r == "developer";
}

// Validates one message and returns its copy with text parts flattened into one string.
Err ParseMessage(const json& m, size_t index, json* out) {
  const std::string at = "messages[" + std::to_string(index) + "]";
  if (!m.is_object()) return TypeError(at, "an object", m);
  const json* role = Field(m, "role");
  if (role == nullptr) return InvalidRequest(at + ".role is required", at + ".role");
  if (!role->is_string()) return TypeError(at + ".role", "a string", *role);
  const std::string& r = role->get_ref<const std::string&>();
  if (!KnownRole(r)) {
    return InvalidRequest(at + ".role must be one of system, user, assistant, tool, developer, got " + Show(*role),
                          at + ".role");
  }
  for (const char* key : {"name", "tool_call_id"}) {
    if (const json* v = Field(m, key); v != nullptr && !v->is_string()) {
      return TypeError(at + "." + key, "a string", *v);
    }
  }
  const json* calls = Field(m, "tool_calls");
  if (calls != nullptr) {
    if (!calls->is_array()) return TypeError(at + ".tool_calls", "an array", *calls);
    for (size_t i = 0; i < calls->size(); ++i) {
      if (!(*calls)[i].is_object()) {
        return TypeError(at + ".tool_calls[" + std::to_string(i) + "]", "an object", (*calls)[i]);
      }
    }
  }
  *out = m;
  const std::string content_param = at + ".content";
  const json* content = Field(m, "content");
  if (content == nullptr) {
    if (r == "assistant" && calls != nullptr && !calls->empty()) return std::nullopt;
    return InvalidRequest(content_param + " is required (only an assistant message with tool_calls may omit it)",
                          content_param);
  }
  if (content->is_string()) return std::nullopt;
  if (!content->is_array()) return TypeError(content_param, "a string or an array of text parts", *content);
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const json& part = (*content)[i];
    const std::string part_at = content_param + "[" + std::to_string(i) + "]";
    if (!part.is_object()) return InvalidRequest(part_at + " must be an object", content_param);
    const json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) {
      return InvalidRequest(part_at + ".type must be a string", content_param);
    }
    if (*type != "text") {
      return InvalidRequest(part_at + " has type " + Show(*type) + "; shoal accepts only text parts",
                            content_param);
    }
    const json* t = Field(part, "text");
    if (t == nullptr || !t->is_string()) return InvalidRequest(part_at + ".text must be a string", content_param);
    if (i > 0) text += '\n';
    text += t->get_ref<const std::string&>();
  }
  (*out)["content"] = std::move(text);
  return std::nullopt;
}

Err ParseTools(const json& obj, json* out) {
  const json* tools = Field(obj, "tools");
  if (tools == nullptr) return std::nullopt;
  if (!tools->is_array()) return TypeError("tools", "an array", *tools);
  for (size_t i = 0; i < tools->size(); ++i) {
    const json& t = (*tools)[i];
    const std::string at = "tools[" + std::to_string(i) + "]";
    if (!t.is_object() || t.value("type", json()) != "function") {
      return InvalidRequest(at + " must be an object with type \"function\"", at);
    }
    const json* f = Field(t, "function");
    if (f == nullptr || !f->is_object()) return InvalidRequest(at + ".function must be an object", at + ".function");
    const json* name = Field(*f, "name");
    if (name == nullptr || !name->is_string()) {
      return InvalidRequest(at + ".function.name must be a string", at + ".function.name");
    }
  }
  *out = *tools;
  return std::nullopt;
}

// tool_choice and parallel_tool_calls, after tools (vLLM's checks and messages, where it has them).
Err ParseToolChoice(const json& obj, ChatRequest* req) {
  if (auto e = GetBool(obj, "parallel_tool_calls", &req->parallel_tool_calls)) return e;
  const json* tc = Field(obj, "tool_choice");
  if (tc == nullptr) return std::nullopt;
  const char* usage = "use \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}";
  if (tc->is_string()) {
    const std::string& s = tc->get_ref<const std::string&>();
    if (s == "none") req->tool_choice = ToolChoice::kNone;
    else if (s == "auto") req->tool_choice = ToolChoice::kAuto;
    else if (s == "required") req->tool_choice = ToolChoice::kRequired;
    else return InvalidRequest("tool_choice = " + Show(*tc) + " is not a tool choice: " + usage, "tool_choice");
  } else if (tc->is_object()) {
    const json* f = Field(*tc, "function");
    const json* name = f != nullptr && f->is_object() ? Field(*f, "name") : nullptr;
    if (tc->value("type", json()) != "function" || name == nullptr || !name->is_string() || name->get_ref<const std::string&>().empty()) {
      return InvalidRequest("tool_choice = " + Show(*tc) + " is not a tool choice: " + usage, "tool_choice");
    }
    req->tool_choice = ToolChoice::kNamed;
    req->tool_choice_name = name->get<std::string>();
  } else {
    return TypeError("tool_choice", "a string or an object", *tc);
  }
  if (req->tool_choice == ToolChoice::kRequired || req->tool_choice == ToolChoice::kNamed) {
    if (!req->tools.is_array() || req->tools.empty()) {
      return InvalidRequest("tool_choice " + Show(*tc) + " needs tools: a non-empty array of functions", "tools");
    }
  }
  if (req->tool_choice == ToolChoice::kNamed) {
    const bool known = std::any_of(req->tools.begin(), req->tools.end(), [&](const json& t) {
      return t["function"]["name"] == req->tool_choice_name;
    });
    if (!known) {
      return InvalidRequest("tool_choice names the function '" + req->tool_choice_name.substr(0, 64) +
                                "', which is not in tools", "tool_choice");
    }
  }
  return std::nullopt;
}

template <class Request>
void CopyCommon(Common&& c, Request* r) {
  r->model = std::move(c.model);
  r->user = std::move(c.user);
  r->sampling = std::move(c.sampling);
  r->stream = c.stream;
  r->include_usage = c.include_usage;
  r->return_token_ids = c.return_token_ids;
}

ApiError InternalError(const char* what) {
  return ApiError{500, std::string("internal error while parsing the request: ") + what, "server_error", "", ""};
}

std::variant<CompletionRequest, ApiError> ParseCompletionImpl(std::string_view body) {
  auto parsed = ParseBody(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return std::move(*e);
  const json& obj = std::get<json>(parsed);
  CompletionRequest req;
  Common c;
  if (auto e = ParseCommon(obj, /*chat=*/false, &c)) return std::move(*e);
  auto suffix_empty = [](const json& v) { return v.is_string() && v.get_ref<const std::string&>().empty(); };
  if (auto e = Unsupported(obj, "suffix", suffix_empty, "no insertion")) return std::move(*e);
  if (auto e = ParsePrompt(obj, &req.prompt)) return std::move(*e);
  if (auto e = GetBool(obj, "echo", &req.echo)) return std::move(*e);
  CopyCommon(std::move(c), &req);
  return req;
}

std::variant<ChatRequest, ApiError> ParseChatImpl(std::string_view body) {
  auto parsed = ParseBody(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return std::move(*e);
  const json& obj = std::get<json>(parsed);
  ChatRequest req;
  Common c;
  if (auto e = ParseCommon(obj, /*chat=*/true, &c)) return std::move(*e);
  if (auto e = Unsupported(obj, "continue_final_message", IsFalse, "not implemented")) return std::move(*e);
  const json* messages = Field(obj, "messages");
  if (messages == nullptr) return InvalidRequest("messages is required", "messages");
  if (!messages->is_array()) return TypeError("messages", "an array", *messages);
  if (messages->empty()) return InvalidRequest("messages must not be empty", "messages");
  req.messages = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    json m;
    if (auto e = ParseMessage((*messages)[i], i, &m)) return std::move(*e);
    req.messages.push_back(std::move(m));
  }
  if (auto e = ParseTools(obj, &req.tools)) return std::move(*e);
  if (auto e = ParseToolChoice(obj, &req)) return std::move(*e);
  if (const json* kw = Field(obj, "chat_template_kwargs")) {
    if (!kw->is_object()) return TypeError("chat_template_kwargs", "an object", *kw);
    for (auto it = kw->begin(); it != kw->end(); ++it) {
      // Such a key would replace what the server validated or sets itself (see chat_template.h).
      if (IsReservedChatTemplateName(it.key())) {
        const std::string param = "chat_template_kwargs." + it.key();
        return InvalidRequest(param + " is reserved: the chat template gets '" + it.key() +
                                  "' from shoal itself, not from chat_template_kwargs",
                              param);
      }
    }
    req.chat_template_kwargs = *kw;
  }
  if (auto e = GetBool(obj, "add_generation_prompt", &req.add_generation_prompt)) return std::move(*e);
  CopyCommon(std::move(c), &req);
  return req;
}

json UsageJson(const Usage& u) {
  json j = json::object();
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  return j;
}

json FinishReason(std::string_view r) { return r.empty() ? json(nullptr) : json(std::string(r)); }

json Ids(const std::vector<int32_t>& ids) { return json(ids); }

json Head(const std::string& id, const char* object, int64_t created, const std::string& model) {
  json j = json::object();
  j["id"] = id;
  j["object"] = object;
  j["created"] = created;
  j["model"] = model;
  return j;
}

json ErrorJson(const ApiError& e) {
  json inner = json::object();
  inner["message"] = e.message;
  inner["type"] = e.type;
  inner["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  inner["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  json j = json::object();
  j["error"] = std::move(inner);
  return j;
}

}  // namespace

ApiError InvalidRequest(std::string message, std::string param, std::string code) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

ApiError FromStatus(const Status& status, std::string code) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kUnimplemented:
      return ApiError{400, status.message(), "invalid_request_error", "", code};
    case StatusCode::kNotFound:
      return ApiError{404, status.message(), "not_found_error", "", code};
    case StatusCode::kResourceExhausted:
      return ApiError{429, status.message(), "rate_limit_error", "", code};
    case StatusCode::kUnavailable:
      return ApiError{503, status.message(), "server_error", "", code};
    case StatusCode::kDeadlineExceeded:
      return ApiError{504, status.message(), "server_error", "", code};
    default:
      return ApiError{500, status.message(), "server_error", "", code};
  }
}

bool ExceedsJsonDepth(std::string_view body) { return CheckDepth(body).has_value(); }

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(std::string_view body) {
  try {
    return ParseCompletionImpl(body);
  } catch (const std::exception& e) {  // bad_alloc, or a nlohmann accessor we failed to guard
    return InternalError(e.what());
  }
}

std::variant<ChatRequest, ApiError> ParseChatRequest(std::string_view body) {
  try {
    return ParseChatImpl(body);
  } catch (const std::exception& e) {
    return InternalError(e.what());
  }
}

std::string ErrorBody(const ApiError& e) { return Dump(ErrorJson(e)); }

std::string CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                               std::span<const ResponseChoice> choices, const Usage& usage,
                               const std::vector<int32_t>* prompt_ids) {
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ResponseChoice& c = choices[i];
    json choice = json::object();
    choice["index"] = i;
    choice["text"] = c.text;
    choice["logprobs"] = c.logprobs_json != nullptr ? json::parse(*c.logprobs_json) : json(nullptr);
    choice["finish_reason"] = FinishReason(c.finish_reason);
    if (c.prompt_logprobs_json != nullptr) choice["prompt_logprobs"] = json::parse(*c.prompt_logprobs_json);
    if (prompt_ids != nullptr) choice["prompt_token_ids"] = Ids(*prompt_ids);
    if (c.token_ids != nullptr) choice["token_ids"] = Ids(*c.token_ids);
    list.push_back(std::move(choice));
  }
  json j = Head(id, "text_completion", created, model);
  j["choices"] = std::move(list);
  j["usage"] = UsageJson(usage);
  j["system_fingerprint"] = nullptr;
  return Dump(j);
}

std::string ChatResponse(const std::string& id, int64_t created, const std::string& model,
                         std::span<const ResponseChoice> choices, const Usage& usage,
                         const std::vector<int32_t>* prompt_ids, const std::string* prompt_logprobs_json) {
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ResponseChoice& c = choices[i];
    json message = json::object();
    message["role"] = "assistant";
    if (c.reasoning != nullptr) message["reasoning_content"] = c.reasoning->empty() ? json(nullptr) : json(*c.reasoning);
    if (c.reasoning != nullptr || c.tool_calls != nullptr) {
      message["content"] = c.text.empty() ? json(nullptr) : json(c.text);
    } else {
      message["content"] = c.text;
    }
    if (c.tool_calls != nullptr) message["tool_calls"] = *c.tool_calls;
    json choice = json::object();
    choice["index"] = i;
    choice["message"] = std::move(message);
    choice["logprobs"] = c.logprobs_json != nullptr ? json::parse(*c.logprobs_json) : json(nullptr);
    choice["finish_reason"] = FinishReason(c.finish_reason);
    if (c.token_ids != nullptr) choice["token_ids"] = Ids(*c.token_ids);
    list.push_back(std::move(choice));
  }
  json j = Head(id, "chat.completion", created, model);
  j["choices"] = std::move(list);
  j["usage"] = UsageJson(usage);
  j["system_fingerprint"] = nullptr;
  if (prompt_ids != nullptr) j["prompt_token_ids"] = Ids(*prompt_ids);
  if (prompt_logprobs_json != nullptr) j["prompt_logprobs"] = json::parse(*prompt_logprobs_json);
  return Dump(j);
}

std::string CompletionResponse(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish_reason, const Usage& usage,
                               const std::vector<int32_t>* prompt_ids, const std::vector<int32_t>* token_ids,
                               const std::string* logprobs_json, const std::string* prompt_logprobs_json) {
  const ResponseChoice c{text, finish_reason, token_ids, logprobs_json, nullptr, nullptr, prompt_logprobs_json};
  return CompletionResponse(id, created, model, std::span<const ResponseChoice>(&c, 1), usage, prompt_ids);
}

std::string ChatResponse(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                         const std::string& finish_reason, const Usage& usage,
                         const std::vector<int32_t>* prompt_ids, const std::vector<int32_t>* token_ids,
                         const std::string* reasoning, const std::string* logprobs_json, const json* tool_calls,
                         const std::string* prompt_logprobs_json) {
  const ResponseChoice c{text, finish_reason, token_ids, logprobs_json, reasoning, tool_calls, nullptr};
  return ChatResponse(id, created, model, std::span<const ResponseChoice>(&c, 1), usage, prompt_ids,
                      prompt_logprobs_json);
}

std::string ModelsResponse(const std::vector<std::string>& model_ids, int64_t created, int64_t max_model_len) {
  json data = json::array();
  for (const std::string& id : model_ids) {
    json m = json::object();
    m["id"] = id;
    m["object"] = "model";
    m["created"] = created;
    m["owned_by"] = "shoal";
    m["root"] = id;
    m["max_model_len"] = max_model_len;
    data.push_back(std::move(m));
  }
  json j = json::object();
  j["object"] = "list";
  j["data"] = std::move(data);
  return Dump(j);
}

}  // namespace shoal::api
