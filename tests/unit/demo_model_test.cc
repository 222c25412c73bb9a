// The embedded demo model (models/demo-kjv-moe, trained by tools/demo-model/train.py) against
// transformers (tools/demo-model/reference.py): the same prompt ids from the chat template and the
// tokenizer, and the same greedy continuation, token for token, through shoal's engine in f32 (its
// bf16 weights widen exactly, as transformers' f32 run does).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "model/chat_template.h"
#include "model/jinja/template.h"
#include "model/tokenizer.h"
#include "tests/unit/fixture_util.h"
#include "worker/generate.h"

namespace shoal {
namespace {

std::string DemoDir() {
  const char* env = std::getenv("SHOAL_SOURCE_DIR");
  return std::string(env && *env ? env : SHOAL_SOURCE_DIR) + "/models/demo-kjv-moe";
}

TEST(DemoModel, PromptIdsAndGreedyContinuationsMatchTransformers) {
  const std::string dir = DemoDir();
  std::ifstream in(dir + "/reference.json");
  ASSERT_TRUE(in) << dir << "/reference.json";
  const auto ref = nlohmann::ordered_json::parse(in);
  auto tok = Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto tmpl = jinja::Template::Parse((*tok)->chat_template(), "demo-kjv-moe");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
  auto engine = testing::MakeEngine(dir);
  ASSERT_TRUE(engine);

  std::vector<GenerateRequest> reqs;
  for (const auto& c : ref["cases"]) {
    std::vector<int32_t> ids;
    if (c.contains("messages")) {
      ChatTemplateOptions o;
      o.eos_token = (*tok)->eos_token().value_or("");
      auto text = RenderChatTemplate(**tmpl, c["messages"], o);
      ASSERT_TRUE(text.ok()) << text.status().ToString();
      auto enc = (*tok)->Encode(*text, /*add_special_tokens=*/false);
      ASSERT_TRUE(enc.ok());
      ids = *enc;
    } else {
      auto enc = (*tok)->Encode(c["prompt"].get<std::string>(), /*add_special_tokens=*/true);
      ASSERT_TRUE(enc.ok());
      ids = *enc;
    }
    EXPECT_EQ(ids, c["prompt_ids"].get<std::vector<int32_t>>()) << c.dump();
    reqs.push_back({c["prompt_ids"].get<std::vector<int32_t>>(), ref["max_new_tokens"].get<int>(), {},
                    ref["eos_token_ids"].get<std::vector<int32_t>>()});
  }
  ASSERT_GE(reqs.size(), 6u);
  GenerateStats st;
  auto out = Generate(*engine, reqs, &st);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto want = ref["cases"][i]["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ((*out)[i].tokens, want) << "case " << i << ": " << ref["cases"][i]["text"];
    auto text = (*tok)->Decode((*out)[i].tokens, /*skip_special_tokens=*/true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, ref["cases"][i]["text"].get<std::string>());
  }
}

}  // namespace
}  // namespace shoal
