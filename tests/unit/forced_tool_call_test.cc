// Forced tool calls (coordinator/forced_tool_call.h): the schema built from the tools, and the calls
// read back out of output the schema holds, streamed in any pieces or whole.
#include "coordinator/forced_tool_call.h"
#include "coordinator/chat_output.h"

#include <gtest/gtest.h>

#include <random>

#include "grammar/json_matcher.h"
#include "grammar/json_schema.h"

namespace shoal::coord {
namespace {

using json = nlohmann::ordered_json;
using api::ToolChoice;

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string"}, "when": {"$ref": "#/$defs/day"}}, "required": ["city"],
    "$defs": {"day": {"enum": ["today", "tomorrow"]}}}}},
  {"type": "function", "function": {"name": "ping"}},
  {"type": "function", "function": {"name": "count", "parameters": {"type": "integer"}}}])");

std::string Schema(ToolChoice choice, const std::string& name = "", bool parallel = true, const json& tools = kTools) {
  auto s = ForcedToolSchema(tools, choice, name, parallel);
  if (auto* e = std::get_if<api::ApiError>(&s)) {
    ADD_FAILURE() << e->message;
    return "";
  }
  return std::get<std::string>(s);
}

bool Accepts(const std::string& schema, const std::string& text) {
  auto g = grammar::CompileJsonSchema(schema, "s");
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  grammar::JsonMatcher m(*g);
  return m.Feed(text) && m.accepting();
}

TEST(ForcedToolSchema, NamedIsTheFunctionsParameters) {
  EXPECT_EQ(json::parse(Schema(ToolChoice::kNamed, "get_weather")), kTools[0]["function"]["parameters"]);
  EXPECT_EQ(json::parse(Schema(ToolChoice::kNamed, "ping")), json::parse(R"({"type":"object","properties":{}})"));
  EXPECT_TRUE(Accepts(Schema(ToolChoice::kNamed, "get_weather"), R"({"city": "Oslo", "when": "today"})"));
  EXPECT_FALSE(Accepts(Schema(ToolChoice::kNamed, "get_weather"), R"({"when": "today"})"));
  auto unknown = ForcedToolSchema(kTools, ToolChoice::kNamed, "nope", true);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(unknown));
  EXPECT_EQ(std::get<api::ApiError>(unknown).param, "tool_choice");
}

TEST(ForcedToolSchema, RequiredIsAnArrayOfCallsWithDefinitionsAtTheTop) {
  const std::string s = Schema(ToolChoice::kRequired);
  const json j = json::parse(s);
  EXPECT_EQ(j["minItems"], 1);
  EXPECT_FALSE(j.contains("maxItems"));
  EXPECT_EQ(j["$defs"]["day"], kTools[0]["function"]["parameters"]["$defs"]["day"]);
  EXPECT_TRUE(Accepts(s, R"([{"name": "get_weather", "parameters": {"city": "Oslo", "when": "tomorrow"}}, {"name": "ping", "parameters": {}}, {"name":"count","parameters":7}])"));
  EXPECT_FALSE(Accepts(s, "[]"));
  EXPECT_FALSE(Accepts(s, R"([{"name": "other", "parameters": {}}])"));
  EXPECT_FALSE(Accepts(s, R"([{"name": "ping"}])"));
  EXPECT_FALSE(Accepts(s, R"([{"name": "get_weather", "parameters": {"city": "Oslo", "when": "monday"}}])"));
  const std::string one = Schema(ToolChoice::kRequired, "", /*parallel=*/false);
  EXPECT_TRUE(Accepts(one, R"([{"name": "ping", "parameters": {}}])"));
  EXPECT_FALSE(Accepts(one, R"([{"name": "ping", "parameters": {}}, {"name": "ping", "parameters": {}}])"));
}

TEST(ForcedToolSchema, SchemasItCannotEnforceAreA400NamingTheTool) {
  json tools = kTools;
  tools[2]["function"]["parameters"] = json::parse(R"({"type": "string", "pattern": "^[0-9]+$"})");
  for (ToolChoice c : {ToolChoice::kRequired, ToolChoice::kNamed}) {
    auto r = ForcedToolSchema(tools, c, "count", true);
    ASSERT_TRUE(std::holds_alternative<api::ApiError>(r));
    const api::ApiError& e = std::get<api::ApiError>(r);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.param, "tools[2].function.parameters");
    EXPECT_NE(e.message.find("tools[2].function.parameters.pattern"), std::string::npos) << e.message;
  }
  // A definition two tools give differently cannot be one top-level definition.
  tools = kTools;
  tools[1]["function"]["parameters"] = json::parse(R"({"type": "object", "properties": {"d": {"$ref": "#/$defs/day"}},
                                                       "$defs": {"day": {"type": "integer"}}})");
  auto r = ForcedToolSchema(tools, ToolChoice::kRequired, "", true);
  ASSERT_TRUE(std::holds_alternative<api::ApiError>(r));
  EXPECT_EQ(std::get<api::ApiError>(r).param, "tools[1].function.parameters.$defs");
}

TEST(ForcedToolSchema, EmptyParametersSelfReferencesAndAnnotations) {
  const json tools = json::parse(R"([
    {"type": "function", "function": {"name": "e", "parameters": {}}},
    {"type": "function", "function": {"name": "tree", "parameters": {"type": "object", "description": "a tree",
      "properties": {"label": {"type": "string", "description": "its label", "examples": ["x"]},
                     "description": {"type": "string"},
                     "children": {"type": "array", "items": {"$ref": "#"}}}}}}])");
  // {} parameters: an object with no properties (vLLM's reading), not any value.
  const std::string e = Schema(ToolChoice::kNamed, "e", true, tools);
  EXPECT_TRUE(Accepts(e, "{}"));
  EXPECT_FALSE(Accepts(e, "5"));
  // Annotations do not travel; a property named "description" does.
  const std::string tree = Schema(ToolChoice::kNamed, "tree", true, tools);
  EXPECT_EQ(tree.find("a tree"), std::string::npos);
  EXPECT_EQ(tree.find("its label"), std::string::npos);
  EXPECT_NE(tree.find("\"description\":{\"type\":\"string\"}"), std::string::npos) << tree;
  EXPECT_TRUE(Accepts(tree, R"({"label":"a","children":[{"label":"b"}]})"));
  // Under "required", "#" in a tool's parameters still means those parameters, not the call array.
  const std::string req = Schema(ToolChoice::kRequired, "", true, tools);
  EXPECT_TRUE(Accepts(req, R"([{"name":"tree","parameters":{"label":"a","children":[{"label":"b","children":[]}]}}])"));
  EXPECT_FALSE(Accepts(req, R"([{"name":"tree","parameters":{"children":[[{"name":"e","parameters":{}}]]}}])"));
  EXPECT_TRUE(Accepts(req, R"([{"name":"e","parameters":{}}])"));
}

// The calls a text gives when fed in pieces at the given cut points: the deltas joined per call.
struct Read {
  std::vector<ToolCall> calls;  // from the deltas
  std::vector<ToolCall> whole;  // reader.calls()
  bool complete = false;
  int firsts = 0;
};

Read ReadInPieces(ToolChoice choice, const std::string& name, const std::string& text, std::mt19937_64& rng) {
  ForcedToolCallReader reader(choice, name);
  Read r;
  size_t at = 0;
  while (at < text.size()) {
    const size_t n = std::min<size_t>(1 + rng() % 7, text.size() - at);
    std::vector<ForcedToolCallReader::Delta> deltas;
    reader.Feed(std::string_view(text).substr(at, n), &deltas);
    at += n;
    for (const auto& d : deltas) {
      if (d.first) {
        ++r.firsts;
        EXPECT_EQ(static_cast<size_t>(d.index), r.calls.size());
        r.calls.push_back({d.name, ""});
      }
      EXPECT_LT(static_cast<size_t>(d.index), r.calls.size());
      r.calls[static_cast<size_t>(d.index)].arguments += d.arguments;
    }
  }
  r.whole = reader.calls();
  r.complete = reader.complete();
  return r;
}

TEST(ForcedToolCallReader, StreamedPiecesAddUpToTheWholeCalls) {
  std::mt19937_64 rng(5);
  const std::string text =
      " [\n  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Os\\\"lo}\", \"when\": \"today\"} },"
      "{\"name\":\"count\",\"parameters\":-12 },{\"name\" :\"ping\" , \"parameters\" :\n {}}]";
  for (int run = 0; run < 50; ++run) {
    const Read r = ReadInPieces(ToolChoice::kRequired, "", text, rng);
    ASSERT_TRUE(r.complete);
    ASSERT_EQ(r.calls.size(), 3u);
    EXPECT_EQ(r.firsts, 3);
    EXPECT_EQ(r.calls[0].name, "get_weather");
    EXPECT_EQ(r.calls[0].arguments, R"({"city": "Os\"lo}", "when": "today"})");
    EXPECT_EQ(r.calls[1].name, "count");
    EXPECT_EQ(r.calls[1].arguments, "-12");
    EXPECT_EQ(r.calls[2].name, "ping");
    EXPECT_EQ(r.calls[2].arguments, "{}");
    ASSERT_EQ(r.whole.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(r.whole[i].name, r.calls[i].name);
      EXPECT_EQ(r.whole[i].arguments, r.calls[i].arguments);
    }
  }
  // Cut short (max_tokens): not complete, so the whole response keeps the text as content.
  const Read cut = ReadInPieces(ToolChoice::kRequired, "", text.substr(0, 60), rng);
  EXPECT_FALSE(cut.complete);
  // Named: the whole text is the arguments, the name on the first delta only.
  const Read named = ReadInPieces(ToolChoice::kNamed, "get_weather", R"({"city": "Rome"})", rng);
  EXPECT_TRUE(named.complete);
  EXPECT_EQ(named.firsts, 1);
  ASSERT_EQ(named.calls.size(), 1u);
  EXPECT_EQ(named.calls[0].name, "get_weather");
  EXPECT_EQ(named.calls[0].arguments, R"({"city": "Rome"})");
  EXPECT_EQ(named.whole[0].arguments, named.calls[0].arguments);
}

TEST(ForcedToolCallReader, DeltasJsonAndFinishReason) {
  std::vector<ForcedToolCallReader::Delta> d = {{0, true, "f", "{\"a\""}, {0, false, "", ":1}"}};
  int n = 0;
  const json j = ToolCallDeltasJson(d, [&] { return "call-" + std::to_string(n++); });
  EXPECT_EQ(j, json::parse(R"([{"index":0,"id":"call-0","type":"function","function":{"name":"f","arguments":"{\"a\""}},
                                {"index":0,"function":{"arguments":":1}"}}])"));
  ForcedToolCallReader required(ToolChoice::kRequired, "");
  std::vector<ForcedToolCallReader::Delta> ignored;
  required.Feed(R"([{"name":"f","parameters":{}}])", &ignored);
  EXPECT_EQ(ForcedFinishReason(ToolChoice::kRequired, required, "stop"), "tool_calls");
  EXPECT_EQ(ForcedFinishReason(ToolChoice::kRequired, required, "length"), "length");
  ForcedToolCallReader named(ToolChoice::kNamed, "f");
  EXPECT_EQ(ForcedFinishReason(ToolChoice::kNamed, named, "stop"), "stop");
}

}  // namespace
}  // namespace shoal::coord
