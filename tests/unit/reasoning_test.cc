// Reasoning output (coordinator/reasoning.h): the split of <think>…</think> into reasoning_content and
// content, identical however the text arrives in chunks (every cut point, one byte at a time).
#include "coordinator/reasoning.h"

#include <gtest/gtest.h>

namespace shoal::coord {
namespace {

std::pair<std::string, std::string> Whole(ReasoningFormat f, const std::string& text) {
  ReasoningSplitter s(f);
  std::string r, c;
  s.Feed(text, &r, &c);
  s.Finish(&r, &c);
  return {r, c};
}

void ExpectSplit(ReasoningFormat f, const std::string& text, const std::string& reasoning, const std::string& content) {
  EXPECT_EQ(Whole(f, text), std::make_pair(reasoning, content)) << text;
  // Two chunks at every cut, and byte by byte.
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    ReasoningSplitter s(f);
    std::string r, c;
    s.Feed(text.substr(0, cut), &r, &c);
    s.Feed(text.substr(cut), &r, &c);
    s.Finish(&r, &c);
    EXPECT_EQ(r, reasoning) << text << " cut at " << cut;
    EXPECT_EQ(c, content) << text << " cut at " << cut;
  }
  ReasoningSplitter s(f);
  std::string r, c;
  for (char ch : text) s.Feed(std::string(1, ch), &r, &c);
  s.Finish(&r, &c);
  EXPECT_EQ(std::make_pair(r, c), std::make_pair(reasoning, content)) << text << " byte by byte";
}

TEST(Reasoning, Qwen3) {
  const auto q = ReasoningFormat::kQwen3;
  ExpectSplit(q, "<think>\nLet me add.\n</think>\n\nThe sum is 4.", "\nLet me add.\n", "\n\nThe sum is 4.");
  ExpectSplit(q, "The sum is 4.", "", "The sum is 4.");  // enable_thinking: false
  ExpectSplit(q, "<think>still thinking when max_tokens hit", "still thinking when max_tokens hit", "");
  ExpectSplit(q, "<thin", "", "<thin");  // never decided: content
  ExpectSplit(q, "<think></think>", "", "");
  ExpectSplit(q, "a <think>b</think>", "", "a <think>b</think>");  // only an opening tag opens it
  ExpectSplit(q, "<think>x</thinking></think>y</think>", "x</thinking>", "y</think>");
}

TEST(Reasoning, DeepSeekR1StartsInsideTheReasoning) {
  const auto d = ReasoningFormat::kDeepSeekR1;
  ExpectSplit(d, "Okay, 2+2.\n</think>\n\n4", "Okay, 2+2.\n", "\n\n4");
  ExpectSplit(d, "<think>Okay.</think>4", "Okay.", "4");  // a written opening tag is dropped
  ExpectSplit(d, "no end tag", "no end tag", "");
  ExpectSplit(d, "</thi", "</thi", "");
}

TEST(Reasoning, NoneIsAllContentAndNamesAreChecked) {
  ExpectSplit(ReasoningFormat::kNone, "<think>a</think>b", "", "<think>a</think>b");
  EXPECT_EQ(*ParseReasoningFormat("qwen3"), ReasoningFormat::kQwen3);
  EXPECT_EQ(*ParseReasoningFormat("none"), ReasoningFormat::kNone);
  EXPECT_EQ(*ParseReasoningFormat(""), ReasoningFormat::kNone);
  EXPECT_FALSE(ParseReasoningFormat("granite").ok());
}

}  // namespace
}  // namespace shoal::coord
