#include "grammar/json_matcher.h"

#include <algorithm>
#include <limits>

namespace shoal::grammar {

namespace {

using Kind = SchemaNode::Kind;

bool IsWs(uint8_t ch) { return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r'; }
bool IsDigit(uint8_t ch) { return ch >= '0' && ch <= '9'; }
bool IsHex(uint8_t ch) { return IsDigit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }

// Object phases.
enum : uint8_t { kOpen, kInKey, kAfterKey, kAfterColon, kInValue, kAfterValue, kAfterComma };
// Array phases.
enum : uint8_t { kArrOpen, kInItem, kAfterItem, kAfterArrComma };
// String phases: kBody, kEscape, kHex + n with n hex digits still to come, kUtf8 + n with n UTF-8
// continuation bytes still to come (the range of the next one in the frame's ws field).
enum : uint8_t { kBody = 0, kEscape = 1, kHex = 10, kUtf8 = 20 };
enum : uint8_t { kCont, kContA0, kCont9F, kCont90, kCont8F };
// Number phases (T: may end here).
enum : uint8_t { kMinus, kZero /*T*/, kInt /*T*/, kDot, kFrac /*T*/, kE, kExpSign, kExp /*T*/ };
// Two exponent digits keep every number a finite double (19 digits × 10^99 < 1.8e308): a client parser
// never overflows.
constexpr int kMaxIntDigits = 19, kMaxFracDigits = 17, kMaxExpDigits = 2;

bool NumberCanEnd(uint8_t phase) { return phase == kZero || phase == kInt || phase == kFrac || phase == kExp; }

const std::vector<SchemaNode::Property> kNoProperties;

}  // namespace

thread_local std::vector<JsonMatcher::Frame>* JsonMatcher::t_next_frames = nullptr;
thread_local std::vector<uint32_t>* JsonMatcher::t_next_ends = nullptr;

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonGrammar> grammar)
    : grammar_(std::move(grammar)), g_(grammar_.get()) {
  frames_.push_back(Frame{Frame::Kind::kRoot, 0, 0, g_->root(), 0, 0, 0});
  ends_.push_back(1);
}

bool JsonMatcher::Feed(std::string_view bytes) {
  for (char ch : bytes) {
    if (!FeedByte(static_cast<uint8_t>(ch))) return false;
  }
  return !dead();
}

bool JsonMatcher::FeedByte(uint8_t ch) {
  if (dead()) return false;
  thread_local std::vector<Frame> next_frames;
  thread_local std::vector<uint32_t> next_ends;
  thread_local Stack work;
  next_frames.clear();
  next_ends.clear();
  t_next_frames = &next_frames;
  t_next_ends = &next_ends;
  uint32_t begin = 0;
  for (uint32_t end : ends_) {
    work.assign(frames_.begin() + begin, frames_.begin() + end);
    Step(work, ch);
    begin = end;
  }
  frames_.swap(next_frames);
  ends_.swap(next_ends);
  return !dead();
}

void JsonMatcher::Emit(const Stack& st) {
  std::vector<Frame>& frames = *t_next_frames;
  std::vector<uint32_t>& ends = *t_next_ends;
  if (ends.size() >= kMaxAlternatives) return;
  // Alternatives that have converged are kept once.
  uint32_t begin = 0;
  for (uint32_t end : ends) {
    if (end - begin == st.size() && std::equal(st.begin(), st.end(), frames.begin() + begin)) return;
    begin = end;
  }
  frames.insert(frames.end(), st.begin(), st.end());
  ends.push_back(static_cast<uint32_t>(frames.size()));
}

const std::vector<SchemaNode::Property>& JsonMatcher::Properties(int32_t node) const {
  const SchemaNode& n = g_->node(node);
  return n.kind == Kind::kObject ? n.properties : kNoProperties;
}

int32_t JsonMatcher::Additional(int32_t node) const {
  const SchemaNode& n = g_->node(node);
  return n.kind == Kind::kObject ? n.additional : JsonGrammar::kAnyNode;
}

bool JsonMatcher::RequiredLeft(const Frame& o) const {
  const auto& props = Properties(o.node);
  return std::any_of(props.begin() + std::min<size_t>(static_cast<size_t>(o.a), props.size()), props.end(),
                     [](const SchemaNode::Property& p) { return p.required; });
}

bool JsonMatcher::CanStartKey(const Stack& st) const {
  const Frame& o = st.back();
  const auto& props = Properties(o.node);
  for (size_t j = static_cast<size_t>(o.a); j < props.size(); ++j) {
    if (Fits(st.size(), props[j].node)) return true;
    if (props[j].required) break;  // cannot be skipped
  }
  return Additional(o.node) >= 0 && Fits(st.size(), Additional(o.node));
}

void JsonMatcher::Step(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  switch (f.kind) {
    case Frame::Kind::kRoot:
      if (f.phase == 1) return;  // the value is complete: nothing may follow
      if (IsWs(ch)) {
        if (f.ws < kMaxWhitespaceRun) {
          ++f.ws;
          Emit(st);
        }
        return;
      }
      f.phase = 1;
      PushValue(st, f.node, ch);
      return;
    case Frame::Kind::kObject: return StepObject(st, ch);
    case Frame::Kind::kKey: return StepKey(st, ch);
    case Frame::Kind::kArray: return StepArray(st, ch);
    case Frame::Kind::kString: return StepString(st, ch);
    case Frame::Kind::kNumber: return StepNumber(st, ch);
    case Frame::Kind::kLiteral: return StepLiteral(st, ch);
  }
}

bool JsonMatcher::Fits(size_t size, int32_t node) const {
  return size + static_cast<size_t>(g_->node(node).min_depth) <= static_cast<size_t>(kMaxNesting) + 1;
}

void JsonMatcher::PushValue(Stack& st, int32_t node, uint8_t ch) {
  const SchemaNode& n = g_->node(node);
  if (n.kind != Kind::kUnion) {
    PushLeaf(st, node, ch);
    return;
  }
  for (int32_t leaf : n.leaves) {  // flattened at compile time: no union among them
    Stack copy = st;
    PushLeaf(copy, leaf, ch);
  }
}

void JsonMatcher::PushLeaf(Stack& st, int32_t node, uint8_t ch) {
  if (!Fits(st.size(), node)) return;
  const SchemaNode& n = g_->node(node);
  switch (n.kind) {
    case Kind::kUnion:
      return;  // not a leaf
    case Kind::kAny:
      if (ch == '{') {
        st.push_back(Frame{Frame::Kind::kObject, kOpen, 0, node, 0, 0, 0});
        Emit(st);
      } else if (ch == '[') {
        st.push_back(Frame{Frame::Kind::kArray, kArrOpen, 0, node, 0, 0, 0});
        Emit(st);
      } else if (ch == '"') {
        st.push_back(Frame{Frame::Kind::kString, kBody, 0, node, 0, 0, 0});
        Emit(st);
      } else if (ch == '-' || IsDigit(ch)) {
        st.push_back(Frame{Frame::Kind::kNumber, kMinus, 0, node, 0, 0, 0});
        if (ch == '-') {
          Emit(st);
        } else {
          st.back().phase = ch == '0' ? kZero : kInt;
          st.back().a = 1;
          Emit(st);
        }
      } else if (ch == 't' || ch == 'f' || ch == 'n') {
        const int32_t lit = ch == 't' ? JsonGrammar::kTrueNode : ch == 'f' ? JsonGrammar::kFalseNode : JsonGrammar::kNullNode;
        st.push_back(Frame{Frame::Kind::kLiteral, 0, 0, lit, 0, 0, 0});
        StepLiteral(st, ch);
      }
      return;
    case Kind::kObject:
      if (ch != '{') return;
      st.push_back(Frame{Frame::Kind::kObject, kOpen, 0, node, 0, 0, 0});
      Emit(st);
      return;
    case Kind::kArray:
      if (ch != '[') return;
      st.push_back(Frame{Frame::Kind::kArray, kArrOpen, 0, node, 0, 0, 0});
      Emit(st);
      return;
    case Kind::kString:
      if (ch != '"') return;
      st.push_back(Frame{Frame::Kind::kString, kBody, 0, node, 0, 0, 0});
      Emit(st);
      return;
    case Kind::kNumber:
    case Kind::kInteger:
      if (ch != '-' && !IsDigit(ch)) return;
      st.push_back(Frame{Frame::Kind::kNumber, kMinus, 0, node, 0, 0, 0});
      if (ch != '-') {
        st.back().phase = ch == '0' ? kZero : kInt;
        st.back().a = 1;
      }
      Emit(st);
      return;
    case Kind::kLiterals:
      st.push_back(Frame{Frame::Kind::kLiteral, 0, 0, node, 0, 0, 0});
      StepLiteral(st, ch);
      return;
  }
}

void JsonMatcher::Pop(Stack& st) {
  const Frame done = st.back();
  st.pop_back();
  Frame& p = st.back();
  p.ws = 0;
  switch (p.kind) {
    case Frame::Kind::kRoot:
      p.phase = 1;
      return;
    case Frame::Kind::kObject:
      if (p.phase == kInKey) {
        if (done.kind == Frame::Kind::kKey) {
          p.a = done.a + 1;
          p.b = Properties(p.node)[static_cast<size_t>(done.a)].node;
        } else {
          p.b = Additional(p.node);
        }
        p.phase = kAfterKey;
      } else {
        p.phase = kAfterValue;
      }
      return;
    case Frame::Kind::kArray:
      ++p.a;
      p.phase = kAfterItem;
      return;
    default:
      return;  // only containers and the root have children
  }
}

void JsonMatcher::StepObject(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  const bool ws = IsWs(ch);
  if (ws && f.phase != kInKey && f.phase != kInValue) {
    if (f.ws < kMaxWhitespaceRun) {
      ++f.ws;
      Emit(st);
    }
    return;
  }
  switch (f.phase) {
    case kOpen:
    case kAfterComma: {
      if (ch == '}' && f.phase == kOpen && !RequiredLeft(f)) {
        Pop(st);
        Emit(st);
        return;
      }
      if (ch != '"') return;
      const auto& props = Properties(f.node);
      bool declared_fits = false;
      for (size_t j = static_cast<size_t>(f.a); j < props.size(); ++j) {
        if (Fits(st.size(), props[j].node)) declared_fits = true;
        if (declared_fits || props[j].required) break;
      }
      if (declared_fits) {
        // A declared key: any from the next one up to the first required one (which cannot be skipped).
        int32_t last = f.a;
        while (static_cast<size_t>(last) + 1 < props.size() && !props[static_cast<size_t>(last)].required) ++last;
        const Frame key{Frame::Kind::kKey, 0, 0, f.node, f.a, 1, last};
        Frame object = f;
        object.phase = kInKey;
        object.ws = 0;
        Stack copy(st.begin(), st.end() - 1);
        copy.push_back(object);
        copy.push_back(key);
        Emit(copy);
      }
      if (Additional(f.node) >= 0 && Fits(st.size(), Additional(f.node))) {
        f.phase = kInKey;
        f.ws = 0;
        // c: the first declared key its bytes may still be (TrackKey); none when there are none.
        st.push_back(Frame{Frame::Kind::kString, kBody, 0, -1, 0, 1, props.empty() ? -1 : 0});
        Emit(st);
      }
      return;
    }
    case kAfterKey:
      if (ch != ':') return;
      f.phase = kAfterColon;
      f.ws = 0;
      Emit(st);
      return;
    case kAfterColon:
      f.phase = kInValue;
      f.ws = 0;
      PushValue(st, f.b, ch);
      return;
    case kAfterValue:
      if (ch == ',' && CanStartKey(st)) {
        f.phase = kAfterComma;
        f.ws = 0;
        Emit(st);
      } else if (ch == '}' && !RequiredLeft(f)) {
        Pop(st);
        Emit(st);
      }
      return;
    default:
      return;  // kInKey / kInValue: a child frame is on top
  }
}

void JsonMatcher::StepKey(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  const auto& props = Properties(f.node);
  const std::string& cur = props[static_cast<size_t>(f.a)].key;
  const auto matched = static_cast<size_t>(f.b);
  for (int32_t d = f.a; d <= f.c; ++d) {
    const std::string& key = props[static_cast<size_t>(d)].key;
    if (!Fits(st.size() - 1, props[static_cast<size_t>(d)].node)) continue;  // its value would not fit
    if (key.size() > matched && key.compare(0, matched, cur, 0, matched) == 0 && static_cast<uint8_t>(key[matched]) == ch) {
      f.a = d;
      f.b = static_cast<int32_t>(matched + 1);
      if (matched + 1 == key.size()) Pop(st);  // the closing quote: no other key goes on from here
      Emit(st);
      return;
    }
  }
}

void JsonMatcher::StepArray(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  const SchemaNode& n = g_->node(f.node);
  const bool typed = n.kind == Kind::kArray;
  const int64_t min_items = typed ? n.min_items : 0, max_items = typed ? n.max_items : -1;
  const int32_t items = typed ? n.items : JsonGrammar::kAnyNode;
  if (IsWs(ch) && f.phase != kInItem) {
    if (f.ws < kMaxWhitespaceRun) {
      ++f.ws;
      Emit(st);
    }
    return;
  }
  switch (f.phase) {
    case kArrOpen:
      if (ch == ']') {
        if (min_items == 0) {
          Pop(st);
          Emit(st);
        }
        return;
      }
      if (max_items == 0 || !Fits(st.size(), items)) return;
      f.phase = kInItem;
      f.ws = 0;
      PushValue(st, items, ch);
      return;
    case kAfterArrComma:
      f.phase = kInItem;
      f.ws = 0;
      PushValue(st, items, ch);
      return;
    case kAfterItem:
      if (ch == ',' && (max_items < 0 || f.a < max_items) && Fits(st.size(), items)) {
        f.phase = kAfterArrComma;
        f.ws = 0;
        Emit(st);
      } else if (ch == ']' && f.a >= min_items) {
        Pop(st);
        Emit(st);
      }
      return;
    default:
      return;
  }
}

void JsonMatcher::StepString(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  int64_t min_len = 0, max_len = -1;
  if (f.node >= 0 && g_->node(f.node).kind == Kind::kString) {
    min_len = g_->node(f.node).min_length;
    max_len = g_->node(f.node).max_length;
  }
  auto count = [&]() {
    if (max_len >= 0 && f.a >= max_len) return false;
    ++f.a;
    return true;
  };
  if (f.node == -1 && !TrackKey(f, ch)) return;
  if (f.phase == kBody && (f.d & Frame::kPendingLow)) {
    // A high surrogate was written: only its low one's \u may follow (counted with it, once).
    if (ch != '\\') return;
    f.phase = kEscape;
    Emit(st);
    return;
  }
  if (f.phase == kBody) {
    if (ch == '"') {
      if (f.a < min_len) return;
      Pop(st);
      Emit(st);
      return;
    }
    if (ch < 0x20) return;
    if (ch == '\\') {
      if (!count()) return;
      f.phase = kEscape;
    } else if (ch >= 0x80) {
      // A UTF-8 lead byte: how many continuation bytes follow, and the range of the first (RFC 3629).
      int more = 0;
      uint8_t first = kCont;
      if (ch >= 0xC2 && ch <= 0xDF) more = 1;
      else if (ch == 0xE0) more = 2, first = kContA0;
      else if (ch == 0xED) more = 2, first = kCont9F;
      else if (ch >= 0xE1 && ch <= 0xEF) more = 2;
      else if (ch == 0xF0) more = 3, first = kCont90;
      else if (ch >= 0xF1 && ch <= 0xF3) more = 3;
      else if (ch == 0xF4) more = 3, first = kCont8F;
      else return;
      if (!count()) return;
      f.phase = static_cast<uint8_t>(kUtf8 + more);
      f.ws = first;
    } else if (!count()) {
      return;
    }
    Emit(st);
    return;
  }
  if (f.phase > kUtf8) {
    const uint8_t lo = f.ws == kContA0 ? 0xA0 : f.ws == kCont90 ? 0x90 : 0x80;
    const uint8_t hi = f.ws == kCont9F ? 0x9F : f.ws == kCont8F ? 0x8F : 0xBF;
    if (ch < lo || ch > hi) return;
    f.ws = kCont;
    f.phase = f.phase == kUtf8 + 1 ? static_cast<uint8_t>(kBody) : static_cast<uint8_t>(f.phase - 1);
    Emit(st);
    return;
  }
  if (f.phase == kEscape) {
    if (ch == 'u') {
      f.phase = kHex + 4;
      f.d &= ~0xFFFF;
    } else if ((f.d & Frame::kPendingLow) == 0 &&
               (ch == '"' || ch == '\\' || (ch == '/' && f.node != -1) || ch == 'b' || ch == 'f' || ch == 'n' ||
                ch == 'r' || ch == 't')) {
      f.phase = kBody;  // (a key of other properties writes '/' as itself, as a declared name would)
    } else {
      return;
    }
    Emit(st);
    return;
  }
  if (!IsHex(ch)) return;
  const int32_t digit = IsDigit(ch) ? ch - '0' : (ch | 0x20) - 'a' + 10;
  f.d = (f.d & ~0xFFFF) | (((f.d & 0xFFFF) << 4 | digit) & 0xFFFF);
  if (f.phase > kHex + 1) {
    // Refuse a prefix no last digit completes: a low surrogate without its high one (or the reverse),
    // and in a key of other properties anything but a control character's code.
    const int32_t v = f.d & 0xFFFF;
    const int digits = kHex + 5 - f.phase;  // read so far: 1, 2 or 3
    const bool pending = (f.d & Frame::kPendingLow) != 0;
    if (digits == 1 && pending && v != 0xD) return;
    if (digits == 2 && pending && v < 0xDC) return;
    if (digits == 2 && !pending && v >= 0xDC && v <= 0xDF) return;
    if (f.node == -1 && (digits < 3 ? v != 0 : v > 0x01)) return;
    --f.phase;
    Emit(st);
    return;
  }
  // The escape is whole.
  const int32_t v = f.d & 0xFFFF;
  if (f.d & Frame::kPendingLow) {
    if (v < 0xDC00 || v > 0xDFFF) return;  // a high surrogate's partner must be a low one
    f.d = 0;
  } else if (v >= 0xD800 && v <= 0xDBFF) {
    f.d = Frame::kPendingLow;
  } else if (v >= 0xDC00 && v <= 0xDFFF) {
    return;  // a lone low surrogate
  } else {
    f.d = 0;
  }
  // A key of other properties escapes only what JSON must (control characters without a short form),
  // so that no escape spells a declared name.
  if (f.node == -1 && (v >= 0x20 || v == 0x08 || v == 0x09 || v == 0x0A || v == 0x0C || v == 0x0D)) return;
  f.phase = kBody;
  Emit(st);
}

// A key of an object's other properties (additionalProperties) must not be one of its declared names:
// c is the first declared key the bytes so far still match (-1: none), b how many bytes matched (the
// opening quote included). A closing quote that completes a declared name is refused.
bool JsonMatcher::TrackKey(Frame& f, uint8_t ch) {
  if (f.c < 0) return true;
  const Frame& object = *(&f - 1);
  const auto& props = Properties(object.node);
  const std::string& cur = props[static_cast<size_t>(f.c)].key;
  const auto matched = static_cast<size_t>(f.b);
  const bool closing = f.phase == kBody && ch == '"';
  for (size_t d = static_cast<size_t>(f.c); d < props.size(); ++d) {
    const std::string& key = props[d].key;
    if (key.size() > matched && key.compare(0, matched, cur, 0, matched) == 0 && static_cast<uint8_t>(key[matched]) == ch) {
      if (closing && key.size() == matched + 1) return false;
      f.c = static_cast<int32_t>(d);
      f.b = static_cast<int32_t>(matched + 1);
      return true;
    }
  }
  f.c = -1;
  return true;
}

void JsonMatcher::StepNumber(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  const bool integer = g_->node(f.node).kind == Kind::kInteger;
  auto digit = [&](uint8_t next_phase, int limit) {
    if (f.a >= limit) return false;
    ++f.a;
    f.phase = next_phase;
    return true;
  };
  bool ok = false;
  switch (f.phase) {
    case kMinus:
      if (ch == '0') f.phase = kZero, f.a = 1, ok = true;
      else if (IsDigit(ch)) f.phase = kInt, f.a = 1, ok = true;
      break;
    case kZero:
    case kInt:
      if (f.phase == kInt && IsDigit(ch)) ok = digit(kInt, kMaxIntDigits);
      else if (ch == '.' && !integer) f.phase = kDot, f.a = 0, ok = true;
      else if ((ch == 'e' || ch == 'E') && !integer) f.phase = kE, f.a = 0, ok = true;
      break;
    case kDot:
    case kFrac:
      if (IsDigit(ch)) ok = digit(kFrac, kMaxFracDigits);
      else if (f.phase == kFrac && (ch == 'e' || ch == 'E')) f.phase = kE, f.a = 0, ok = true;
      break;
    case kE:
      if (ch == '+' || ch == '-') f.phase = kExpSign, ok = true;
      else if (IsDigit(ch)) ok = digit(kExp, kMaxExpDigits);
      break;
    case kExpSign:
    case kExp:
      if (IsDigit(ch)) ok = digit(kExp, kMaxExpDigits);
      break;
  }
  if (ok) {
    Emit(st);
    return;
  }
  // A byte that does not continue the number ends it, if it may end here, and goes to the parent.
  // (Once at a digit limit the number can only end: the parent's byte decides.)
  if (!NumberCanEnd(f.phase) || IsDigit(ch)) return;
  Pop(st);
  Step(st, ch);
}

void JsonMatcher::StepLiteral(Stack& st, uint8_t ch) {
  Frame& f = st.back();
  const std::vector<std::string>& lits = g_->node(f.node).literals;
  const std::string& cur = lits[static_cast<size_t>(f.a)];
  const auto matched = static_cast<size_t>(f.b);
  for (size_t d = static_cast<size_t>(f.a); d < lits.size(); ++d) {
    const std::string& lit = lits[d];
    if (lit.size() > matched && lit.compare(0, matched, cur, 0, matched) == 0 && static_cast<uint8_t>(lit[matched]) == ch) {
      f.a = static_cast<int32_t>(d);
      f.b = static_cast<int32_t>(matched + 1);
      // Whole, and no longer literal goes on from here (only a number can be a prefix of another
      // value): the value is complete now.
      const bool longer = std::any_of(lits.begin() + static_cast<std::ptrdiff_t>(d), lits.end(), [&](const std::string& o) {
        return o.size() > matched + 1 && o.compare(0, matched + 1, lit, 0, matched + 1) == 0;
      });
      if (matched + 1 == lit.size() && !longer) Pop(st);
      Emit(st);
      return;
    }
  }
  // No literal goes on with this byte: one that is whole here ends, and the byte goes to the parent.
  const bool whole = std::any_of(lits.begin() + f.a, lits.end(), [&](const std::string& o) {
    return o.size() == matched && o.compare(0, matched, cur, 0, matched) == 0;
  });
  if (!whole || matched == 0) return;
  Pop(st);
  Step(st, ch);
}

bool JsonMatcher::StackAccepting(const Frame* begin, const Frame* end) const {
  const size_t n = static_cast<size_t>(end - begin);
  if (n == 1) return begin->phase == 1;
  if (n != 2) return false;
  const Frame& top = begin[1];
  if (top.kind == Frame::Kind::kNumber) return NumberCanEnd(top.phase);
  if (top.kind == Frame::Kind::kLiteral) {
    const std::vector<std::string>& lits = g_->node(top.node).literals;
    const std::string& cur = lits[static_cast<size_t>(top.a)];
    return std::any_of(lits.begin() + top.a, lits.end(), [&](const std::string& o) {
      return o.size() == static_cast<size_t>(top.b) && o.compare(0, o.size(), cur, 0, o.size()) == 0;
    });
  }
  return false;
}

bool JsonMatcher::accepting() const {
  uint32_t begin = 0;
  for (uint32_t end : ends_) {
    if (StackAccepting(frames_.data() + begin, frames_.data() + end)) return true;
    begin = end;
  }
  return false;
}

bool JsonMatcher::InStringBody(int64_t* room) const {
  if (ends_.empty()) return false;
  *room = -1;
  for (uint32_t end : ends_) {
    const Frame& top = frames_[end - 1];
    if (top.kind != Frame::Kind::kString || top.phase != kBody || top.d != 0) return false;
    int64_t max_len = -1;
    if (top.node >= 0 && g_->node(top.node).kind == Kind::kString) max_len = g_->node(top.node).max_length;
    *room = std::max(*room, max_len < 0 ? std::numeric_limits<int64_t>::max() : max_len - top.a);
  }
  return true;
}

}  // namespace shoal::grammar
