// Output constrained to a JSON schema on the worker (worker/scheduler.h, json_schema): a real model
// and its tokenizer write texts the schema accepts, end only once whole, continue identically after a
// resume, fork per choice; requests the worker cannot constrain are refused with the reason.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/tokenizer.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"
#include "worker/scheduler.h"

namespace shoal {
namespace {

using json = nlohmann::ordered_json;

// Every text it accepts is short (an enum, a bounded integer, a boolean), so a generation always
// completes well within max_tokens whatever the random model prefers.
const char* kSchema = R"({"type":"object","properties":{"unit":{"enum":["celsius","fahrenheit"]},
  "days":{"type":"integer"},"ok":{"type":"boolean"}},"required":["unit","days","ok"]})";

struct ConstrainedModel {
  testing::Fixture f = testing::LoadFixture("qwen3-moe-f32");
  std::unique_ptr<Tokenizer> tok;
  std::shared_ptr<const grammar::TokenVocabulary> vocab;
  std::unique_ptr<Engine> engine;
  int32_t eos = -1;

  ConstrainedModel() {
    auto t = Tokenizer::Load(f.dir);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    tok = std::move(*t);
    auto v = grammar::TokenVocabulary::FromTokenizer(*tok);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    vocab = *v;
    eos = tok->TokenId("<|im_end|>").value_or(-1);
    auto config = LoadModelConfig(f.dir);
    auto weights = LoadModelWeights(*config, f.dir);
    EngineConfig cfg;
    cfg.threads = 2;
    cfg.kv_block_size = 4;
    cfg.kv_cache_blocks = 512;
    cfg.max_step_tokens = 64;
    auto e = Engine::Create(*config, std::move(weights).value(), cfg);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    engine = std::move(*e);
  }

  ScheduledRequest Request(uint64_t id, float temperature, uint64_t seed) const {
    ScheduledRequest r;
    r.id = id;
    r.prompt = f.prompts[0].prompt;
    r.max_tokens = 120;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.stop_ids = {eos};
    r.json_schema = kSchema;
    return r;
  }
};

struct Generated {
  std::vector<int32_t> tokens;
  control::FinishReason finish = control::FinishReason::kNone;
  std::string error;
};

std::map<uint64_t, Generated> RunAll(Scheduler& s) {
  std::map<uint64_t, Generated> out;
  std::vector<control::TokenEvent> events;
  for (int step = 0; step < 10000 && s.HasWork(); ++step) {
    events.clear();
    EXPECT_TRUE(s.Step(&events).ok());
    for (const auto& e : events) {
      if (e.token >= 0) out[e.request].tokens.push_back(e.token);
      out[e.request].finish = e.finish;
      out[e.request].error = e.error;
    }
  }
  return out;
}

// The text (without the stop token) parses and has the schema's keys in order with values it allows.
void ExpectValid(const ConstrainedModel& su, const Generated& r) {
  ASSERT_EQ(r.finish, control::FinishReason::kStop) << r.error;
  std::vector<int32_t> ids = r.tokens;
  if (!ids.empty() && ids.back() == su.eos) ids.pop_back();
  const std::string text = *su.tok->Decode(ids, false);
  const json v = json::parse(text, nullptr, false);
  ASSERT_FALSE(v.is_discarded()) << text;
  ASSERT_TRUE(v.is_object()) << text;
  std::vector<std::string> keys;
  for (auto it = v.begin(); it != v.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"unit", "days", "ok"})) << text;
  EXPECT_TRUE(v["unit"] == "celsius" || v["unit"] == "fahrenheit") << text;
  EXPECT_TRUE(v["days"].is_number_integer()) << text;
  EXPECT_TRUE(v["ok"].is_boolean()) << text;
}

TEST(SchedulerConstraint, OutputsFitTheSchemaAndEndOnlyWhenWhole) {
  ConstrainedModel su;
  ASSERT_GE(su.eos, 0);
  Scheduler s(*su.engine, su.vocab);
  for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(s.Submit(su.Request(1 + i, i == 0 ? 0.0f : 1.0f, 100 + i)).ok());
  const auto out = RunAll(s);
  ASSERT_EQ(out.size(), 6u);
  for (const auto& [id, r] : out) {
    SCOPED_TRACE(id);
    ExpectValid(su, r);
    EXPECT_EQ(r.tokens.back(), su.eos);
  }
  // min_tokens past the text's end does not keep a whole text from ending: the stop token is all
  // the constraint allows then.
  Scheduler s3(*su.engine, su.vocab);
  ScheduledRequest m = su.Request(8, 1.0f, 3);
  m.sampling.min_tokens = 100;
  ASSERT_TRUE(s3.Submit(m).ok());
  ExpectValid(su, RunAll(s3).at(8));
  // Without a stop id (ignore_eos) it ends when the text is whole: a finish with no token.
  Scheduler s2(*su.engine, su.vocab);
  ScheduledRequest r = su.Request(9, 1.0f, 7);
  r.stop_ids.clear();
  ASSERT_TRUE(s2.Submit(r).ok());
  const Generated ignore = RunAll(s2).at(9);
  EXPECT_EQ(ignore.finish, control::FinishReason::kStop);
  Generated with_eos = ignore;
  with_eos.tokens.push_back(su.eos);
  ExpectValid(su, with_eos);
}

TEST(SchedulerConstraint, ResumedAndForkedRequestsContinueUnderTheSchema) {
  ConstrainedModel su;
  Scheduler whole(*su.engine, su.vocab);
  ASSERT_TRUE(whole.Submit(su.Request(1, 1.0f, 4242)).ok());
  const std::vector<int32_t> want = RunAll(whole).at(1).tokens;
  ASSERT_GT(want.size(), 6u);
  for (size_t k : {size_t{1}, size_t{5}}) {
    ScheduledRequest r = su.Request(2, 1.0f, 4242);
    r.prompt.insert(r.prompt.end(), want.begin(), want.begin() + static_cast<std::ptrdiff_t>(k));
    r.resumed_output = static_cast<int64_t>(k);
    Scheduler other(*su.engine, su.vocab);
    ASSERT_TRUE(other.Submit(r).ok());
    EXPECT_EQ(RunAll(other).at(2).tokens, std::vector<int32_t>(want.begin() + static_cast<std::ptrdiff_t>(k), want.end()));
  }
  // A resumed output the schema does not allow is refused.
  ScheduledRequest bad = su.Request(3, 1.0f, 1);
  bad.prompt.push_back(*su.tok->TokenId("a"));
  bad.resumed_output = 1;
  Scheduler s(*su.engine, su.vocab);
  EXPECT_TRUE(testing::MessageHas(s.Submit(bad), "does not fit its json_schema"));
  // n > 1: choices forked from one prefill, each under its own constraint, each equal to running alone.
  Scheduler forks(*su.engine, su.vocab);
  for (uint64_t i = 0; i < 3; ++i) {
    ScheduledRequest r = su.Request(10 + i, 1.0f, 4242 + i);
    r.fork_of = i == 0 ? 0 : 10;
    ASSERT_TRUE(forks.Submit(r).ok());
  }
  const auto out = RunAll(forks);
  EXPECT_EQ(out.at(10).tokens, want);
  for (uint64_t i = 0; i < 3; ++i) ExpectValid(su, out.at(10 + i));
}

TEST(SchedulerConstraint, RequestsItCannotConstrainAreRefused) {
  ConstrainedModel su;
  Scheduler none(*su.engine);  // no vocabulary
  EXPECT_TRUE(testing::MessageHas(none.Submit(su.Request(1, 0.0f, 1)), "tokenizer.json"));
  Scheduler s(*su.engine, su.vocab);
  ScheduledRequest r = su.Request(2, 0.0f, 1);
  r.json_schema = R"({"type":"string","pattern":"^a+$"})";
  const Status st = s.Submit(r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::MessageHas(st, "request 2: json_schema.pattern")) << st.ToString();
  r.json_schema = "{";
  EXPECT_TRUE(testing::MessageHas(s.Submit(r), "not valid JSON"));
}

}  // namespace
}  // namespace shoal
