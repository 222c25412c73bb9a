// StopMatcher: what streamed text is released when, where a stop string ends the output, that
// released text never splits a UTF-8 character, and that the work stays linear in the bytes fed even
// with long stop strings.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "coordinator/stop_strings.h"

namespace shoal::coord {
namespace {

TEST(StopMatcher, LongStopStringDoesNotHoldBackUnrelatedText) {
  StopMatcher m({std::string(100, 'x')});
  StopMatcher::Result r = m.Append("hello", false);
  EXPECT_EQ(r.text, "hello");
  EXPECT_FALSE(r.stop);
  EXPECT_EQ(m.held_bytes(), 0u);
  // Only the part that could begin the stop string waits.
  r = m.Append(" xxx", false);
  EXPECT_EQ(r.text, " ");
  EXPECT_EQ(m.held_bytes(), 3u);
}

TEST(StopMatcher, NoStopStringsReleasesEverything) {
  StopMatcher m;
  EXPECT_EQ(m.Append("abc", false).text, "abc");
  EXPECT_EQ(m.Append("", false).text, "");
  EXPECT_EQ(m.Append("def", true).text, "def");
}

TEST(StopMatcher, PartialMatchAcrossPieces) {
  StopMatcher m({"</end>"});
  EXPECT_EQ(m.Append("abc</", false).text, "abc");
  EXPECT_EQ(m.held_bytes(), 2u);
  EXPECT_EQ(m.Append("en", false).text, "");
  StopMatcher::Result r = m.Append("d> and more", false);
  EXPECT_EQ(r.text, "");  // the stop string and what follows it are not released
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 0u);
  // After a match the output is over.
  r = m.Append("ignored", false);
  EXPECT_EQ(r.text, "");
  EXPECT_FALSE(r.stop);
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, PartialMatchThatFailsIsReleased) {
  StopMatcher m({"</end>"});
  EXPECT_EQ(m.Append("x</e", false).text, "x");
  EXPECT_EQ(m.Append("ny", false).text, "</eny");
  EXPECT_EQ(m.held_bytes(), 0u);
  // A partial match pending when the output ends is released.
  EXPECT_EQ(m.Append("ok</en", true).text, "ok</en");
}

TEST(StopMatcher, SelfOverlappingStopString) {
  // "aab" inside "aaaab" starts at 2: the matcher must fall back along the stop string's borders.
  StopMatcher m({"aab"});
  EXPECT_EQ(m.Append("aa", false).text, "");
  StopMatcher::Result r = m.Append("aab", false);
  EXPECT_EQ(r.text, "aa");
  EXPECT_TRUE(r.stop);
}

TEST(StopMatcher, FlushReleasesHeldTextAndForgetsThePartialMatch) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Append("go ST", false).text, "go ");
  EXPECT_EQ(m.Flush(), "ST");
  // "ST" was released, so "OP" no longer completes a stop string.
  StopMatcher::Result r = m.Append("OP", false);
  EXPECT_EQ(r.text, "OP");
  EXPECT_FALSE(r.stop);
}

TEST(StopMatcher, EarliestMatchWins) {
  StopMatcher m({"world", "lo w"});
  StopMatcher::Result r = m.Append("hello world", false);
  EXPECT_EQ(r.text, "hel");
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 1u);

  // Same start: the earlier-listed stop string.
  StopMatcher tie({"abc", "ab"});
  r = tie.Append("xabc", false);
  EXPECT_EQ(r.text, "x");
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 0u);

  // Both complete in the same piece: the one that started earlier wins although it ends later.
  StopMatcher same_piece({"y", "xyz"});
  EXPECT_EQ(same_piece.Append("-x", false).text, "-");
  r = same_piece.Append("yz", false);
  EXPECT_EQ(r.text, "");
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 1u);

  // As before this class existed, the decision is made on the piece where a stop string first
  // completes: a longer one that started earlier but would complete only later does not win.
  StopMatcher earlier_piece({"abcd", "bc"});
  EXPECT_EQ(earlier_piece.Append("ab", false).text, "");
  r = earlier_piece.Append("c", false);
  EXPECT_EQ(r.text, "a");
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 1u);
}

TEST(StopMatcher, EmptyStopStringsAreIgnored) {
  StopMatcher m({"", "z"});
  StopMatcher::Result r = m.Append("abc", false);
  EXPECT_EQ(r.text, "abc");
  EXPECT_FALSE(r.stop);
  r = m.Append("yz", false);
  EXPECT_EQ(r.text, "y");
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 1u);  // indexes count the ignored one, matching the caller's list
}

TEST(StopMatcher, Utf8CharactersSplitAcrossPiecesAreNeverReleasedHalf) {
  StopMatcher m({"zz"});
  EXPECT_EQ(m.Append("a\xC3", false).text, "a");
  EXPECT_EQ(m.Append("\xA9" "b", false).text, "\xC3\xA9" "b");  // é
  // A 4-byte character (U+1F600) in three pieces.
  EXPECT_EQ(m.Append("\xF0\x9F", false).text, "");
  EXPECT_EQ(m.Append("\x98", false).text, "");
  EXPECT_EQ(m.Append("\x80!", false).text, "\xF0\x9F\x98\x80!");
  // Without stop strings too.
  StopMatcher none;
  EXPECT_EQ(none.Append("\xE2\x82", false).text, "");
  EXPECT_EQ(none.Append("\xAC", false).text, "\xE2\x82\xAC");  // €
  // The end of the output releases an unfinished character as it is.
  EXPECT_EQ(none.Append("\xE2", true).text, "\xE2");
}

TEST(StopMatcher, PartialMatchStartingInsideACharacterHoldsTheWholeCharacter) {
  // Not valid UTF-8 on its own: it matches the last two bytes of "€" (E2 82 AC) plus "z".
  StopMatcher m({"\x82\xACz"});
  EXPECT_EQ(m.Append("a\xE2\x82\xAC", false).text, "a");
  EXPECT_EQ(m.Append("!", false).text, "\xE2\x82\xAC!");
}

// Against the obvious reference on random text over a small alphabet (so partial matches abound): after
// each piece, search the whole output so far for every stop string.
TEST(StopMatcher, AgreesWithSearchingTheWholeText) {
  std::mt19937 rng(12345);
  auto random_string = [&](size_t max_len) {
    std::string s(1 + rng() % max_len, 'a');
    for (char& c : s) c = static_cast<char>('a' + rng() % 3);
    return s;
  };
  for (int trial = 0; trial < 2000; ++trial) {
    SCOPED_TRACE(trial);
    std::vector<std::string> stops;
    for (size_t n = 1 + rng() % 4; n > 0; --n) stops.push_back(random_string(6));
    size_t longest = 0;
    for (const std::string& s : stops) longest = std::max(longest, s.size());
    StopMatcher m(stops);
    std::string all, released;
    bool stopped = false;
    for (int piece = 0; piece < 20 && !stopped; ++piece) {
      const std::string text = random_string(4);
      all += text;
      const bool last = piece == 19;
      StopMatcher::Result r = m.Append(text, last);
      released += r.text;
      size_t at = std::string::npos;
      for (const std::string& s : stops) at = std::min(at, all.find(s));
      ASSERT_EQ(r.stop.has_value(), at != std::string::npos) << all;
      if (r.stop) {
        stopped = true;
        EXPECT_EQ(released, all.substr(0, at));
        EXPECT_EQ(all.find(stops[*r.stop]), at);
      } else if (!last) {
        EXPECT_EQ(all.substr(0, released.size()), released);
        EXPECT_EQ(released.size() + m.held_bytes(), all.size());
        EXPECT_LT(m.held_bytes(), longest);
      } else {
        EXPECT_EQ(released, all);
      }
    }
  }
}

TEST(StopMatcher, MatchesPassedOverWhileStoppingIsHeldOff) {
  StopMatcher m({"ab"});
  StopMatcher::Result r = m.Append("xaby", false, /*may_stop=*/false);
  EXPECT_FALSE(r.stop);
  EXPECT_EQ(r.text, "xaby");
  r = m.Append("a", false, /*may_stop=*/false);
  EXPECT_EQ(r.text, "") << "a partial match is still held";
  r = m.Append("bz", false, /*may_stop=*/true);
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(r.text, "");
}

TEST(StopMatcher, WorkIsLinearWithLongStopStrings) {
  // Four 250 KB stop strings that share a 249,999-byte prefix of 'a', fed 10,000 pieces of 'a': every
  // stop string stays one byte short of matching the whole time. Searching the whole held text for
  // each stop on every piece would compare about 10^10 bytes.
  const std::string prefix(249999, 'a');
  StopMatcher m({prefix + "b", prefix + "c", prefix + "d", prefix + "e"});
  const std::string piece(50, 'a');
  size_t fed = 0, released = 0;
  for (int i = 0; i < 10000; ++i) {
    StopMatcher::Result r = m.Append(piece, false);
    ASSERT_FALSE(r.stop);
    fed += piece.size();
    released += r.text.size();
    ASSERT_LE(m.held_bytes(), prefix.size());  // never more than the longest pending partial match
  }
  EXPECT_EQ(m.held_bytes(), prefix.size());
  EXPECT_EQ(released, fed - prefix.size());
  EXPECT_LE(m.comparisons(), 2u * 4u * fed);
  StopMatcher::Result r = m.Append("c", false);
  ASSERT_TRUE(r.stop);
  EXPECT_EQ(*r.stop, 1u);
  EXPECT_EQ(r.text, "");  // the held prefix is the start of the stop string
  EXPECT_LE(m.comparisons(), 2u * 4u * (fed + 1));
}

}  // namespace
}  // namespace shoal::coord
