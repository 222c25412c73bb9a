// Tool calls out of a chat's output (coordinator/tool_parser.h), in each family's format as its own
// chat template teaches it; the same result however the text is chunked (every cut, byte by byte);
// malformed calls stay content; the format picked from the fixtures' real templates.
#include "coordinator/tool_parser.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "coordinator/chat_output.h"
#include "tests/unit/fixture_util.h"

namespace shoal::coord {
namespace {

struct Result {
  std::string content;
  std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
  bool operator==(const Result&) const = default;
};

void PrintTo(const Result& r, std::ostream* os) {
  *os << "content '" << r.content << "' calls [";
  for (const auto& [n, a] : r.calls) *os << n << a << " ";
  *os << "]";
}

Result Run(ToolFormat f, const std::vector<std::string>& chunks) {
  ToolCallParser p(f);
  Result r;
  std::vector<ToolCall> calls;
  for (const std::string& c : chunks) p.Feed(c, &r.content, &calls);
  p.Finish(&r.content, &calls);
  for (const ToolCall& c : calls) r.calls.emplace_back(c.name, c.arguments);
  return r;
}

// Streaming: calls rebuilt from their deltas (by index) and the whole ones, in index order.
Result RunStreamed(ToolFormat f, const std::vector<std::string>& chunks, int* pieces = nullptr) {
  ToolCallParser p(f);
  Result r;
  std::vector<ToolCall> calls;
  std::vector<ToolCallDelta> deltas;
  int feeds_with_pieces = 0;
  for (const std::string& c : chunks) {
    std::vector<ToolCallDelta> piece;  // each piece of output gets its own, as a stream's chunks do
    p.Feed(c, &r.content, &calls, &piece);
    feeds_with_pieces += piece.empty() ? 0 : 1;
    deltas.insert(deltas.end(), piece.begin(), piece.end());
  }
  p.Finish(&r.content, &calls, &deltas);
  std::map<int, std::pair<std::string, std::string>> by_index;
  for (const ToolCall& c : calls) {
    EXPECT_EQ(by_index.count(c.index), 0u) << "call " << c.index << " twice";
    by_index[c.index] = {c.name, c.arguments};
  }
  for (const ToolCallDelta& d : deltas) {
    if (d.first) {
      EXPECT_EQ(by_index.count(d.index), 0u) << "call " << d.index << " started twice";
      by_index[d.index].first = d.name;
    }
    EXPECT_EQ(by_index.count(d.index), 1u) << "a piece of call " << d.index << " before its first";
    by_index[d.index].second += d.arguments;
  }
  if (pieces != nullptr) *pieces = feeds_with_pieces;
  for (auto& [i, c] : by_index) r.calls.push_back(c);
  return r;
}

void Expect(ToolFormat f, const std::string& text, const Result& want) {
  EXPECT_EQ(Run(f, {text}), want) << text;
  EXPECT_EQ(RunStreamed(f, {text}), want) << text << " streamed";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    EXPECT_EQ(Run(f, {text.substr(0, cut), text.substr(cut)}), want) << text << " cut at " << cut;
    EXPECT_EQ(RunStreamed(f, {text.substr(0, cut), text.substr(cut)}), want) << text << " streamed, cut at " << cut;
  }
  std::vector<std::string> bytes;
  for (char ch : text) bytes.emplace_back(1, ch);
  EXPECT_EQ(Run(f, bytes), want) << text << " byte by byte";
  EXPECT_EQ(RunStreamed(f, bytes), want) << text << " streamed byte by byte";
}

// Finish is once: a stream flushing a finished choice again must not add text (Mistral's marker and
// Hermes' tag used to be re-appended on every flush).
TEST(ToolParser, FinishTwiceAddsNothing) {
  for (auto [f, text] : {std::pair{ToolFormat::kMistral, std::string("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]")},
                         std::pair{ToolFormat::kHermes, std::string("<tool_call>{\"name\": \"a\", \"argu")}}) {
    ToolCallParser p(f);
    std::string content;
    std::vector<ToolCall> calls;
    p.Feed(text, &content, &calls);
    p.Finish(&content, &calls);
    const std::string once = content;
    const size_t n = calls.size();
    p.Finish(&content, &calls);
    p.Feed("more", &content, &calls);
    p.Finish(&content, &calls);
    EXPECT_EQ(content, once) << text;
    EXPECT_EQ(calls.size(), n) << text;
  }
}

TEST(ToolParser, Hermes) {
  const auto h = ToolFormat::kHermes;
  Expect(h, "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
         {"Let me check.\n", {{"get_weather", R"({"city": "Paris"})"}}});
  Expect(h, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {\"x\": 1}}</tool_call>",
         {"", {{"a", "{}"}, {"b", R"({"x": 1})"}}});
  Expect(h, "No tools needed.", {"No tools needed.", {}});
  Expect(h, "<tool_call>{\"name\": \"a\", \"arguments\": {\"q\": 2}}", {"", {{"a", R"({"q": 2})"}}});  // unterminated last
  Expect(h, "<tool_call>not json</tool_call>", {"<tool_call>not json</tool_call>", {}});  // kept, not lost
  Expect(h, "a <tool_ca", {"a <tool_ca", {}});
  Expect(h, "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 3}\"}</tool_call>", {"", {{"a", R"({"k":3})"}}});
  // Text between calls is content; both calls are found.
  Expect(h, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> and then <tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>\n",
         {" and then ", {{"a", "{}"}, {"b", "{}"}}});
  Expect(h, "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call> done.", {" done.", {{"a", "{}"}}});
  // An object without arguments is not a call; an unterminated one that does not parse keeps its tag.
  Expect(h, "<tool_call>{\"name\": \"a\"}</tool_call>", {"<tool_call>{\"name\": \"a\"}</tool_call>", {}});
  Expect(h, "x<tool_call>{\"name\": \"a\", \"argu", {"x<tool_call>{\"name\": \"a\", \"argu", {}});
}

// Arguments stream in pieces as they arrive (not one delta per whole call), for the JSON formats.
TEST(ToolParser, ArgumentsStreamInPieces) {
  const std::string text = "<tool_call>{\"name\": \"w\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}</tool_call>";
  std::vector<std::string> bytes;
  for (char ch : text) bytes.emplace_back(1, ch);
  int pieces = 0;
  const Result r = RunStreamed(ToolFormat::kHermes, bytes, &pieces);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].second, R"({"city": "Paris", "days": 3})");
  EXPECT_EQ(pieces, static_cast<int>(r.calls[0].second.size()));  // one per byte of the arguments fed
  // String arguments cannot stream (they are escaped): the call comes whole at its end.
  RunStreamed(ToolFormat::kHermes, {"<tool_call>{\"name\": \"a\", \"arguments\": \"{}\"}", "</tool_call>"}, &pieces);
  EXPECT_EQ(pieces, 0);
}

TEST(ToolParser, Mistral) {
  const auto m = ToolFormat::kMistral;
  Expect(m, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {}}]",
         {"", {{"f", R"({"a": 1})"}, {"g", "{}"}}});
  Expect(m, "[TOOL_CALLS]f[ARGS]{\"a\": 1}[TOOL_CALLS]g[ARGS]{}", {"", {{"f", R"({"a": 1})"}, {"g", "{}"}}});
  Expect(m, "Sure: [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]", {"Sure: ", {{"f", "{}"}}});
  Expect(m, "[TOOL_CALLS] [{\"name\": 3}]", {"[TOOL_CALLS] [{\"name\": 3}]", {}});
  Expect(m, "plain", {"plain", {}});
}

TEST(ToolParser, Llama3Json) {
  const auto l = ToolFormat::kLlama3Json;
  Expect(l, "{\"name\": \"f\", \"parameters\": {\"a\": \"b\"}}", {"", {{"f", R"({"a": "b"})"}}});
  Expect(l, "<|python_tag|>{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {\"n\": 2}}",
         {"", {{"f", "{}"}, {"g", R"({"n": 2})"}}});
  Expect(l, "The answer is 4.", {"The answer is 4.", {}});
  Expect(l, "{not a call}", {"{not a call}", {}});
  Expect(l, "{\"name\": \"Bob\", \"age\": 3}", {"{\"name\": \"Bob\", \"age\": 3}", {}});  // an answer, not a call
}

TEST(ToolParser, DeepSeekV3) {
  const auto d = ToolFormat::kDeepSeekV3;
  const std::string call = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Oslo\"}\n```<｜tool▁call▁end｜>";
  Expect(d, "Checking.<｜tool▁calls▁begin｜>" + call + call + "<｜tool▁calls▁end｜>",
         {"Checking.", {{"get_weather", R"({"city": "Oslo"})"}, {"get_weather", R"({"city": "Oslo"})"}}});
  Expect(d, "no calls", {"no calls", {}});
}

TEST(ToolParser, FormatFromTheFixturesRealTemplates) {
  auto fmt = [](const std::string& fixture) {
    std::ifstream in(testing::FixturesDir() + "/" + fixture + "/tokenizer_config.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    return *ParseToolFormat("auto", j.value("chat_template", ""));
  };
  EXPECT_EQ(fmt("qwen3-moe-f32"), ToolFormat::kHermes);
  EXPECT_EQ(fmt("qwen2-moe-f16"), ToolFormat::kHermes);
  EXPECT_EQ(fmt("mixtral-bf16"), ToolFormat::kMistral);
  EXPECT_EQ(fmt("llama4-scout-bf16"), ToolFormat::kLlama3Json);
  EXPECT_EQ(fmt("deepseek-v3-f32"), ToolFormat::kDeepSeekV3);
  EXPECT_EQ(*ParseToolFormat("none", "<tool_call>"), ToolFormat::kNone);
  EXPECT_EQ(*ParseToolFormat("mistral", ""), ToolFormat::kMistral);
  EXPECT_FALSE(ParseToolFormat("pythonic", "").ok());
}

// Reasoning first, tool calls out of what follows: a Qwen3 answer that thinks, then calls.
TEST(ChatOutput, ReasoningThenToolCallsAndTheirJson) {
  ChatOutputParser p(ReasoningFormat::kQwen3, ToolFormat::kHermes);
  auto a = p.Feed("<think>need weather</think>\n\n<tool_call>{\"name\": \"w\", \"argu", false);
  auto b = p.Feed("ments\": {\"c\": 1}}</tool_call>", true);
  EXPECT_EQ(a.reasoning, "need weather");
  EXPECT_EQ(a.content + b.content, "\n\n");
  ASSERT_EQ(b.calls.size(), 1u);
  EXPECT_TRUE(p.saw_calls());
  int n = 0;
  const auto j = ToolCallsJson(b.calls, true, [&] { return "id" + std::to_string(n++); });
  EXPECT_EQ(j.dump(), R"([{"index":0,"id":"id0","type":"function","function":{"name":"w","arguments":"{\"c\": 1}"}}])");
}

}  // namespace
}  // namespace shoal::coord
