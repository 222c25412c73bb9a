// The OpenAI-compatible API layer: every validation rule and the param it names, response and SSE
// shapes parsed back as JSON, invalid UTF-8 replaced, hostile bodies rejected without crashing.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/openai_api.h"
#include "coordinator/openai_stream.h"

namespace shoal::api {
namespace {

using json = nlohmann::ordered_json;

CompletionRequest Completion(const std::string& body) {
  auto r = ParseCompletionRequest(body);
  if (auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << " → " << ErrorBody(*e);
  return std::holds_alternative<CompletionRequest>(r) ? std::get<CompletionRequest>(r) : CompletionRequest{};
}

ChatRequest Chat(const std::string& body) {
  auto r = ParseChatRequest(body);
  if (auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << " → " << ErrorBody(*e);
  return std::holds_alternative<ChatRequest>(r) ? std::get<ChatRequest>(r) : ChatRequest{};
}

// The error for `body`, checked to be a 400 invalid_request_error naming `param`.
template <class Parse>
ApiError ExpectError(Parse parse, const std::string& body, const std::string& param) {
  auto r = parse(body);
  const ApiError* e = std::get_if<ApiError>(&r);
  if (e == nullptr) {
    ADD_FAILURE() << "accepted: " << body;
    return {};
  }
  EXPECT_EQ(e->http_status, 400) << body;
  EXPECT_EQ(e->type, "invalid_request_error") << body;
  EXPECT_EQ(e->param, param) << body << " → " << e->message;
  EXPECT_FALSE(e->message.empty());
  return *e;
}

ApiError CompletionError(const std::string& fields, const std::string& param) {
  return ExpectError(ParseCompletionRequest, "{\"prompt\":\"hi\"" + fields + "}", param);
}

ApiError ChatError(const std::string& body, const std::string& param) {
  return ExpectError(ParseChatRequest, body, param);
}

constexpr const char* kUserHi = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";

// Strips "data: " and "\n\n" from one SSE event and parses the JSON.
json EventJson(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
  EXPECT_GE(event.size(), 8u);
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n") << event;
  EXPECT_EQ(event.find('\n'), event.size() - 2) << "an event must be one line: " << event;
  return json::parse(event.substr(6, event.size() - 8));
}

TEST(OpenAiParse, CompletionDefaults) {
  CompletionRequest r = Completion("{\"model\":\"m\",\"prompt\":\"Hello\"}");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(std::get<std::string>(r.prompt), "Hello");
  EXPECT_EQ(r.sampling.max_tokens, -1);
  EXPECT_FLOAT_EQ(r.sampling.params.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.sampling.params.top_p, 1.0f);
  EXPECT_EQ(r.sampling.params.top_k, 0);  // off
  EXPECT_FALSE(r.sampling.has_seed);
  EXPECT_TRUE(r.sampling.stop.empty());
  EXPECT_TRUE(r.sampling.skip_special_tokens);
  EXPECT_FALSE(r.sampling.ignore_eos);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.return_token_ids);
}

TEST(OpenAiParse, CompletionEveryField) {
  CompletionRequest r = Completion(
      R"({"model":"m","prompt":[1,2,3],"max_tokens":7,"temperature":0,"top_p":0.5,"presence_penalty":-2,)"
      R"("frequency_penalty":2,"top_k":40,"seed":18446744073709551615,"stop":["a","b"],"stop_token_ids":[5],)"
      R"("ignore_eos":true,"skip_special_tokens":false,"stream":true,"stream_options":{"include_usage":true},)"
      R"("return_token_ids":true,"user":"u","n":1,"echo":false,"logprobs":null,"best_of":1,"suffix":null,)"
      R"("some_future_field":{"x":[1]}})");
  EXPECT_EQ(std::get<std::vector<int32_t>>(r.prompt), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r.sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.params.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.sampling.params.top_p, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.params.presence_penalty, -2.0f);
  EXPECT_FLOAT_EQ(r.sampling.params.frequency_penalty, 2.0f);
  EXPECT_EQ(r.sampling.params.top_k, 40);
  EXPECT_TRUE(r.sampling.has_seed);
  EXPECT_EQ(r.sampling.params.seed, 18446744073709551615ull);
  EXPECT_EQ(r.sampling.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.sampling.stop_token_ids, (std::vector<int32_t>{5}));
  EXPECT_TRUE(r.sampling.ignore_eos);
  EXPECT_FALSE(r.sampling.skip_special_tokens);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.return_token_ids);
  EXPECT_EQ(r.user, "u");
}

TEST(OpenAiParse, NullMeansDefault) {
  CompletionRequest r = Completion(
      R"({"prompt":"x","model":null,"max_tokens":null,"temperature":null,"top_p":null,"top_k":null,)"
      R"("seed":null,"stop":null,"stream":null,"stream_options":null,"n":null,"user":null})");
  EXPECT_EQ(r.sampling.max_tokens, -1);
  EXPECT_FLOAT_EQ(r.sampling.params.temperature, 1.0f);
  EXPECT_EQ(r.model, "");
}

TEST(OpenAiParse, PromptForms) {
  EXPECT_EQ(std::get<std::string>(Completion("{\"prompt\":[\"one\"]}").prompt), "one");
  EXPECT_EQ(std::get<std::vector<int32_t>>(Completion("{\"prompt\":[[4,5]]}").prompt), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(std::get<std::string>(Completion("{\"prompt\":\"\"}").prompt), "");
  EXPECT_EQ(std::get<std::vector<int32_t>>(Completion("{\"prompt\":[2147483647, 0]}").prompt),
            (std::vector<int32_t>{2147483647, 0}));
  auto batch = ExpectError(ParseCompletionRequest, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
  EXPECT_EQ(batch.message, "only one prompt per request is supported");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[[1],[2]]}", "prompt");
  ExpectError(ParseCompletionRequest, "{}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":null}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[[]]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[1,-2]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[1,2147483648]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[1,\"a\"]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":[1.5]}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":7}", "prompt");
  ExpectError(ParseCompletionRequest, "{\"prompt\":{}}", "prompt");
}

TEST(OpenAiParse, SamplingRanges) {
  CompletionError(",\"temperature\":2.01", "temperature");
  CompletionError(",\"temperature\":-0.1", "temperature");
  CompletionError(",\"temperature\":\"hot\"", "temperature");
  CompletionError(",\"temperature\":true", "temperature");
  CompletionError(",\"top_p\":0", "top_p");
  CompletionError(",\"top_p\":1.5", "top_p");
  CompletionError(",\"presence_penalty\":2.5", "presence_penalty");
  CompletionError(",\"frequency_penalty\":-2.5", "frequency_penalty");
  CompletionError(",\"max_tokens\":0", "max_tokens");
  CompletionError(",\"max_tokens\":-1", "max_tokens");
  CompletionError(",\"max_tokens\":1.5", "max_tokens");
  CompletionError(",\"max_tokens\":2147483648", "max_tokens");
  CompletionError(",\"max_tokens\":\"5\"", "max_tokens");
  CompletionError(",\"top_k\":-2", "top_k");
  CompletionError(",\"top_k\":2.5", "top_k");
  CompletionError(",\"seed\":1.5", "seed");
  CompletionError(",\"seed\":\"1\"", "seed");
  CompletionError(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "stop");
  CompletionError(",\"stop\":[\"a\",3]", "stop");
  CompletionError(",\"stop\":\"\"", "stop");
  CompletionError(",\"stop\":[\"a\",\"\"]", "stop");
  CompletionError(",\"stop\":5", "stop");
  CompletionError(",\"stop_token_ids\":[1,-1]", "stop_token_ids");
  CompletionError(",\"stop_token_ids\":7", "stop_token_ids");
  CompletionError(",\"ignore_eos\":1", "ignore_eos");
  CompletionError(",\"skip_special_tokens\":\"no\"", "skip_special_tokens");
  CompletionError(",\"stream\":\"yes\"", "stream");
  CompletionError(",\"model\":5", "model");
  CompletionError(",\"user\":5", "user");
  CompletionError(",\"return_token_ids\":1", "return_token_ids");
  // Edges that are allowed.
  CompletionRequest r = Completion(R"({"prompt":"x","temperature":2,"top_p":1,"max_tokens":5.0,"top_k":0,)"
                                   R"("seed":-1,"stop":"END","presence_penalty":2})");
  EXPECT_EQ(r.sampling.max_tokens, 5);  // an integral float, as pydantic accepts
  EXPECT_EQ(r.sampling.params.top_k, 0);  // 0 means off, as in vLLM
  EXPECT_EQ(r.sampling.params.seed, 0xffffffffffffffffull);
  EXPECT_EQ(r.sampling.stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(Completion("{\"prompt\":\"x\",\"top_k\":-1}").sampling.params.top_k, 0);  // -1: off too
  EXPECT_EQ(Completion("{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\"]}").sampling.stop.size(), 4u);
}

TEST(OpenAiParse, StopSequencesAreCappedInTotalBytes) {
  auto stop_array = [](const std::vector<size_t>& sizes) {
    std::string a = ",\"stop\":[";
    for (size_t i = 0; i < sizes.size(); ++i) a += (i ? ",\"" : "\"") + std::string(sizes[i], 'x') + "\"";
    return a + "]";
  };
  const size_t quarter = kMaxStopBytes / 4;
  EXPECT_EQ(Completion("{\"prompt\":\"x\",\"stop\":\"" + std::string(kMaxStopBytes, 'x') + "\"}").sampling.stop[0].size(),
            kMaxStopBytes);
  EXPECT_EQ(Completion("{\"prompt\":\"x\"" + stop_array({quarter, quarter, quarter, quarter}) + "}").sampling.stop.size(),
            4u);
  ApiError e = CompletionError(",\"stop\":\"" + std::string(kMaxStopBytes + 1, 'x') + "\"", "stop");
  EXPECT_NE(e.message.find(std::to_string(kMaxStopBytes)), std::string::npos) << e.message;
  CompletionError(stop_array({quarter, quarter, quarter, quarter + 1}), "stop");
  ChatError(std::string(kUserHi) + stop_array({kMaxStopBytes, 1}) + "}", "stop");
}

TEST(OpenAiParse, UnsupportedFieldsAreRejectedNotIgnored) {
  EXPECT_EQ(Completion(R"({"prompt":"x","n":2})").sampling.n, 2);
  EXPECT_EQ(Completion(R"({"prompt":"x","n":128})").sampling.n, 128);
  CompletionError(",\"n\":129", "n");
  CompletionError(",\"best_of\":3", "best_of");
  EXPECT_EQ(Completion(R"({"prompt":"x","n":3,"best_of":3})").sampling.n, 3);  // best_of's default: n
  CompletionError(",\"n\":2,\"best_of\":3", "best_of");
  CompletionError(",\"n\":0", "n");
  CompletionError(",\"n\":\"1\"", "n");
  EXPECT_EQ(Completion(R"({"prompt":"x","echo":true,"logprobs":1})").sampling.logprobs, 1);
  ChatError(std::string(kUserHi) + ",\"echo\":true}", "echo");
  EXPECT_TRUE(Completion(R"({"prompt":"x","echo":true})").echo);
  EXPECT_EQ(Completion(R"({"prompt":"x","prompt_logprobs":3})").sampling.prompt_logprobs, 3);
  EXPECT_EQ(Completion(R"({"prompt":"x","prompt_logprobs":null})").sampling.prompt_logprobs, -1);
  CompletionError(",\"prompt_logprobs\":21", "prompt_logprobs");
  CompletionError(",\"prompt_logprobs\":-1", "prompt_logprobs");
  CompletionError(",\"prompt_logprobs\":1,\"stream\":true", "prompt_logprobs");
  CompletionError(",\"best_of\":2", "best_of");
  CompletionError(",\"suffix\":\"tail\"", "suffix");
  CompletionError(",\"response_format\":{\"type\":\"json_object\"}", "response_format");
  CompletionError(",\"guided_json\":{}", "guided_json");
  CompletionError(",\"use_beam_search\":true", "use_beam_search");
  // Their neutral values are fine.
  Completion(R"({"prompt":"x","logit_bias":{},"response_format":{"type":"text"},"min_tokens":0,)"
             R"("repetition_penalty":1,"min_p":0,"top_logprobs":0})");
}

// The sampling knobs vLLM users send: min_p, repetition_penalty, min_tokens, logit_bias — parsed,
// range-checked, and remembered as given (generation_config.json fills the rest).
TEST(OpenAiParse, SamplingKnobs) {
  auto c = Completion(R"({"prompt":"x","max_tokens":9,"min_p":0.05,"repetition_penalty":1.2,"min_tokens":4,)"
                      R"("logit_bias":{"17":-100,"3":2.5}})");
  EXPECT_FLOAT_EQ(c.sampling.params.min_p, 0.05f);
  EXPECT_FLOAT_EQ(c.sampling.params.repetition_penalty, 1.2f);
  EXPECT_EQ(c.sampling.params.min_tokens, 4);
  EXPECT_EQ(c.sampling.bias_ids, (std::vector<int32_t>{3, 17}));
  EXPECT_EQ(c.sampling.bias_values, (std::vector<float>{2.5f, -100.0f}));
  EXPECT_EQ(c.sampling.given, SamplingOptions::kMinP | SamplingOptions::kRepetitionPenalty);
  auto d = Completion(R"({"prompt":"x","temperature":0.3,"top_k":5})");
  EXPECT_EQ(d.sampling.given, SamplingOptions::kTemperature | SamplingOptions::kTopK);
  EXPECT_FLOAT_EQ(d.sampling.params.repetition_penalty, 1.0f);
  CompletionError(",\"min_p\":1.5", "min_p");
  CompletionError(",\"repetition_penalty\":0", "repetition_penalty");
  CompletionError(",\"min_tokens\":-1", "min_tokens");
  CompletionError(",\"max_tokens\":3,\"min_tokens\":4", "min_tokens");
  CompletionError(",\"logit_bias\":{\"x\":1}", "logit_bias");
  CompletionError(",\"logit_bias\":{\"-1\":1}", "logit_bias");
  CompletionError(",\"logit_bias\":{\"5\":101}", "logit_bias");
  CompletionError(",\"logit_bias\":{\"5\":\"1\"}", "logit_bias");
  CompletionError(",\"logit_bias\":{\"5\":1,\"05\":2}", "logit_bias");
  CompletionError(",\"logit_bias\":[1]", "logit_bias");
  std::string big = ",\"logit_bias\":{";
  for (int i = 0; i <= kMaxLogitBias; ++i) big += (i ? ",\"" : "\"") + std::to_string(i) + "\":1";
  CompletionError(big + "}", "logit_bias");
}

TEST(OpenAiParse, Logprobs) {
  EXPECT_EQ(Completion(R"({"prompt":"x"})").sampling.logprobs, -1);
  EXPECT_EQ(Completion(R"({"prompt":"x","logprobs":0})").sampling.logprobs, 0);
  EXPECT_EQ(Completion(R"({"prompt":"x","logprobs":5})").sampling.logprobs, 5);
  CompletionError(",\"logprobs\":21", "logprobs");
  CompletionError(",\"logprobs\":true", "logprobs");
  auto chat = [](const std::string& extra) {
    auto r = ParseChatRequest(std::string(kUserHi) + extra + "}");
    EXPECT_TRUE(std::holds_alternative<ChatRequest>(r)) << extra;
    return std::holds_alternative<ChatRequest>(r) ? std::get<ChatRequest>(r).sampling.logprobs : -2;
  };
  EXPECT_EQ(chat(""), -1);
  EXPECT_EQ(chat(",\"logprobs\":false"), -1);
  EXPECT_EQ(chat(",\"logprobs\":true"), 0);
  EXPECT_EQ(chat(",\"logprobs\":true,\"top_logprobs\":20"), 20);
}

// The logprobs object, both shapes, from raw token bytes (one a lone UTF-8 lead byte).
TEST(OpenAiResponse, LogprobsJson) {
  const std::vector<TokenLogprob> entries = {{7, -0.25f, {7, 9}, {-0.25f, -2.0f}}, {9, -INFINITY, {}, {}}};
  auto bytes = [](int32_t id) { return id == 7 ? std::string("hi") : std::string("\xE2"); };
  int64_t offset = 0;
  const json chat = json::parse(LogprobsJson(true, entries, bytes, &offset));
  EXPECT_EQ(chat["content"][0]["token"], "hi");
  EXPECT_EQ(chat["content"][0]["logprob"], -0.25);
  EXPECT_EQ(chat["content"][0]["bytes"], json::array({104, 105}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], "\xEF\xBF\xBD");
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["bytes"], json::array({226}));
  EXPECT_EQ(chat["content"][1]["logprob"], -9999.0);
  const json comp = json::parse(LogprobsJson(false, entries, bytes, &offset));
  EXPECT_EQ(comp["tokens"], json::array({"hi", "\xEF\xBF\xBD"}));
  EXPECT_EQ(comp["token_logprobs"], json::array({-0.25, -9999.0}));
  EXPECT_EQ(comp["top_logprobs"][0]["hi"], -0.25);
  EXPECT_EQ(comp["text_offset"], json::array({0, 2}));
  EXPECT_EQ(offset, 3);
}

TEST(OpenAiParse, StreamOptions) {
  CompletionError(",\"stream_options\":{\"include_usage\":true}", "stream_options");
  CompletionError(",\"stream\":true,\"stream_options\":[]", "stream_options");
  CompletionError(",\"stream\":true,\"stream_options\":{\"include_usage\":1}", "stream_options.include_usage");
  EXPECT_FALSE(Completion("{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{}}").include_usage);
}

TEST(OpenAiParse, BodyErrors) {
  auto e = ExpectError(ParseCompletionRequest, "{\"prompt\": tru}", "");
  EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("column"), std::string::npos) << e.message;  // says where
  EXPECT_EQ(e.message.find("json.exception"), std::string::npos) << e.message;
  ExpectError(ParseCompletionRequest, "", "");
  auto overflow = ExpectError(ParseCompletionRequest, "{\"prompt\":\"x\",\"temperature\":1e400}", "");
  EXPECT_NE(overflow.message.find("1e400"), std::string::npos) << overflow.message;
  ExpectError(ParseCompletionRequest, "[1,2]", "");
  ExpectError(ParseChatRequest, "\"str\"", "");
  ExpectError(ParseCompletionRequest, "{\"prompt\":\"x\"} trailing", "");
  // Invalid UTF-8 inside a request string is a JSON error, reported and renderable.
  auto bad = ExpectError(ParseCompletionRequest, std::string("{\"prompt\":\"\xff\xfe\"}"), "");
  EXPECT_TRUE(json::accept(ErrorBody(bad)));
}

TEST(OpenAiParse, DeepNestingIsRejectedBeforeParsing) {
  std::string deep(100000, '[');
  auto e = ExpectError(ParseCompletionRequest, "{\"prompt\":" + deep, "");
  EXPECT_NE(e.message.find("nested"), std::string::npos);
  ExpectError(ParseChatRequest, "{\"messages\":" + deep + std::string(100000, ']') + "}", "");
  // Brackets inside strings do not count, and 64 levels are fine.
  Completion("{\"prompt\":\"" + deep + "\\\"" + deep + "\"}");
  std::string ok = "{\"prompt\":\"x\",\"extra\":" + std::string(kMaxJsonDepth - 1, '[') +
                   std::string(kMaxJsonDepth - 1, ']') + "}";
  Completion(ok);
  ExpectError(ParseCompletionRequest,
              "{\"prompt\":\"x\",\"extra\":" + std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']') + "}",
              "");
}

TEST(OpenAiParse, HugeBodiesDoNotCrash) {
  std::string ids = "{\"prompt\":[";
  for (int i = 0; i < 200000; ++i) ids += (i ? ",7" : "7");
  ids += "]}";
  EXPECT_EQ(std::get<std::vector<int32_t>>(Completion(ids).prompt).size(), 200000u);
  std::string stops = "{\"prompt\":\"x\",\"stop\":[";
  for (int i = 0; i < 100000; ++i) stops += (i ? ",\"s\"" : "\"s\"");
  CompletionError(stops.substr(13) + "]", "stop");
  std::string long_string = "{\"prompt\":\"x\",\"temperature\":\"" + std::string(1 << 20, 'a') + "\"}";
  auto e = ExpectError(ParseCompletionRequest, long_string, "temperature");
  EXPECT_LT(e.message.size(), 200u);
}

TEST(OpenAiParse, ChatMessagesAndDefaults) {
  ChatRequest r = Chat(std::string(kUserHi) + "}");
  EXPECT_EQ(r.messages.size(), 1u);
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_TRUE(r.tools.is_null());
  EXPECT_TRUE(r.chat_template_kwargs.is_null());
  EXPECT_EQ(r.sampling.max_tokens, -1);

  r = Chat(R"({"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},)"
           R"({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"name":"bob"},)"
           R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",)"
           R"("function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],)"
           R"("tools":[{"type":"function","function":{"name":"f","parameters":{}}}],)"
           R"("chat_template_kwargs":{"enable_thinking":false},"add_generation_prompt":false,)"
           R"("max_tokens":5,"max_completion_tokens":9,"tool_choice":"auto","logprobs":false})");
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[2]["content"], "a\nb");  // text parts flattened as vLLM does
  EXPECT_EQ(r.messages[2]["name"], "bob");      // other keys kept for the template
  EXPECT_TRUE(r.messages[3]["content"].is_null());
  EXPECT_EQ(r.messages[3]["tool_calls"][0]["id"], "c1");
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);
  EXPECT_FALSE(r.add_generation_prompt);
  EXPECT_EQ(r.sampling.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_EQ(Chat(std::string(kUserHi) + ",\"max_tokens\":5}").sampling.max_tokens, 5);
  EXPECT_EQ(Chat(std::string(kUserHi) + ",\"max_completion_tokens\":6}").sampling.max_tokens, 6);
}

TEST(OpenAiParse, ChatValidation) {
  ChatError("{}", "messages");
  ChatError("{\"messages\":null}", "messages");
  ChatError("{\"messages\":[]}", "messages");
  ChatError("{\"messages\":{}}", "messages");
  ChatError("{\"messages\":[\"hi\"]}", "messages[0]");
  ChatError(R"({"messages":[{"role":"user","content":"a"},{"content":"b"}]})", "messages[1].role");
  ChatError(R"({"messages":[{"role":"user","content":"a"},{"role":7,"content":"b"}]})", "messages[1].role");
  ChatError(R"({"messages":[{"role":"user","content":"a"},{"role":"u","content":"b"},{}]})", "messages[1].role");
  ChatError(R"({"messages":[{"role":"user"}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":null}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"assistant","content":null}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"assistant","tool_calls":[]}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":5}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})",
            "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":["text"]}]})", "messages[0].content");
  ChatError(R"({"messages":[{"role":"user","content":"a","name":3}]})", "messages[0].name");
  ChatError(R"({"messages":[{"role":"assistant","content":"a","tool_calls":{}}]})", "messages[0].tool_calls");
  ChatError(std::string(kUserHi) + ",\"tools\":{}}", "tools");
  ChatError(std::string(kUserHi) + ",\"tools\":[{\"type\":\"retrieval\"}]}", "tools[0]");
  ChatError(std::string(kUserHi) + ",\"tools\":[{\"type\":\"function\",\"function\":{}}]}", "tools[0].function.name");
  ChatError(std::string(kUserHi) + ",\"chat_template_kwargs\":[]}", "chat_template_kwargs");
  // Keys that would replace what shoal validated or sets, or shadow the template's built-ins.
  for (const char* key : {"messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token",
                          "range", "namespace", "dict", "strftime_now", "raise_exception"}) {
    SCOPED_TRACE(key);
    ApiError e = ChatError(std::string(kUserHi) + ",\"chat_template_kwargs\":{\"enable_thinking\":true,\"" + key +
                               "\":[]}}",
                           std::string("chat_template_kwargs.") + key);
    EXPECT_NE(e.message.find("reserved"), std::string::npos) << e.message;
  }
  ChatError(std::string(kUserHi) + ",\"add_generation_prompt\":\"yes\"}", "add_generation_prompt");
  ChatError(std::string(kUserHi) + ",\"max_completion_tokens\":0}", "max_completion_tokens");
  ChatError(std::string(kUserHi) + ",\"temperature\":3}", "temperature");
  ChatError(std::string(kUserHi) + ",\"logprobs\":1}", "logprobs");
  ChatError(std::string(kUserHi) + ",\"top_logprobs\":2}", "top_logprobs");
  ChatError(std::string(kUserHi) + ",\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs");
  ChatError(std::string(kUserHi) + ",\"top_logprobs\":2}", "top_logprobs");
  ChatError(std::string(kUserHi) + ",\"n\":-1}", "n");
  EXPECT_EQ(Chat(std::string(kUserHi) + ",\"n\":3}").sampling.n, 3);
  // tool_choice: forced calls need tools, a named one must be among them (vLLM's checks).
  ChatError(std::string(kUserHi) + ",\"tool_choice\":\"required\"}", "tools");
  ChatError(std::string(kUserHi) + ",\"tools\":[],\"tool_choice\":\"required\"}", "tools");
  const std::string tools = ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
  EXPECT_EQ(Chat(std::string(kUserHi) + tools + ",\"tool_choice\":\"required\"}").tool_choice, ToolChoice::kRequired);
  const ChatRequest named =
      Chat(std::string(kUserHi) + tools + ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
           "\"parallel_tool_calls\":false}");
  EXPECT_EQ(named.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(named.tool_choice_name, "f");
  EXPECT_FALSE(named.parallel_tool_calls);
  EXPECT_EQ(Chat(std::string(kUserHi) + tools + ",\"tool_choice\":\"none\"}").tool_choice, ToolChoice::kNone);
  ChatError(std::string(kUserHi) + tools + ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", "tool_choice");
  ChatError(std::string(kUserHi) + tools + ",\"tool_choice\":{\"type\":\"function\"}}", "tool_choice");
  ChatError(std::string(kUserHi) + tools + ",\"tool_choice\":\"any\"}", "tool_choice");
  ChatError(std::string(kUserHi) + tools + ",\"tool_choice\":3}", "tool_choice");
  ChatError(std::string(kUserHi) + tools + ",\"parallel_tool_calls\":\"no\"}", "parallel_tool_calls");
  ChatError(std::string(kUserHi) + ",\"stop\":[1]}", "stop");
  ChatError(std::string(kUserHi) + ",\"stream_options\":{\"include_usage\":true}}", "stream_options");
  EXPECT_TRUE(Chat(std::string(kUserHi) + ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}")
                  .include_usage);
}

TEST(OpenAiResponse, ErrorBodyShape) {
  ApiError e{429, "queue is full", "rate_limit_error", "", "queue_full"};
  json j = json::parse(ErrorBody(e));
  ASSERT_EQ(j.size(), 1u);
  const json& inner = j["error"];
  EXPECT_EQ(inner.size(), 4u);
  EXPECT_EQ(inner["message"], "queue is full");
  EXPECT_EQ(inner["type"], "rate_limit_error");
  EXPECT_TRUE(inner["param"].is_null());
  EXPECT_EQ(inner["code"], "queue_full");
  json with_param = json::parse(ErrorBody(InvalidRequest("bad", "temperature")));
  EXPECT_EQ(with_param["error"]["param"], "temperature");
  EXPECT_TRUE(with_param["error"]["code"].is_null());
  EXPECT_EQ(EventJson(ErrorEvent(e)), j);
}

TEST(OpenAiResponse, FromStatus) {
  EXPECT_EQ(FromStatus(InvalidArgument("x")).http_status, 400);
  EXPECT_EQ(FromStatus(NotFound("x")).http_status, 404);
  EXPECT_EQ(FromStatus(ResourceExhausted("x")).http_status, 429);
  EXPECT_EQ(FromStatus(Unavailable("x")).http_status, 503);
  ApiError e = FromStatus(Internal("broken"));
  EXPECT_EQ(e.http_status, 500);
  EXPECT_EQ(e.type, "server_error");
  EXPECT_EQ(e.message, "broken");
}

TEST(OpenAiResponse, Completion) {
  json j = json::parse(CompletionResponse("cmpl-1", 1700000000, "m", "Hi", "length", Usage{3, 2}, nullptr, nullptr));
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "m");
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["text"], "Hi");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_FALSE(c.contains("token_ids"));
  EXPECT_EQ(j["usage"], json::parse(R"({"prompt_tokens":3,"completion_tokens":2,"total_tokens":5})"));

  const std::vector<int32_t> p{1, 2, 3}, t{9, 8};
  j = json::parse(CompletionResponse("cmpl-2", 1, "m", "x", "stop", Usage{3, 2}, &p, &t));
  EXPECT_EQ(j["choices"][0]["prompt_token_ids"], json(p));
  EXPECT_EQ(j["choices"][0]["token_ids"], json(t));
}

TEST(OpenAiResponse, Chat) {
  const std::vector<int32_t> p{1}, t{2};
  json j = json::parse(ChatResponse("chatcmpl-1", 5, "m", "Hello", "stop", Usage{4, 1}, &p, &t));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 5);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["message"], json::parse(R"({"role":"assistant","content":"Hello"})"));
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_EQ(c["token_ids"], json(t));
  EXPECT_EQ(j["prompt_token_ids"], json(p));  // top level for chat, as vLLM does
  EXPECT_EQ(j["usage"]["total_tokens"], 5);
  j = json::parse(ChatResponse("chatcmpl-2", 5, "m", "", "", Usage{}, nullptr, nullptr));
  EXPECT_TRUE(j["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(j.contains("prompt_token_ids"));
}

TEST(OpenAiResponse, InvalidUtf8IsReplacedNotThrown) {
  const std::string bad = "ok \xe4\xb8";  // a cut-off 3-byte sequence
  std::string body;
  EXPECT_NO_THROW(body = CompletionResponse("cmpl-1", 1, "m", bad, "stop", Usage{1, 1}, nullptr, nullptr));
  json j = json::parse(body);
  EXPECT_EQ(j["choices"][0]["text"].get<std::string>().rfind("ok ", 0), 0u);
  EXPECT_NE(j["choices"][0]["text"].get<std::string>().find("\xef\xbf\xbd"), std::string::npos);  // U+FFFD
  EXPECT_TRUE(json::accept(ChatResponse("c", 1, "m\xff", bad, "stop", Usage{}, nullptr, nullptr)));
  StreamContext ctx{StreamContext::Endpoint::kChat, "c", 1, "m", false};
  EXPECT_NO_THROW(EventJson(ChatChunk(ctx, "\xc3")));
  EXPECT_NO_THROW(EventJson(CompletionChunk(ctx, "\x80", "")));
  EXPECT_TRUE(json::accept(ErrorBody(InvalidRequest("bad \xff", "p"))));
}

TEST(OpenAiStream, CompletionChunks) {
  StreamContext ctx{StreamContext::Endpoint::kCompletion, "cmpl-9", 77, "m", false};
  const std::vector<int32_t> p{1, 2}, t{3};
  json j = EventJson(CompletionChunk(ctx, "He", "", &p, &t));
  EXPECT_EQ(j["id"], "cmpl-9");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 77);
  EXPECT_EQ(j["model"], "m");
  EXPECT_FALSE(j.contains("usage"));
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["text"], "He");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_TRUE(c["finish_reason"].is_null());
  EXPECT_EQ(c["prompt_token_ids"], json(p));
  EXPECT_EQ(c["token_ids"], json(t));
  j = EventJson(CompletionChunk(ctx, "", "stop"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(j["choices"][0].contains("token_ids"));

  ctx.include_usage = true;
  j = EventJson(CompletionChunk(ctx, "x", ""));
  ASSERT_TRUE(j.contains("usage"));
  EXPECT_TRUE(j["usage"].is_null());
  j = EventJson(UsageChunk(ctx, Usage{10, 4}));
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(j["choices"].is_array());
  EXPECT_TRUE(j["choices"].empty());
  EXPECT_EQ(j["usage"], json::parse(R"({"prompt_tokens":10,"completion_tokens":4,"total_tokens":14})"));
  EXPECT_EQ(std::string(kDoneEvent), "data: [DONE]\n\n");
}

TEST(OpenAiStream, ChatChunks) {
  StreamContext ctx{StreamContext::Endpoint::kChat, "chatcmpl-9", 8, "m", true};
  const std::vector<int32_t> p{5}, t{6, 7};
  json role = EventJson(ChatRoleChunk(ctx, &p));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(role["prompt_token_ids"], json(p));
  EXPECT_TRUE(role["usage"].is_null());

  json content = EventJson(ChatChunk(ctx, "Hel", &t));
  EXPECT_EQ(content["choices"][0]["delta"], json::parse(R"({"content":"Hel"})"));
  EXPECT_EQ(content["choices"][0]["token_ids"], json(t));
  EXPECT_TRUE(content["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(content["choices"][0]["logprobs"].is_null());

  json fin = EventJson(ChatFinishChunk(ctx, "length"));
  EXPECT_TRUE(fin["choices"][0]["delta"].is_object());
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(fin["id"], "chatcmpl-9");

  json usage = EventJson(UsageChunk(ctx, Usage{2, 3}));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 5);

  ctx.include_usage = false;
  EXPECT_FALSE(EventJson(ChatChunk(ctx, "x")).contains("usage"));
  // Newlines in text are escaped, so an event stays one line.
  EXPECT_EQ(EventJson(ChatChunk(ctx, "a\nb\n\n"))["choices"][0]["delta"]["content"], "a\nb\n\n");
}

TEST(OpenAiResponse, Models) {
  json j = json::parse(ModelsResponse({"a", "b"}, 123, 4096));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][1], json::parse(R"({"id":"b","object":"model","created":123,"owned_by":"shoal","root":"b","max_model_len":4096})"));
  EXPECT_TRUE(json::parse(ModelsResponse({}, 1, 1))["data"].empty());
}

}  // namespace
}  // namespace shoal::api

namespace shoal::api {
namespace {

// StreamWriter writes JSON by hand: its strings must read back exactly, byte for byte what
// nlohmann writes for valid UTF-8, and stay valid JSON for invalid bytes.
TEST(OpenAiStream, HandWrittenStringsMatchNlohmann) {
  std::string all_controls;
  for (int c = 0; c < 0x20; ++c) all_controls.push_back(static_cast<char>(c));
  const std::vector<std::string> texts = {"", "plain", "quote \" backslash \\ slash /", all_controls,
                                          "\x7f del", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "a\nb\r\n\tc"};
  for (const std::string& t : texts) {
    std::string mine;
    AppendJsonString(&mine, t);
    EXPECT_EQ(mine, json(t).dump()) << "for " << json(t).dump();
  }
  for (const std::string& bad : {std::string("\xff"), std::string("ok\xc3"), std::string("\xed\xa0\x80 surrogate"),
                                std::string("\xc0\xaf overlong")}) {
    std::string mine;
    AppendJsonString(&mine, bad);
    ASSERT_TRUE(json::accept(mine)) << mine;
    EXPECT_NE(json::parse(mine).get<std::string>().find("\xef\xbf\xbd"), std::string::npos);
  }
  // A whole chunk: the same fields, in the same order, as a JSON tree would give.
  StreamContext ctx{StreamContext::Endpoint::kCompletion, "cmpl-\"x\"", 5, "m\n", true};
  const std::string event = CompletionChunk(ctx, "t\"", "length");
  const json want = json::parse(R"({"id":"cmpl-\"x\"","object":"text_completion","created":5,"model":"m\n",)"
                                R"("choices":[{"index":0,"text":"t\"","logprobs":null,"finish_reason":"length"}],"usage":null})");
  EXPECT_EQ(event, "data: " + want.dump() + "\n\n");
}

}  // namespace
}  // namespace shoal::api
