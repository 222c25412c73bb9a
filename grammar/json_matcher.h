// Byte-at-a-time recognizer of the JSON texts a compiled schema (grammar/json_schema.h) accepts: after
// each byte it knows whether the bytes so far are a prefix of some accepted text, and whether they
// are a whole one. Every prefix it keeps can be completed (strings close, numbers end, required keys
// can still be written), so a generation masked by it never paints itself into a corner.
//
// The state is a small set of alternative stacks (a union, or a key that may be a declared property or
// another one, keeps several until a byte tells them apart), copied by value: copying a matcher is how
// the token mask tries a token without committing to it (grammar/token_constraint.h).
//
// Text accepted: one JSON value, optionally preceded by whitespace, nothing after it. Between tokens,
// runs of at most kMaxWhitespaceRun whitespace bytes; objects write declared properties in the
// schema's order; strings are valid UTF-8 with JSON's escapes, \u surrogates only in pairs; keys of
// other properties (additionalProperties) never a declared name, and escaped only where JSON must
// (so no escape spells a declared name); nesting at most kMaxNesting deep.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "grammar/json_schema.h"

namespace shoal::grammar {

// Alternative stacks kept at once (a union of kMaxUnionLeaves, doubled by a key that may be declared
// or another one). Beyond it the last alternatives are dropped: output stays valid, a rare choice may
// become unavailable.
inline constexpr size_t kMaxAlternatives = 2 * kMaxUnionLeaves;

class JsonMatcher {
 public:
  explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar);

  // False when the byte (or one of the bytes) cannot follow: the matcher is then dead and stays so.
  bool FeedByte(uint8_t byte);
  bool Feed(std::string_view bytes);

  bool dead() const { return ends_.empty(); }
  // The bytes so far are a whole value the schema accepts (the output may end here).
  bool accepting() const;
  // Inside the body of a string in every alternative (not after a backslash or inside a UTF-8
  // sequence): any byte other than '"', '\\', a control byte or an invalid UTF-8 lead byte is
  // accepted by the alternatives with room for it; *room is the most code points one still takes
  // (INT64_MAX when unbounded). The token mask's fast path.
  bool InStringBody(int64_t* room) const;

  bool operator==(const JsonMatcher& o) const { return frames_ == o.frames_ && ends_ == o.ends_; }

 private:
  struct Frame {
    enum class Kind : uint8_t { kRoot, kObject, kKey, kArray, kString, kNumber, kLiteral };
    Kind kind = Kind::kRoot;
    uint8_t phase = 0;
    uint8_t ws = 0;    // whitespace bytes in the current run
    int32_t node = 0;  // schema node (kKey: the object's; a key string: -1)
    // kObject: a = next declared property, b = the node of the value being written.
    // kKey: a = the first declared property the key's bytes still match, b = bytes matched, c = the
    //       last property the key may be (the first required one at or after the object's a).
    // kArray: a = items so far.  kNumber: a = digits in this part.
    // kString: a = code points so far (a key of other properties: b and c as TrackKey says).
    // kLiteral: a = the first literal the bytes still match, b = bytes matched.
    int32_t a = 0, b = 0, c = 0;
    // kString: a \u escape's value so far (low 16 bits); kPendingLow: a high surrogate was written, a
    // \u low one must follow; kInPair: this escape is that low one (its code point already counted).
    int32_t d = 0;
    static constexpr int32_t kPendingLow = 1 << 16, kInPair = 1 << 17;
    bool operator==(const Frame&) const = default;
  };
  using Stack = std::vector<Frame>;

  void Step(Stack& st, uint8_t ch);
  void PushValue(Stack& st, int32_t node, uint8_t ch);
  void PushLeaf(Stack& st, int32_t node, uint8_t ch);
  // Whether a value of `node` started on a stack of `size` frames can still be completed.
  bool Fits(size_t size, int32_t node) const;
  // Whether the object on top of `st` can start another key (one whose value fits).
  bool CanStartKey(const Stack& st) const;
  void StepObject(Stack& st, uint8_t ch);
  void StepKey(Stack& st, uint8_t ch);
  void StepArray(Stack& st, uint8_t ch);
  void StepString(Stack& st, uint8_t ch);
  bool TrackKey(Frame& f, uint8_t ch);
  void StepNumber(Stack& st, uint8_t ch);
  void StepLiteral(Stack& st, uint8_t ch);
  // The top frame's value is complete: pop it and move its parent on.
  void Pop(Stack& st);
  void Emit(const Stack& st);
  bool StackAccepting(const Frame* begin, const Frame* end) const;
  bool RequiredLeft(const Frame& object) const;
  const std::vector<SchemaNode::Property>& Properties(int32_t node) const;
  int32_t Additional(int32_t node) const;

  std::shared_ptr<const JsonGrammar> grammar_;
  const JsonGrammar* g_;
  std::vector<Frame> frames_;  // every alternative's stack, bottom first, one after another
  std::vector<uint32_t> ends_;  // where each alternative's stack ends in frames_
  // Where Emit puts the alternatives a byte leaves (FeedByte's scratch; one matcher per thread at a time).
  static thread_local std::vector<Frame>* t_next_frames;
  static thread_local std::vector<uint32_t>* t_next_ends;
};

}  // namespace shoal::grammar
