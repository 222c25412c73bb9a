// shoal::Tokenizer against HF `tokenizers`: every case in tests/fixtures/tokenizers/*/cases.json (made
// by tools/reference/make_tokenizer_fixtures.py) must encode to HF's ids and decode to HF's strings,
// and streaming detokenization must reproduce the full decode one whole character at a time.
#include "model/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace shoal {
namespace {

using json = nlohmann::json;

std::string TokDir(const std::string& name) { return std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + name; }

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::string Show(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

std::unique_ptr<Tokenizer> MustLoad(const std::string& name) {
  auto tok = Tokenizer::Load(TokDir(name));
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

// Streams `ids` through an IncrementalDetokenizer; every piece must be whole UTF-8 characters.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  IncrementalDetokenizer d(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    auto piece = d.Append(id);
    EXPECT_TRUE(piece.ok()) << piece.status().ToString();
    if (!piece.ok()) return all;
    EXPECT_EQ(ValidUtf8(*piece), *piece) << "partial UTF-8 emitted after id " << id;
    all += *piece;
  }
  std::string tail = d.Finish();
  EXPECT_EQ(ValidUtf8(tail), tail);
  return all + tail;
}

class TokenizerFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixture, MatchesHuggingFace) {
  auto tok = MustLoad(GetParam());
  ASSERT_NE(tok, nullptr);
  const json cases = ReadJson(TokDir(GetParam()) + "/cases.json");
  ASSERT_GE(cases["cases"].size(), 30u);
  int checked = 0;
  for (const json& c : cases["cases"]) {
    const std::string text = c["text"];
    for (auto [add, key] : {std::pair{true, "with_special"}, std::pair{false, "no_special"}}) {
      const json& want = c[key];
      const std::vector<int32_t> want_ids = want["ids"];
      auto ids = tok->Encode(text, add);
      ASSERT_TRUE(ids.ok()) << ids.status().ToString();
      EXPECT_EQ(Show(*ids), Show(want_ids)) << key << " text=" << json(text).dump();
      for (auto [skip, dkey] : {std::pair{false, "decode"}, std::pair{true, "decode_skip_special"}}) {
        auto dec = tok->Decode(want_ids, skip);
        ASSERT_TRUE(dec.ok()) << dec.status().ToString();
        EXPECT_EQ(ValidUtf8(*dec), want[dkey].get<std::string>()) << key << "/" << dkey << " ids=" << Show(want_ids);
        EXPECT_EQ(Stream(*tok, want_ids, skip), ValidUtf8(*dec)) << "incremental " << key << "/" << dkey;
      }
      ++checked;
    }
  }
  for (const json& s : cases["streams"]) {
    const std::vector<int32_t> ids = s["ids"];
    EXPECT_EQ(Stream(*tok, ids, s["skip_special_tokens"]), s["text"].get<std::string>());
  }
  std::printf("[ %s ] %d encodings of %zu texts match HF tokenizers %s\n", GetParam().c_str(), checked,
              cases["cases"].size(), cases["tokenizers_version"].get<std::string>().c_str());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerFixture,
                         ::testing::Values("qwen-bytelevel", "spm-bytefallback", "llama3-style", "deepseek-style",
                                           "tiny-unk"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

TEST(Tokenizer, FixtureShapes) {
  auto qwen = MustLoad("qwen-bytelevel");
  ASSERT_NE(qwen, nullptr);
  EXPECT_EQ(qwen->vocab_size(), 320);
  EXPECT_EQ(qwen->TokenId("<|im_end|>"), 319);
  EXPECT_TRUE(qwen->IsSpecial(317));
  EXPECT_FALSE(qwen->IsSpecial(100));
  EXPECT_EQ(qwen->eos_token(), "<|im_end|>");
  EXPECT_EQ(qwen->bos_token(), std::nullopt);
  EXPECT_EQ(qwen->chat_template(), "");

  auto spm = MustLoad("spm-bytefallback");
  ASSERT_NE(spm, nullptr);
  EXPECT_EQ(spm->vocab_size(), 320);
  EXPECT_EQ(spm->TokenId("<s>"), 1);
  EXPECT_EQ(spm->TokenId("</s>"), 2);
  EXPECT_EQ(spm->TokenId("<0x00>"), 3);
  EXPECT_EQ(spm->TokenId("<0xFF>"), 258);
  EXPECT_EQ(spm->bos_token(), "<s>");
  EXPECT_EQ(spm->eos_token(), "</s>");
  auto ids = spm->Encode("hi", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 1);
}

TEST(Tokenizer, StreamHoldsBackPartialCharacters) {
  auto spm = MustLoad("spm-bytefallback");
  ASSERT_NE(spm, nullptr);
  auto ids = spm->Encode("日本", false);  // not in the 320-id vocab: byte fallback, 3 ids per character
  ASSERT_TRUE(ids.ok());
  ASSERT_GE(ids->size(), 6u);
  IncrementalDetokenizer d(*spm, false);
  std::vector<std::string> pieces;
  for (int32_t id : *ids) pieces.push_back(d.Append(id).value());
  const size_t n = pieces.size();
  EXPECT_EQ(pieces[n - 6], "");
  EXPECT_EQ(pieces[n - 5], "");
  EXPECT_EQ(pieces[n - 4], "日");
  EXPECT_EQ(pieces[n - 1], "本");
  EXPECT_EQ(d.Finish(), "");
  // A stream cut inside a character: the raw decode ends in the partial bytes, Finish() gives U+FFFD.
  std::vector<int32_t> cut(ids->begin(), ids->end() - 1);
  auto raw = spm->Decode(cut, false);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->substr(raw->size() - 2), "\xE6\x9C");
  for (int32_t id : cut) (void)d.Append(id);
  EXPECT_EQ(d.Finish(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, BadIdsAndText) {
  auto tok = MustLoad("qwen-bytelevel");
  ASSERT_NE(tok, nullptr);
  std::vector<int32_t> bad = {5, 320};
  auto dec = tok->Decode(bad, false);
  ASSERT_FALSE(dec.ok());
  EXPECT_EQ(dec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dec.status().message().find("id 320 at position 1"), std::string::npos) << dec.status().ToString();
  EXPECT_FALSE(tok->Decode(std::vector<int32_t>{-1}, false).ok());
  IncrementalDetokenizer d(*tok, false);
  EXPECT_FALSE(d.Append(999).ok());
  auto enc = tok->Encode("ab\xFF", false);
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.status().message().find("byte 2"), std::string::npos);
}

struct BadCase {
  const char* name;
  std::string json;
  StatusCode code;
  const char* needle;
};

TEST(Tokenizer, MalformedJsonIsAnError) {
  const std::string model_ok = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  const std::vector<BadCase> cases = {
      {"not json", "{\"model\": ", StatusCode::kInvalidArgument, "not valid JSON"},
      {"not object", "[1, 2]", StatusCode::kInvalidArgument, "expected an object"},
      {"no model", R"({"normalizer": null})", StatusCode::kInvalidArgument, "model: missing"},
      {"unigram", R"({"model": {"type": "Unigram", "vocab": []}})", StatusCode::kUnimplemented, "Unigram"},
      {"unknown merge", R"({"model": {"type": "BPE", "vocab": {"a": 0, "ab": 2}, "merges": ["a b"]}})",
       StatusCode::kInvalidArgument, "model.merges[0]: token \"b\" is not in the vocab"},
      {"merged not in vocab", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}})",
       StatusCode::kInvalidArgument, "merged token \"ab\""},
      {"bad merge form", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})", StatusCode::kInvalidArgument,
       "model.merges[0]"},
      {"bad vocab id", R"({"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}})", StatusCode::kInvalidArgument,
       "model.vocab[\"a\"]"},
      {"dropout", R"({"model": {"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []}})",
       StatusCode::kUnimplemented, "dropout"},
      {"unk missing", R"({"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {}, "merges": []}})",
       StatusCode::kInvalidArgument, "model.unk_token"},
      {"bad normalizer", "{" + model_ok + R"(, "normalizer": {"type": "Sequence", "normalizers": [{"type": "BertNormalizer"}]}})",
       StatusCode::kUnimplemented, "normalizer.normalizers[0].type: unsupported \"BertNormalizer\""},
      {"bad pre_tokenizer", "{" + model_ok + R"(, "pre_tokenizer": {"type": "Whitespace"}})", StatusCode::kUnimplemented,
       "pre_tokenizer.type"},
      {"bad regex", "{" + model_ok + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})",
       StatusCode::kInvalidArgument, "pre_tokenizer.pattern.Regex"},
      {"bad behavior", "{" + model_ok + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Odd"}})",
       StatusCode::kInvalidArgument, "pre_tokenizer.behavior"},
      {"bad decoder", "{" + model_ok + R"(, "decoder": {"type": "WordPiece"}})", StatusCode::kUnimplemented,
       "decoder.type"},
      {"bad post", "{" + model_ok + R"(, "post_processor": {"type": "BertProcessing"}})", StatusCode::kUnimplemented,
       "post_processor.type"},
      {"template unknown special",
       "{" + model_ok + R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}})",
       StatusCode::kInvalidArgument, "post_processor.single[0]"},
      {"added bad", "{" + model_ok + R"(, "added_tokens": [{"id": 5}]})", StatusCode::kInvalidArgument,
       "added_tokens[0].content"},
      {"type not string", "{" + model_ok + R"(, "decoder": {"type": 3}})", StatusCode::kInvalidArgument, "decoder.type"},
  };
  for (const BadCase& c : cases) {
    auto tok = Tokenizer::FromJson(c.json, "bad.json");
    ASSERT_FALSE(tok.ok()) << c.name;
    EXPECT_EQ(tok.status().code(), c.code) << c.name << ": " << tok.status().ToString();
    EXPECT_NE(tok.status().message().find(c.needle), std::string::npos) << c.name << ": " << tok.status().ToString();
    EXPECT_NE(tok.status().message().find("bad.json"), std::string::npos) << c.name;
  }
  auto missing = Tokenizer::Load("/nonexistent/dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/tokenizer.json"), std::string::npos);
}

TEST(Tokenizer, ConfigAddsBosWithoutPostProcessor) {
  auto tok = Tokenizer::FromJson(
      R"({"model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2, "ab": 3}, "merges": [["a", "b"]]},
          "added_tokens": [{"id": 0, "content": "<s>", "special": true}]})",
      "t.json");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  ASSERT_TRUE((*tok)->ApplyConfigJson(R"({"bos_token": {"content": "<s>"}, "add_bos_token": true, "chat_template": "{{x}}"})",
                                      "c.json").ok());
  EXPECT_EQ(Show((*tok)->Encode("abab", true).value()), "[0,3,3]");
  EXPECT_EQ(Show((*tok)->Encode("abab", false).value()), "[3,3]");
  EXPECT_EQ((*tok)->chat_template(), "{{x}}");
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{0, 3, 1}, false).value(), "<s> ab a");  // no decoder: joined by spaces
  auto bad = (*tok)->ApplyConfigJson(R"({"eos_token": "</s>", "add_eos_token": true})", "c.json");
  EXPECT_FALSE(bad.ok());
}

TEST(Tokenizer, EncodeThroughput) {
  auto tok = MustLoad("llama3-style");
  ASSERT_NE(tok, nullptr);
  const json cases = ReadJson(TokDir("llama3-style") + "/cases.json");
  std::string text;
  while (text.size() < 100 * 1024) {
    for (const json& c : cases["cases"]) text += c["text"].get<std::string>() + " ";
  }
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->Encode(text, true);
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(ids.ok());
  auto ids2 = tok->Encode(text, true);  // warm BPE cache
  auto t2 = std::chrono::steady_clock::now();
  const double cold = std::chrono::duration<double>(t1 - t0).count();
  const double warm = std::chrono::duration<double>(t2 - t1).count();
  EXPECT_EQ(*ids, *ids2);
  std::printf("[ throughput ] %zu bytes -> %zu ids: %.1f ms cold (%.1f MB/s), %.1f ms warm (%.1f MB/s)\n",
              text.size(), ids->size(), cold * 1e3, text.size() / cold / 1e6, warm * 1e3, text.size() / warm / 1e6);
  EXPECT_LT(cold, 2.0);
}

}  // namespace
}  // namespace shoal
