// Stop strings over streamed text: decides, as text arrives in pieces, what can be released to the
// client now and whether (and where) a stop string ended the output.
//
// Each stop string keeps a Knuth-Morris-Pratt state, so every byte is examined a bounded number of
// times however the text is split (at most two comparisons per byte per stop string, amortized), and
// only the longest partial match still pending is held back: a 100-byte stop string does not delay
// "hello". What is released never ends inside a UTF-8 character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::coord {

class StopMatcher {
 public:
  StopMatcher() = default;  // no stop strings: text is released as it comes (whole characters only)
  // Empty strings in `stops` are ignored (they would match everywhere; the API rejects them).
  explicit StopMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;            // to release now
    std::optional<size_t> stop;  // index into the stop strings of the one that matched
  };

  // Feeds the next piece of output. On a match the released text ends just before the stop string,
  // which is not released, and neither is anything after it (OpenAI's semantics); among matches
  // completed by this piece the one starting earliest wins, then the lower index. Further input after
  // a match is discarded. `is_final` releases whatever is held back when nothing matched.
  // With `may_stop` false (a request's min_tokens not reached yet) matches completed by this piece are
  // passed over, but partial matches are kept, so a stop string may still end in a later piece.
  Result Append(std::string_view text, bool is_final, bool may_stop = true);
  // Releases and forgets what is held back, for output that ended for another reason (length, EOS).
  std::string Flush();

  size_t held_bytes() const { return held_.size() - held_begin_; }
  // Byte comparisons made while matching (building the tables is not counted). Tests use it to check
  // the work stays linear in the bytes fed.
  uint64_t comparisons() const { return comparisons_; }

 private:
  struct Stop {
    size_t index = 0;  // in the caller's list, which may also hold ignored empty strings
    std::string text;
    // border[i]: length of the longest proper prefix of text[0, i] that is also its suffix.
    std::vector<size_t> border;
    size_t matched = 0;  // length of the longest suffix of the output so far that is a prefix of text
  };

  std::vector<Stop> stops_;
  // The text not released yet is held_[held_begin_, end); the released front is dropped only once it
  // outgrows the rest, so releasing a few bytes never moves a long held tail.
  std::string held_;
  size_t held_begin_ = 0;
  bool stopped_ = false;
  uint64_t comparisons_ = 0;
};

}  // namespace shoal::coord
