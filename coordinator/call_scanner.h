// Tool calls written as JSON objects — {"name": …, "arguments" | "parameters": …}, one alone, several
// in an array, or several with other text between them — scanned as the text arrives, so that a
// call's arguments can stream before the call is whole (vLLM streams them so). Used by the tool-call
// parsers (tool_parser.h) and the forced calls' reader (forced_tool_call.h).
//
// A call's arguments start streaming once its name is known and its arguments value has begun with
// '{' or '['; they are the value's text exactly as written. Arguments given as a JSON string (some
// models quote them) are not streamed: the call's end carries them. Keys other than the name and the
// arguments are skipped, whatever they hold. The scanner does not validate: its owner decides, at a
// call's end, whether the object was a call.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace shoal::coord {

class CallScanner {
 public:
  struct Event {
    enum class Kind { kArguments, kEnd };
    Kind kind = Kind::kArguments;
    int call = 0;        // the object's number among the call objects seen (0-based)
    bool first = false;  // kArguments: the call's first piece (name set; text may be empty)
    std::string name;    // the first piece's and kEnd's
    std::string text;    // kArguments: the piece; kEnd: the whole arguments value as written ("" if none)
    bool streamed = false;  // kEnd: its arguments went out as kArguments pieces
  };
  // Appends the events `text` settles.
  void Feed(std::string_view text, std::vector<Event>* out);
  // Objects opened so far (the next call's number).
  int calls() const { return calls_; }
  // Outside every bracket and string (e.g. after a whole array of calls).
  bool at_top() const { return open_.empty() && !in_string_ && call_depth_ == 0; }

 private:
  enum class Value { kNone, kString, kContainer, kScalar };
  void Step(char c, std::vector<Event>* out);
  void StartCall();
  void EndValue(std::vector<Event>* out);
  void Emit(std::string_view piece, std::vector<Event>* out);

  // Outside strings: the open containers' brackets; a call object is a '{' opened at the top or as an
  // element of a top-level array.
  std::string open_;
  bool in_string_ = false, escape_ = false;
  int calls_ = 0;
  // Inside a call object (call_depth_ = open_.size() there; 0 outside one).
  size_t call_depth_ = 0;
  std::string key_, literal_;  // the key being read / read last, and a string at the call's level
  bool reading_literal_ = false, after_colon_ = false;
  std::string name_;
  bool has_name_ = false;
  // The value after ':' at the call's level.
  Value value_ = Value::kNone;
  bool value_is_args_ = false;
  std::string args_;        // the arguments value so far
  size_t args_sent_ = 0;    // bytes of args_ already streamed
  bool streaming_ = false;  // pieces are going out for this call
  bool string_args_ = false;
};

}  // namespace shoal::coord
