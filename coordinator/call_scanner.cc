#include "coordinator/call_scanner.h"

#include <nlohmann/json.hpp>

namespace shoal::coord {

namespace {

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

// The string a JSON string literal (quotes included) holds; "" if it is not one.
std::string Unquote(const std::string& literal) {
  const nlohmann::json v = nlohmann::json::parse(literal, nullptr, /*allow_exceptions=*/false);
  return v.is_string() ? v.get<std::string>() : std::string();
}

}  // namespace

void CallScanner::Feed(std::string_view text, std::vector<Event>* out) {
  for (char c : text) Step(c, out);
}

void CallScanner::StartCall() {
  call_depth_ = open_.size();
  ++calls_;
  key_.clear();
  literal_.clear();
  reading_literal_ = after_colon_ = false;
  name_.clear();
  has_name_ = false;
  value_ = Value::kNone;
  value_is_args_ = false;
  args_.clear();
  args_sent_ = 0;
  streaming_ = string_args_ = false;
}

void CallScanner::Emit(std::string_view piece, std::vector<Event>* out) {
  const int call = calls_ - 1;
  if (!streaming_) {
    streaming_ = true;
    Event e;
    e.call = call;
    e.first = true;
    e.name = name_;
    out->push_back(std::move(e));
  } else if (out->empty() || out->back().kind != Event::Kind::kArguments || out->back().call != call) {
    Event e;
    e.call = call;
    out->push_back(std::move(e));
  }
  out->back().text.append(piece);
  args_sent_ = args_.size();
}

void CallScanner::EndValue(std::vector<Event>* out) {
  if (value_is_args_) {
    string_args_ = value_ == Value::kString;
  } else if (key_ == "name" && value_ == Value::kString) {
    name_ = Unquote(literal_);
    has_name_ = true;
  }
  value_ = Value::kNone;
  value_is_args_ = false;
  after_colon_ = false;
}

void CallScanner::Step(char c, std::vector<Event>* out) {
  const bool at_call_level = call_depth_ > 0 && open_.size() == call_depth_;
  if (call_depth_ > 0 && value_ == Value::kString) {  // a string value at the call's level
    literal_.push_back(c);
    if (value_is_args_) args_.push_back(c);
    if (escape_) {
      escape_ = false;
    } else if (c == '\\') {
      escape_ = true;
    } else if (c == '"') {
      EndValue(out);
    }
    return;
  }
  if (call_depth_ > 0 && value_ == Value::kScalar) {
    if (!IsSpace(c) && c != ',' && c != '}') {
      if (value_is_args_) args_.push_back(c);
      return;
    }
    EndValue(out);  // and the byte goes to the call's level below
  }
  if (call_depth_ > 0 && value_ == Value::kContainer) {
    if (value_is_args_) {
      args_.push_back(c);
      if (streaming_) Emit(std::string_view(&c, 1), out);
    }
    if (in_string_) {
      if (escape_) escape_ = false;
      else if (c == '\\') escape_ = true;
      else if (c == '"') in_string_ = false;
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      open_.push_back(c);
    } else if ((c == '}' || c == ']') && open_.size() > call_depth_) {
      open_.pop_back();
      if (open_.size() == call_depth_) EndValue(out);
    }
    return;
  }
  if (call_depth_ > 0 && (at_call_level || value_ == Value::kNone)) {
    if (reading_literal_) {  // a key
      literal_.push_back(c);
      if (escape_) {
        escape_ = false;
      } else if (c == '\\') {
        escape_ = true;
      } else if (c == '"') {
        reading_literal_ = false;
        key_ = Unquote(literal_);
      }
      return;
    }
    if (IsSpace(c)) return;
    const bool args_key = key_ == "arguments" || key_ == "parameters";
    if (!after_colon_) {
      if (c == '"') {
        reading_literal_ = true;
        literal_ = "\"";
      } else if (c == ':') {
        after_colon_ = true;
      } else if (c == ',') {
        key_.clear();
      } else if (c == '}') {  // the call object ends
        open_.pop_back();
        Event e;
        e.kind = Event::Kind::kEnd;
        e.call = calls_ - 1;
        e.name = name_;
        e.text = args_;
        e.streamed = streaming_;
        out->push_back(std::move(e));
        call_depth_ = 0;
      }
      return;
    }
    value_is_args_ = args_key && args_.empty();  // the first arguments value only
    if (c == '"') {
      value_ = Value::kString;
      literal_ = "\"";
      if (value_is_args_) args_ = "\"";
    } else if (c == '{' || c == '[') {
      value_ = Value::kContainer;
      open_.push_back(c);
      if (value_is_args_) {
        args_.push_back(c);
        if (has_name_) Emit(std::string_view(&c, 1), out);
      }
    } else {
      value_ = Value::kScalar;
      if (value_is_args_) args_.push_back(c);
    }
    return;
  }
  // Outside a call object: strings and brackets, until a call object opens.
  if (in_string_) {
    if (escape_) escape_ = false;
    else if (c == '\\') escape_ = true;
    else if (c == '"') in_string_ = false;
    return;
  }
  if (c == '"') {
    in_string_ = true;
  } else if (c == '[' || c == '{') {
    open_.push_back(c);
    if (c == '{' && (open_.size() == 1 || (open_.size() == 2 && open_[0] == '['))) StartCall();
  } else if ((c == ']' || c == '}') && !open_.empty()) {
    open_.pop_back();
  }
}

}  // namespace shoal::coord
