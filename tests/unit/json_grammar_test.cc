// The JSON-schema constraint (grammar/): the compiler's refusals, the matcher on valid and invalid
// texts, the token mask against trying every token one by one, and generations under the mask
// checked by a schema validator written here independently of the matcher (it walks parsed values).
#include <gtest/gtest.h>

#include <random>

#include <nlohmann/json.hpp>

#include "grammar/json_matcher.h"
#include "grammar/json_schema.h"
#include "grammar/token_constraint.h"
#include "model/tokenizer.h"

namespace shoal::grammar {
namespace {

using json = nlohmann::ordered_json;

std::shared_ptr<const JsonGrammar> Compile(const std::string& schema) {
  auto g = CompileJsonSchema(schema, "schema");
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return g.ok() ? *g : nullptr;
}

bool Accepts(const std::shared_ptr<const JsonGrammar>& g, std::string_view text) {
  JsonMatcher m(g);
  return m.Feed(text) && m.accepting();
}

const char* kWeather = R"({"type": "object", "properties": {
  "location": {"type": "string", "description": "City"},
  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
  "days": {"type": "integer"}},
  "required": ["location", "unit"]})";

// --- The validator: independent of the matcher, over parsed values ---------------------------------

int64_t CodePoints(const std::string& s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

bool Valid(const json& v, const json& s, const json& root);

bool ValidType(const json& v, const std::string& t, const json& s, const json& root) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_boolean();
  if (t == "integer") return v.is_number_integer();
  if (t == "number") return v.is_number();
  if (t == "string") {
    if (!v.is_string()) return false;
    const int64_t n = CodePoints(v.get<std::string>());
    return n >= s.value("minLength", int64_t{0}) && (!s.contains("maxLength") || n <= s["maxLength"].get<int64_t>());
  }
  if (t == "array") {
    if (!v.is_array()) return false;
    const auto n = static_cast<int64_t>(v.size());
    if (n < s.value("minItems", int64_t{0}) || (s.contains("maxItems") && n > s["maxItems"].get<int64_t>())) return false;
    for (const json& item : v) {
      if (s.contains("items") && !Valid(item, s["items"], root)) return false;
    }
    return true;
  }
  if (t == "object") {
    if (!v.is_object()) return false;
    const json props = s.value("properties", json::object());
    for (const json& r : s.value("required", json::array())) {
      if (!v.contains(r.get<std::string>())) return false;
    }
    // Declared keys come in the schema's order (the matcher's contract).
    std::vector<std::string> declared;
    for (auto it = props.begin(); it != props.end(); ++it) declared.push_back(it.key());
    size_t next = 0;
    for (auto it = v.begin(); it != v.end(); ++it) {
      auto pos = std::find(declared.begin(), declared.end(), it.key());
      if (pos != declared.end()) {
        const auto at = static_cast<size_t>(pos - declared.begin());
        if (at < next) return false;
        next = at + 1;
        if (!Valid(it.value(), props[it.key()], root)) return false;
        continue;
      }
      const json extra = s.contains("additionalProperties") ? s["additionalProperties"] : json(props.empty());
      if (!Valid(it.value(), extra, root)) return false;
    }
    return true;
  }
  return false;
}

bool Valid(const json& v, const json& s, const json& root) {
  if (s.is_boolean()) return s.get<bool>();
  if (s.contains("$ref")) {
    const std::string ref = s["$ref"];
    if (ref == "#") return Valid(v, root, root);
    return Valid(v, root["$defs"][ref.substr(std::string("#/$defs/").size())], root);
  }
  for (const char* key : {"anyOf", "oneOf"}) {
    if (!s.contains(key)) continue;
    for (const json& alt : s[key]) {
      if (Valid(v, alt, root)) return true;
    }
    return false;
  }
  if (s.contains("const")) return v == s["const"];
  if (s.contains("enum")) return std::find(s["enum"].begin(), s["enum"].end(), v) != s["enum"].end();
  if (!s.contains("type")) {
    if (s.contains("properties") || s.contains("required")) return ValidType(v, "object", s, root);
    return true;
  }
  if (s["type"].is_string()) return ValidType(v, s["type"], s, root);
  for (const json& t : s["type"]) {
    if (ValidType(v, t, s, root)) return true;
  }
  return false;
}

// --- Compiler -------------------------------------------------------------------------------------

TEST(JsonSchema, RefusesWhatItCannotEnforceNamingThePath) {
  auto g = CompileJsonSchema(R"({"type":"object","properties":{"zip":{"type":"string","pattern":"^[0-9]+$"}}})", "tools[0].function.parameters");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(g.status().message().find("tools[0].function.parameters.properties.zip.pattern"), std::string::npos)
      << g.status().message();
  for (const char* bad : {R"({"not": {"type": "string"}})", R"({"allOf": [{"type": "string"}, {"maxLength": 3}]})",
                          R"({"type": "array", "prefixItems": [{"type": "string"}]})"}) {
    auto r = CompileJsonSchema(bad, "s");
    EXPECT_EQ(r.status().code(), StatusCode::kUnimplemented) << bad;
  }
  for (const char* bad : {"{", R"({"type": "strin"})", R"({"$ref": "#/$defs/missing"})", R"({"enum": []})",
                          R"({"type": "string", "minLength": 3, "maxLength": 2})", "false", "[1]",
                          R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})"}) {
    auto r = CompileJsonSchema(bad, "s");
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(CompileJsonSchema(std::string(kMaxSchemaBytes + 1, ' '), "s").ok());
  // Annotations and unenforced bounds are accepted.
  EXPECT_TRUE(CompileJsonSchema(R"({"title": "t", "type": "number", "minimum": 0, "description": "d"})", "s").ok());
}

// --- Matcher --------------------------------------------------------------------------------------

TEST(JsonMatcher, AcceptsTheTextsTheSchemaAllows) {
  auto w = Compile(kWeather);
  for (const char* ok : {R"({"location":"Paris","unit":"celsius"})",
                         R"({"location": "Paris", "unit": "fahrenheit", "days": 3})",
                         "{\n  \"location\": \"P\\u00e9ris \\\"x\\\"\",\n  \"unit\": \"celsius\"\n}",
                         R"(  {"location":"東京","unit":"celsius","days":-12})"}) {
    EXPECT_TRUE(Accepts(w, ok)) << ok;
  }
  for (const char* bad : {R"({"unit":"celsius","location":"Paris"})",          // order
                          R"({"location":"Paris"})",                            // required unit
                          R"({"location":"Paris","unit":"kelvin"})",            // enum
                          R"({"location":"Paris","unit":"celsius","days":1.5})",  // integer
                          R"({"location":"Paris","unit":"celsius","x":1})",     // no other keys
                          R"({"location":"Paris","unit":"celsius"} )",          // nothing after the value
                          R"({"location":"a\qb","unit":"celsius"})",            // escape
                          "{\"location\":\"a\nb\",\"unit\":\"celsius\"}",       // control byte in a string
                          R"({"location":"Paris","unit":"celsius",})", R"({"location":Paris})"}) {
    EXPECT_FALSE(Accepts(w, bad)) << bad;
  }
  auto nums = Compile(R"({"type":"array","items":{"type":"number"},"minItems":1,"maxItems":3})");
  for (const char* ok : {"[0]", "[-0.5e+10, 1E3, 12.25]", "[ 1 ,2 ]"}) EXPECT_TRUE(Accepts(nums, ok)) << ok;
  for (const char* bad : {"[]", "[1,2,3,4]", "[01]", "[1.]", "[-]", "[1e]", "[.5]", "[1,]"}) EXPECT_FALSE(Accepts(nums, bad)) << bad;
  auto any = Compile("{}");
  for (const char* ok : {"null", "true", "-1", R"({"a":[1,{"b":null}],"c":"d"})", "[]", "{}", R"("x")"}) {
    EXPECT_TRUE(Accepts(any, ok)) << ok;
  }
  for (const char* bad : {"nul", "tru e", "{'a':1}", "[1 2]", "{\"a\" 1}"}) EXPECT_FALSE(Accepts(any, bad)) << bad;
  auto lits = Compile(R"({"enum": [1, 10, "a", {"k": [true]}, null]})");
  for (const char* ok : {"1", "10", R"("a")", R"({"k":[true]})", "null"}) EXPECT_TRUE(Accepts(lits, ok)) << ok;
  for (const char* bad : {"100", R"({"k": [true]})", "2", R"("b")"}) EXPECT_FALSE(Accepts(lits, bad)) << bad;
  auto len = Compile(R"({"type":"string","minLength":2,"maxLength":3})");
  for (const char* ok : {R"("ab")", R"("é日x")", R"("\n\t")"}) EXPECT_TRUE(Accepts(len, ok)) << ok;
  for (const char* bad : {R"("a")", R"("abcd")"}) EXPECT_FALSE(Accepts(len, bad)) << bad;
  // Deep nesting is bounded.
  EXPECT_FALSE(Accepts(any, std::string(kMaxNesting + 1, '[') + std::string(kMaxNesting + 1, ']')));
  EXPECT_TRUE(Accepts(any, std::string(kMaxNesting, '[') + std::string(kMaxNesting, ']')));
  // Whitespace runs are bounded.
  EXPECT_FALSE(Accepts(any, "[" + std::string(kMaxWhitespaceRun + 1, ' ') + "1]"));
  EXPECT_TRUE(Accepts(any, "[" + std::string(kMaxWhitespaceRun, ' ') + "1]"));
}

TEST(JsonMatcher, OptionalKeysUnionsAndRecursion) {
  auto g = Compile(R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":["string","null"]},
                      "c":{"type":"boolean"}},"required":["c"],"additionalProperties":{"type":"integer"}})");
  for (const char* ok : {R"({"c":true})", R"({"a":1,"c":false})", R"({"b":null,"c":true,"zz":3})", R"({"a":1,"b":"x","c":true})"}) {
    EXPECT_TRUE(Accepts(g, ok)) << ok;
  }
  for (const char* bad : {R"({"a":1})", R"({"c":true,"zz":"s"})", R"({"b":1,"c":true})"}) EXPECT_FALSE(Accepts(g, bad)) << bad;
  auto tree = Compile(R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
                         "kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v"]}},
                         "$ref":"#/$defs/node"})");
  EXPECT_TRUE(Accepts(tree, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]})"));
  EXPECT_FALSE(Accepts(tree, R"({"v":1,"kids":[{"w":2}]})"));
}

// Hostile or awkward schemas (a review's findings): self-references, shared unions, wide unions,
// nesting that could strand a generation, surrogates, escaped keys, enum beside type.
TEST(JsonSchema, SelfReferencesAndSharedUnionsAreFlattened) {
  EXPECT_FALSE(CompileJsonSchema(R"({"$ref": "#"})", "s").ok());  // allows no value
  EXPECT_FALSE(CompileJsonSchema(R"({"$defs":{"a":{"allOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"})", "s").ok());
  auto g = Compile(R"({"anyOf": [{"$ref": "#"}, {"type": "string"}]})");
  EXPECT_TRUE(Accepts(g, R"("x")"));
  EXPECT_FALSE(Accepts(g, "1"));
  // 2^30 paths through 31 shared unions: flattened once, a byte costs one alternative.
  json defs = json::object();
  for (int i = 0; i < 30; ++i) {
    const std::string next = "#/$defs/a" + std::to_string(i + 1);
    defs["a" + std::to_string(i)] = {{"anyOf", json::array({{{"$ref", next}}, {{"$ref", next}}})}};
  }
  defs["a30"] = {{"type", "string"}};
  const json chain = {{"$defs", defs}, {"$ref", "#/$defs/a0"}};
  auto c = Compile(chain.dump());
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(Accepts(c, R"("deep")"));
  // A union of 200 alternatives: every one reachable (the tools of tool_choice "required").
  json alts = json::array();
  for (int i = 0; i < 200; ++i) alts.push_back({{"const", "f" + std::to_string(i)}});
  auto wide = Compile(json{{"type", "array"}, {"items", {{"anyOf", alts}}}}.dump());
  EXPECT_TRUE(Accepts(wide, R"(["f0","f199","f57"])"));
  json too_wide = json::array();
  for (int i = 0; i < static_cast<int>(kMaxUnionLeaves) + 1; ++i) too_wide.push_back({{"const", i}});
  EXPECT_FALSE(CompileJsonSchema(json{{"anyOf", too_wide}}.dump(), "s").ok());
}

TEST(JsonSchema, NestingNeverStrandsAGeneration) {
  // Objects that must nest deeper than the bound cannot be compiled...
  json deep = {{"type", "string"}};
  for (int i = 0; i < kMaxNesting; ++i) deep = {{"type", "object"}, {"properties", {{"x", deep}}}, {"required", {"x"}}};
  EXPECT_FALSE(CompileJsonSchema(deep.dump(), "s").ok());
  // ...and at the bound, nothing opens that could not close: a generation that nests greedily still
  // has a way on at every step, and ends.
  auto vocab = std::make_shared<const TokenVocabulary>(std::vector<std::string>{"", "{", "[", "\"", "a", ":", "]", "}", "1"});
  for (const char* schema : {"{}", R"({"type":"object"})",
                             R"({"$defs":{"n":{"type":"object","properties":{"a":{"type":"array","items":{"$ref":"#/$defs/n"}}}}},"$ref":"#/$defs/n"})"}) {
    TokenConstraint c(Compile(schema), vocab);
    std::vector<uint8_t> allowed;
    std::string text;
    std::ptrdiff_t depth = 0;
    int steps = 0;
    for (; steps < 400; ++steps) {
      c.Allowed(std::vector<int32_t>{0}, vocab->size(), &allowed);
      ASSERT_NE(std::count(allowed.begin(), allowed.end(), 1), 0) << schema << " stranded after " << steps;
      if (allowed[0]) break;
      int32_t pick = -1;
      // Open whatever can be opened for 200 steps (down to the bound; a string is closed at once),
      // then close.
      const bool in_string = std::count(text.begin(), text.end(), '"') % 2 == 1;
      const std::vector<int32_t> order = in_string     ? std::vector<int32_t>{3, 4}
                                         : steps < 200 ? std::vector<int32_t>{2, 1, 3, 5, 4, 8, 6, 7}
                                                       : std::vector<int32_t>{8, 6, 7, 5, 3, 4, 1, 2};
      for (int32_t t : order) {
        if (allowed[static_cast<size_t>(t)]) {
          pick = t;
          break;
        }
      }
      ASSERT_TRUE(c.Accept(pick));
      text += vocab->bytes(pick);
      depth = std::max(depth, std::count(text.begin(), text.end(), '[') + std::count(text.begin(), text.end(), '{') -
                                  std::count(text.begin(), text.end(), ']') - std::count(text.begin(), text.end(), '}'));
    }
    EXPECT_LT(steps, 400) << schema;
    EXPECT_EQ(depth, kMaxNesting) << schema << ": nested down to the bound\n" << text;
    EXPECT_TRUE(json::accept(text)) << text;
  }
}

TEST(JsonMatcher, SurrogatesEscapedKeysAndTypedEnums) {
  auto str = Compile(R"({"type":"string","minLength":2})");
  EXPECT_TRUE(Accepts(str, R"("\ud83d\ude00x")"));
  EXPECT_FALSE(Accepts(str, R"("\ud83d\ude00")"));  // one code point
  auto any = Compile("{}");
  for (const char* bad : {R"("\ud800")", R"("\udc00")", R"("\ud800x")", R"("\ud800\u0041")"}) EXPECT_FALSE(Accepts(any, bad)) << bad;
  EXPECT_TRUE(Accepts(any, R"("\ud800\udc00")"));
  {  // a prefix no digit completes is refused at once (a fuzz find: the generation was stranded)
    JsonMatcher m(any);
    EXPECT_FALSE(m.Feed(R"("\uDC)"));
  }
  auto keys = Compile(R"({"type":"object","properties":{"n":{"type":"integer"}},"additionalProperties":{"type":"string"}})");
  EXPECT_TRUE(Accepts(keys, R"({"n":1,"m":"x"})"));
  EXPECT_FALSE(Accepts(keys, R"({"\u006e":"x"})"));  // an escape spelling a declared name
  EXPECT_FALSE(Accepts(keys, R"({"n":"x"})"));
  EXPECT_TRUE(Accepts(keys, R"({"a\u0001":"x"})"));  // a control character must be escaped
  JsonMatcher k(keys);
  EXPECT_FALSE(k.Feed(R"({"a\u01)"));  // no control character's code starts so
  auto typed = Compile(R"({"type":"string","enum":[1,"a"]})");
  EXPECT_TRUE(Accepts(typed, R"("a")"));
  EXPECT_FALSE(Accepts(typed, "1"));
  EXPECT_FALSE(CompileJsonSchema(R"({"type":"string","enum":[1,2]})", "s").ok());
}

// --- Token mask -----------------------------------------------------------------------------------

// A small vocabulary with the shapes real ones have: single bytes, structural runs, words, UTF-8.
std::vector<std::string> SyntheticVocabulary() {
  std::vector<std::string> v = {""};  // token 0: a special token (the stop token below)
  for (int c = 0x20; c < 0x7F; ++c) v.push_back(std::string(1, static_cast<char>(c)));
  for (const char* t : {"\n", "\t", "{\"", "\":", "\": \"", "\", \"", "\"}", "\"]", "},{", "[{\"", "  ", "\n  ",
                        "true", "false", "null", "12", "0.5", "e+", "-3", "name", "location", "unit", "celsius",
                        "\"location", "\"unit\": \"", " \"", "\\n", "\\u00e9", "\xC3\xA9", "\xE6\x97\xA5\xE6\x9C\xAC",
                        "\xE6\x97", "\xA5", "Paris", " Paris\"", "\"}]", "parameters", "\"parameters\": {", "get_weather",
                        "\"name\": \"", "{\"name\": \"get_weather\", \"parameters\": "}) {
    v.push_back(t);
  }
  v.push_back("");  // another special token, never allowed
  return v;
}

// Tokens allowed, by trying each one on a copy of the matcher.
std::vector<uint8_t> BruteForce(const JsonMatcher& m, const TokenVocabulary& v, int32_t stop) {
  std::vector<uint8_t> out(static_cast<size_t>(v.size()), 0);
  for (int32_t t = 0; t < v.size(); ++t) {
    if (v.bytes(t).empty()) continue;
    JsonMatcher copy = m;
    out[static_cast<size_t>(t)] = copy.Feed(v.bytes(t)) ? 1 : 0;
  }
  if (m.accepting()) out[static_cast<size_t>(stop)] = 1;
  return out;
}

const char* kRequiredTools = R"({"type":"array","minItems":1,"items":{"anyOf":[
  {"type":"object","properties":{"name":{"const":"get_weather"},"parameters":)"
  R"({"type": "object", "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location", "unit"]})"
  R"(},"required":["name","parameters"]},
  {"type":"object","properties":{"name":{"const":"noop"},"parameters":{"type":"object","properties":{}}},"required":["name","parameters"]}]}})";

TEST(TokenConstraint, MaskEqualsTryingEveryTokenAndGenerationsValidate) {
  auto vocab = std::make_shared<const TokenVocabulary>(SyntheticVocabulary());
  const int32_t stop = 0;
  const std::vector<std::string> schemas = {
      kWeather, kRequiredTools, "{}",
      R"({"type":"object","properties":{"xs":{"type":"array","items":{"type":["integer","null"]},"maxItems":4},
          "s":{"type":"string","maxLength":5},"f":{"type":"number"},"e":{"enum":["a",2,true]}},"required":["s","e"]})",
      R"({"$defs":{"n":{"type":"object","properties":{"v":{"type":"integer"},"k":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/n"})",
      // Several alternatives inside one string body (the fast path takes the largest room).
      R"({"type":"array","items":{"anyOf":[{"type":"string","maxLength":2},{"type":"string","maxLength":6},{"enum":["Paris","Oslo"]}]}})"};
  std::mt19937_64 rng(7);
  int finished = 0, runs = 0;
  for (const std::string& schema_text : schemas) {
    const json schema = json::parse(schema_text);
    auto g = Compile(schema_text);
    ASSERT_NE(g, nullptr);
    for (int run = 0; run < 40; ++run, ++runs) {
      TokenConstraint c(g, vocab);
      JsonMatcher shadow(g);
      std::string text;
      std::vector<uint8_t> allowed;
      bool done = false;
      for (int step = 0; step < 200 && !done; ++step) {
        c.Allowed(std::vector<int32_t>{stop}, vocab->size() + 3, &allowed);
        ASSERT_EQ(allowed.size(), static_cast<size_t>(vocab->size() + 3));
        EXPECT_EQ(allowed[allowed.size() - 1], 0);  // beyond the tokenizer's vocabulary
        allowed.resize(static_cast<size_t>(vocab->size()));
        ASSERT_EQ(allowed, BruteForce(shadow, *vocab, stop)) << schema_text << " after " << text;
        std::vector<int32_t> choices, closing;
        for (int32_t t = 0; t < vocab->size(); ++t) {
          if (!allowed[static_cast<size_t>(t)]) continue;
          choices.push_back(t);
          if (vocab->bytes(t).find_first_of("\"]}") != std::string::npos) closing.push_back(t);
        }
        ASSERT_FALSE(choices.empty()) << "a dead end after " << text;
        int32_t t;
        if (allowed[stop] && rng() % 2 == 0) {
          t = stop;
        } else if (!closing.empty() && rng() % 3 == 0) {
          t = closing[rng() % closing.size()];
        } else {
          t = choices[rng() % choices.size()];
        }
        if (t == stop) {
          done = true;
          break;
        }
        ASSERT_TRUE(c.Accept(t));
        ASSERT_TRUE(shadow.Feed(vocab->bytes(t)));
        text += vocab->bytes(t);
      }
      if (!done) continue;
      ++finished;
      json v = json::parse(text, nullptr, false);
      ASSERT_FALSE(v.is_discarded()) << text;
      EXPECT_TRUE(Valid(v, schema, schema)) << schema_text << "\n" << text;
    }
  }
  EXPECT_GT(finished, runs / 2);
}

TEST(TokenConstraint, ABrokenTokenKillsTheConstraint) {
  auto vocab = std::make_shared<const TokenVocabulary>(SyntheticVocabulary());
  TokenConstraint c(Compile(kWeather), vocab);
  std::vector<uint8_t> allowed;
  EXPECT_FALSE(c.Accept(0));  // a special token
  EXPECT_TRUE(c.dead());
  c.Allowed(std::vector<int32_t>{0}, vocab->size(), &allowed);
  EXPECT_EQ(std::count(allowed.begin(), allowed.end(), 1), 0);
}

// Each token's bytes mid-text, for the tokenizer kinds shoal serves: decoding any run of ordinary
// tokens after the anchor gives the anchor's text followed by the tokens' bytes.
TEST(TokenVocabulary, BytesConcatenateToTheDecodedText) {
  for (const char* name : {"qwen-bytelevel", "spm-bytefallback", "llama3-style", "deepseek-style"}) {
    auto tok = Tokenizer::Load(std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + name);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    auto vocab = TokenVocabulary::FromTokenizer(**tok);
    ASSERT_TRUE(vocab.ok()) << vocab.status().ToString();
    const int32_t anchor = *(*tok)->TokenId("a");
    const std::string prefix = *(*tok)->Decode(std::vector<int32_t>{anchor}, false);
    std::vector<int32_t> ordinary;
    for (int32_t t = 0; t < (*vocab)->size(); ++t) {
      if (!(*vocab)->bytes(t).empty()) ordinary.push_back(t);
      if ((*tok)->IsSpecial(t)) {
        EXPECT_TRUE((*vocab)->bytes(t).empty()) << name << " token " << t;
      }
    }
    ASSERT_GT(ordinary.size(), 100u) << name;
    std::mt19937_64 rng(3);
    for (int run = 0; run < 200; ++run) {
      std::vector<int32_t> ids = {anchor};
      std::string expect = prefix;
      for (int i = 0; i < 6; ++i) {
        const int32_t t = ordinary[rng() % ordinary.size()];
        ids.push_back(t);
        expect += (*vocab)->bytes(t);
      }
      EXPECT_EQ(*(*tok)->Decode(ids, false), expect) << name;
    }
  }
}

// With a real byte-level vocabulary, every token sequence the mask lets through is a valid call.
TEST(TokenConstraint, RealVocabularyGenerationsValidate) {
  auto tok = Tokenizer::Load(std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/tokenizers/qwen-bytelevel");
  ASSERT_TRUE(tok.ok());
  auto vocab = TokenVocabulary::FromTokenizer(**tok);
  ASSERT_TRUE(vocab.ok());
  const json schema = json::parse(kRequiredTools);
  auto g = Compile(kRequiredTools);
  const int32_t stop = *(*tok)->TokenId("<|im_end|>");
  std::mt19937_64 rng(11);
  int finished = 0;
  for (int run = 0; run < 30; ++run) {
    TokenConstraint c(g, *vocab);
    std::vector<uint8_t> allowed;
    std::vector<int32_t> ids;
    for (int step = 0; step < 300; ++step) {
      c.Allowed(std::vector<int32_t>{stop}, (*vocab)->size(), &allowed);
      std::vector<int32_t> choices, closing;
      for (int32_t t = 0; t < (*vocab)->size(); ++t) {
        if (!allowed[static_cast<size_t>(t)]) continue;
        choices.push_back(t);
        if ((*vocab)->bytes(t).find_first_of("\"]}") != std::string::npos) closing.push_back(t);
      }
      ASSERT_FALSE(choices.empty());
      if (allowed[static_cast<size_t>(stop)]) {
        ++finished;
        break;
      }
      const int32_t t = !closing.empty() && rng() % 2 == 0 ? closing[rng() % closing.size()] : choices[rng() % choices.size()];
      ASSERT_TRUE(c.Accept(t));
      ids.push_back(t);
    }
    if (!c.complete()) continue;
    const std::string text = *(*tok)->Decode(ids, false);
    json v = json::parse(text, nullptr, false);
    ASSERT_FALSE(v.is_discarded()) << text;
    EXPECT_TRUE(Valid(v, schema, schema)) << text;
  }
  EXPECT_GT(finished, 10);
}

}  // namespace
}  // namespace shoal::grammar
