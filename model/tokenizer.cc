// Tokenizer: loading and validating tokenizer.json / tokenizer_config.json, the added-token split, the
// encode and decode drivers, the post-processor, and the incremental detokenizer.
#include "model/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "model/tokenizer_internal.h"

namespace shoal {
namespace tok_internal {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest matching of a set of added tokens (HF uses Aho-Corasick with LeftmostLongest).
// Candidates are bucketed by first byte, longest first; added-token sets are small (tens to hundreds).
class AddedMatcher {
 public:
  void Add(std::string pattern, int index) {
    if (pattern.empty()) return;
    auto& b = buckets_[static_cast<uint8_t>(pattern[0])];
    b.push_back({std::move(pattern), index});
    std::stable_sort(b.begin(), b.end(), [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // Longest pattern starting at s[at]: its index and length, or {-1, 0}.
  std::pair<int, size_t> MatchAt(std::string_view s, size_t at) const {
    for (const auto& [p, index] : buckets_[static_cast<uint8_t>(s[at])]) {
      if (s.compare(at, p.size(), p) == 0) return {index, p.size()};
    }
    return {-1, 0};
  }

 private:
  std::vector<std::pair<std::string, int>> buckets_[256];
  bool empty_ = true;
};

struct Segment {
  std::string text;
  int added = -1;  // index into TokenizerImpl::added, or -1 for text still to tokenize
  size_t start_len = 0;  // see Piece::start_len
};

// One step of a post-processor: `prefix` + ids + `suffix` (TemplateProcessing single); ByteLevel is a
// no-op on ids and is not stored.
struct PostStep {
  std::vector<int32_t> prefix, suffix;
};

struct TokenizerImpl {
  std::unique_ptr<BpeModel> model;
  std::optional<Normalizer> normalizer;
  std::optional<PreTokenizer> pre_tokenizer;
  std::optional<Decoder> decoder;
  bool has_post_processor = false;
  std::vector<PostStep> post;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int> added_by_content;
  std::unordered_map<int32_t, int> added_by_id;
  AddedMatcher raw_matcher, normalized_matcher;
  int32_t vocab_size = 0;
  std::string chat_template;
  std::optional<std::string> bos, eos;
  bool add_bos = false, add_eos = false;

  Status SplitAdded(const std::string& text, size_t start_len, const AddedMatcher& m, std::vector<Segment>& out) const;
  const std::string* TokenOf(int32_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end()) return &added[it->second].content;
    return model->IdToToken(id);
  }
};

namespace {

size_t LeadingSpaceBytes(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!IsWhitespace(NextCodepoint(s, next))) break;
    pos = next;
  }
  return pos;
}

// Start of the trailing whitespace run of s.
size_t TrailingSpaceStart(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t start = Utf8CharStart(s, e - 1);
    size_t pos = start;
    if (!IsWhitespace(NextCodepoint(s, pos))) break;
    e = start;
  }
  return e;
}

bool EndsWithWord(std::string_view s) {
  if (s.empty()) return false;
  size_t start = Utf8CharStart(s, s.size() - 1);
  return IsWordChar(NextCodepoint(s, start));
}

bool StartsWithWord(std::string_view s) {
  size_t pos = 0;
  return !s.empty() && IsWordChar(NextCodepoint(s, pos));
}

Status ParseAddedTokens(const json& root, TokenizerImpl& t) {
  const json* arr = Field(root, "added_tokens");
  if (arr == nullptr) return Status::Ok();
  if (!arr->is_array()) return InvalidArgument("added_tokens: expected an array");
  for (size_t i = 0; i < arr->size(); ++i) {
    const json& e = (*arr)[i];
    const std::string path = Sub("added_tokens", i);
    AddedToken a;
    const json* id = Field(e, "id");
    if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() >= (1 << 24)) {
      return InvalidArgument(path + ".id: expected an id in [0, 2^24)");
    }
    a.id = static_cast<int32_t>(id->get<int64_t>());
    SHOAL_RETURN_IF_ERROR(GetString(e, "content", path, a.content, true));
    if (a.content.empty()) return InvalidArgument(path + ".content: empty");
    SHOAL_RETURN_IF_ERROR(GetBool(e, "single_word", path, a.single_word));
    SHOAL_RETURN_IF_ERROR(GetBool(e, "lstrip", path, a.lstrip));
    SHOAL_RETURN_IF_ERROR(GetBool(e, "rstrip", path, a.rstrip));
    SHOAL_RETURN_IF_ERROR(GetBool(e, "special", path, a.special));
    a.normalized = !a.special;  // HF's default when the field is absent
    SHOAL_RETURN_IF_ERROR(GetBool(e, "normalized", path, a.normalized));
    if (t.added_by_content.count(a.content) != 0) return InvalidArgument(path + ": duplicate content " + Quote(a.content));
    const int index = static_cast<int>(t.added.size());
    t.added_by_content[a.content] = index;
    t.added_by_id[a.id] = index;
    t.added.push_back(std::move(a));
  }
  // Normalized tokens are matched by their normalized form, in the normalized text.
  for (size_t i = 0; i < t.added.size(); ++i) {
    const AddedToken& a = t.added[i];
    if (a.normalized) {
      std::string pattern = a.content;
      if (t.normalizer) SHOAL_RETURN_IF_ERROR(Normalize(*t.normalizer, pattern));
      t.normalized_matcher.Add(std::move(pattern), static_cast<int>(i));
    } else {
      t.raw_matcher.Add(a.content, static_cast<int>(i));
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<int32_t>> SpecialIds(const json& specials, const std::string& name, const std::string& path) {
  const json* s = Field(specials, name.c_str());
  const json* ids = s != nullptr ? Field(*s, "ids") : nullptr;
  if (ids == nullptr || !ids->is_array()) {
    return InvalidArgument(path + ": special token " + Quote(name) + " has no ids in special_tokens");
  }
  std::vector<int32_t> out;
  for (const json& id : *ids) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24)) {
      return InvalidArgument(path + ": special token " + Quote(name) + " has a bad id " + id.dump());
    }
    out.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return out;
}

Status ParsePostProcessor(const json& j, const std::string& path, std::vector<PostStep>& out) {
  if (j.is_null()) return Status::Ok();
  if (path.size() > 2000) return InvalidArgument(path.substr(0, 200) + "...: nested too deeply");
  if (!j.is_object()) return InvalidArgument(path + ": expected an object");
  std::string type;
  SHOAL_RETURN_IF_ERROR(GetString(j, "type", path, type, true));
  if (type == "ByteLevel") return Status::Ok();  // only trims offsets, which shoal does not report
  if (type == "Sequence") {
    const json* arr = Field(j, "processors");
    if (arr == nullptr || !arr->is_array()) return InvalidArgument(Sub(path, "processors") + ": expected an array");
    for (size_t i = 0; i < arr->size(); ++i) {
      SHOAL_RETURN_IF_ERROR(ParsePostProcessor((*arr)[i], Sub(Sub(path, "processors"), i), out));
    }
    return Status::Ok();
  }
  if (type != "TemplateProcessing") return Unimplemented(Sub(path, "type") + ": unsupported " + Quote(type));
  const json* single = Field(j, "single");
  if (single == nullptr || !single->is_array()) return InvalidArgument(Sub(path, "single") + ": expected an array");
  const json empty = json::object();
  const json* specials = Field(j, "special_tokens");
  if (specials == nullptr) specials = &empty;
  PostStep step;
  bool seen_a = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& item = (*single)[i];
    const std::string ipath = Sub(Sub(path, "single"), i);
    if (const json* sp = Field(item, "SpecialToken")) {
      std::string id;
      SHOAL_RETURN_IF_ERROR(GetString(*sp, "id", ipath + ".SpecialToken", id, true));
      SHOAL_ASSIGN_OR_RETURN(std::vector<int32_t> ids, SpecialIds(*specials, id, ipath));
      auto& dst = seen_a ? step.suffix : step.prefix;
      dst.insert(dst.end(), ids.begin(), ids.end());
    } else if (const json* seq = Field(item, "Sequence")) {
      std::string id;
      SHOAL_RETURN_IF_ERROR(GetString(*seq, "id", ipath + ".Sequence", id, true));
      if (id != "A" || seen_a) return Unimplemented(ipath + ": only one Sequence \"A\" is supported in single");
      seen_a = true;
    } else {
      return InvalidArgument(ipath + ": expected SpecialToken or Sequence");
    }
  }
  if (!seen_a) return InvalidArgument(Sub(path, "single") + ": no Sequence \"A\"");
  out.push_back(std::move(step));
  return Status::Ok();
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return IoError(path + ": read failed");
  return ss.str();
}

StatusOr<json> ParseJson(std::string_view text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions only to recover the position for the message.
    try {
      json again = json::parse(text);
      (void)again;
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
      return InvalidArgument(source + ": not valid JSON: " + e.what());
    }
    return InvalidArgument(source + ": not valid JSON");
  }
  return j;
}

}  // namespace

Status TokenizerImpl::SplitAdded(const std::string& text, size_t start_len, const AddedMatcher& m,
                                 std::vector<Segment>& out) const {
  if (m.empty()) {
    if (!text.empty()) out.push_back({text, -1, start_len});
    return Status::Ok();
  }
  size_t start_offset = 0;
  auto emit_text = [&](size_t b, size_t e) {
    if (e > b) out.push_back({text.substr(b, e - b), -1, b < start_len ? start_len - b : 0});
  };
  size_t i = 0;
  while (i < text.size()) {
    auto [index, len] = m.MatchAt(text, i);
    if (index < 0) {
      ++i;
      continue;
    }
    const AddedToken& a = added[index];
    size_t start = i, stop = i + len;
    i = stop;  // non-overlapping, as Aho-Corasick's find_iter
    if (a.single_word) {
      const bool start_space = start == 0 || !EndsWithWord(std::string_view(text).substr(0, start));
      const bool stop_space = stop == text.size() || !StartsWithWord(std::string_view(text).substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (start < start_offset) continue;  // inside what an rstrip already took
    if (a.lstrip) start = std::max(TrailingSpaceStart(std::string_view(text).substr(0, start)), start_offset);
    if (a.rstrip) stop += LeadingSpaceBytes(std::string_view(text).substr(stop));
    emit_text(start_offset, start);
    out.push_back({text.substr(start, stop - start), index, false});
    start_offset = stop;
    i = std::max(i, stop);
  }
  emit_text(start_offset, text.size());
  return Status::Ok();
}

}  // namespace tok_internal

using tok_internal::json;
using tok_internal::TokenizerImpl;

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json, const std::string& source) {
  using namespace tok_internal;
  SHOAL_ASSIGN_OR_RETURN(json root, ParseJson(tokenizer_json, source));
  auto impl = std::make_unique<TokenizerImpl>();
  auto parse = [&]() -> Status {
    if (!root.is_object()) return InvalidArgument("top level: expected an object");
    for (const char* key : {"truncation", "padding"}) {
      if (Field(root, key) != nullptr) return Unimplemented(std::string(key) + ": must be null");
    }
    const json* model = Field(root, "model");
    if (model == nullptr) return InvalidArgument("model: missing");
    SHOAL_ASSIGN_OR_RETURN(impl->model, BpeModel::Parse(*model, "model"));
    const json null_json;
    auto get = [&](const char* key) -> const json& {
      const json* v = Field(root, key);
      return v ? *v : null_json;
    };
    SHOAL_ASSIGN_OR_RETURN(impl->normalizer, ParseNormalizer(get("normalizer"), "normalizer"));
    SHOAL_ASSIGN_OR_RETURN(impl->pre_tokenizer, ParsePreTokenizer(get("pre_tokenizer"), "pre_tokenizer"));
    SHOAL_ASSIGN_OR_RETURN(impl->decoder, ParseDecoder(get("decoder"), "decoder"));
    impl->has_post_processor = Field(root, "post_processor") != nullptr;
    SHOAL_RETURN_IF_ERROR(ParsePostProcessor(get("post_processor"), "post_processor", impl->post));
    SHOAL_RETURN_IF_ERROR(ParseAddedTokens(root, *impl));
    int32_t max_id = impl->model->max_id();
    for (const auto& a : impl->added) max_id = std::max(max_id, a.id);
    for (const auto& step : impl->post) {
      for (const auto* v : {&step.prefix, &step.suffix}) {
        for (int32_t id : *v) {
          if (impl->TokenOf(id) == nullptr) {
            return InvalidArgument("post_processor: special token id " + std::to_string(id) + " names no token");
          }
        }
      }
    }
    impl->vocab_size = max_id + 1;
    return Status::Ok();
  };
  Status st = parse();
  if (!st.ok()) return st.WithContext(source);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

Status Tokenizer::ApplyConfigJson(std::string_view config_json, const std::string& source) {
  using namespace tok_internal;
  SHOAL_ASSIGN_OR_RETURN(json root, ParseJson(config_json, source));
  if (!root.is_object()) return InvalidArgument(source + ": expected an object");
  // bos_token / eos_token: a string, an AddedToken object {"content": ...}, or null.
  auto token_field = [&](const char* key, std::optional<std::string>& out) -> Status {
    const json* v = Field(root, key);
    if (v == nullptr) return Status::Ok();
    if (v->is_string()) {
      out = v->get<std::string>();
    } else if (v->is_object() && Field(*v, "content") != nullptr && (*v)["content"].is_string()) {
      out = (*v)["content"].get<std::string>();
    } else {
      return InvalidArgument(source + ": " + key + ": expected a string, {\"content\": ...} or null");
    }
    return Status::Ok();
  };
  SHOAL_RETURN_IF_ERROR(token_field("bos_token", impl_->bos));
  SHOAL_RETURN_IF_ERROR(token_field("eos_token", impl_->eos));
  Status st = GetBool(root, "add_bos_token", "", impl_->add_bos);
  if (st.ok()) st = GetBool(root, "add_eos_token", "", impl_->add_eos);
  if (!st.ok()) return st.WithContext(source);
  if (const json* t = Field(root, "chat_template")) {
    if (!t->is_string()) return Unimplemented(source + ": chat_template: only a single template string is supported");
    impl_->chat_template = t->get<std::string>();
  }
  // Without a post_processor, add_bos_token/add_eos_token decide (as transformers' slow-tokenizer
  // conversion does); the tokens must then exist.
  if (!impl_->has_post_processor) {
    PostStep step;
    for (auto [flag, tok, vec, name] : {std::tuple{impl_->add_bos, &impl_->bos, &step.prefix, "bos_token"},
                                        std::tuple{impl_->add_eos, &impl_->eos, &step.suffix, "eos_token"}}) {
      if (!flag) continue;
      std::optional<int32_t> id = *tok ? TokenId(**tok) : std::nullopt;
      if (!id) return InvalidArgument(source + ": add_" + std::string(name).substr(0, 3) + "_token is true but " + name + " names no token");
      vec->push_back(*id);
    }
    impl_->post.clear();
    if (!step.prefix.empty() || !step.suffix.empty()) impl_->post.push_back(std::move(step));
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  SHOAL_ASSIGN_OR_RETURN(std::string text, tok_internal::ReadFile(path));
  SHOAL_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, FromJson(text, path));
  const std::string cfg_path = dir + "/tokenizer_config.json";
  std::ifstream probe(cfg_path);
  if (probe) {
    SHOAL_ASSIGN_OR_RETURN(std::string cfg, tok_internal::ReadFile(cfg_path));
    SHOAL_RETURN_IF_ERROR(tok->ApplyConfigJson(cfg, cfg_path));
  }
  return tok;
}

StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  using namespace tok_internal;
  if (auto bad = FirstInvalidUtf8(text)) {
    return InvalidArgument("Encode: text is not valid UTF-8 at byte " + std::to_string(*bad));
  }
  const TokenizerImpl& t = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // 1. Non-normalized added tokens split the raw text; 2. each remaining piece is normalized and split
  // on the normalized added tokens; 3. pre-tokenize; 4. BPE each pre-token.
  std::vector<Segment> raw, segs;
  size_t first_char = 0;
  if (!text.empty()) NextCodepoint(text, first_char);
  SHOAL_RETURN_IF_ERROR(t.SplitAdded(std::string(text), first_char, t.raw_matcher, raw));
  std::vector<Piece> pieces;
  for (Segment& r : raw) {
    if (r.added >= 0) {
      ids.push_back(t.added[r.added].id);
      continue;
    }
    if (t.normalizer) {
      if (r.start_len > 0) {  // how far the first original character reaches after normalization
        size_t n = 0;
        NextCodepoint(r.text, n);
        std::string first = r.text.substr(0, n);
        SHOAL_RETURN_IF_ERROR(Normalize(*t.normalizer, first));
        r.start_len = first.size();
      }
      SHOAL_RETURN_IF_ERROR(Normalize(*t.normalizer, r.text));
      r.start_len = std::min(r.start_len, r.text.size());
    }
    segs.clear();
    SHOAL_RETURN_IF_ERROR(t.SplitAdded(r.text, r.start_len, t.normalized_matcher, segs));
    for (Segment& s : segs) {
      if (s.added >= 0) {
        ids.push_back(t.added[s.added].id);
        continue;
      }
      pieces.clear();
      pieces.push_back({std::move(s.text), s.start_len});
      if (t.pre_tokenizer) SHOAL_RETURN_IF_ERROR(PreTokenize(*t.pre_tokenizer, pieces));
      for (const Piece& p : pieces) t.model->Tokenize(p.text, ids);
    }
  }
  if (add_special_tokens) {
    for (const PostStep& step : t.post) {
      ids.insert(ids.begin(), step.prefix.begin(), step.prefix.end());
      ids.insert(ids.end(), step.suffix.begin(), step.suffix.end());
    }
  }
  return ids;
}

StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const TokenizerImpl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string* tok = t.TokenOf(ids[i]);
    if (tok == nullptr) {
      return InvalidArgument("Decode: id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                             " names no token (vocab_size " + std::to_string(t.vocab_size) + ")");
    }
    if (skip_special_tokens && IsSpecial(ids[i])) continue;
    tokens.push_back(*tok);
  }
  if (!t.decoder) {  // HF joins the raw tokens with spaces
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  SHOAL_RETURN_IF_ERROR(tok_internal::DecodeChain(*t.decoder, tokens));
  std::string out;
  for (const std::string& s : tokens) out += s;
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token)); it != impl_->added_by_content.end()) {
    return impl_->added[it->second].id;
  }
  return impl_->model->Find(token);
}

std::optional<std::string> Tokenizer::TokenText(int32_t id) const {
  const std::string* s = impl_->TokenOf(id);
  return s ? std::optional<std::string>(*s) : std::nullopt;
}

bool Tokenizer::HasToken(int32_t id) const { return impl_->TokenOf(id) != nullptr; }

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
std::optional<std::string> Tokenizer::bos_token() const { return impl_->bos; }
std::optional<std::string> Tokenizer::eos_token() const { return impl_->eos; }

// ---- IncrementalDetokenizer ----

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

StatusOr<std::string> IncrementalDetokenizer::Append(int32_t id) {
  if (!tok_.HasToken(id)) {  // per streamed token: no copy of the token's text
    return InvalidArgument("IncrementalDetokenizer: id " + std::to_string(id) + " names no token (vocab_size " +
                           std::to_string(tok_.vocab_size()) + ")");
  }
  ids_.push_back(id);
  std::span<const int32_t> all(ids_);
  SHOAL_ASSIGN_OR_RETURN(std::string prefix_text,
                         tok_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_));
  SHOAL_ASSIGN_OR_RETURN(std::string new_text, tok_.Decode(all.subspan(prefix_offset_), skip_special_));
  if (new_text.size() <= prefix_text.size() || tok_internal::IncompleteUtf8Tail(new_text) != 0) return std::string();
  std::string delta = ValidUtf8(std::string_view(new_text).substr(prefix_text.size()));
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  // Keep the stored ids bounded: everything before prefix_offset_ is never decoded again.
  if (prefix_offset_ > 4096) {
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_));
    read_offset_ -= prefix_offset_;
    prefix_offset_ = 0;
  }
  return delta;
}

std::string IncrementalDetokenizer::Finish() {
  std::span<const int32_t> all(ids_);
  std::string out;
  auto prefix_text = tok_.Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  auto new_text = tok_.Decode(all.subspan(prefix_offset_), skip_special_);
  if (prefix_text.ok() && new_text.ok() && new_text->size() > prefix_text->size()) {
    out = ValidUtf8(std::string_view(*new_text).substr(prefix_text->size()));
  }
  ids_.clear();
  prefix_offset_ = read_offset_ = 0;
  return out;
}

}  // namespace shoal
