// The whole prompt path the coordinator runs for a chat request — tokenizer_config.json's template
// rendered over the messages, then encoded without special tokens — against transformers'
// apply_chat_template(tokenize=True) on the tiny model fixtures (tools/reference/attach_tokenizers.py),
// and completions prompts against tokenizer(prompt) with special tokens.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/chat_template.h"
#include "model/jinja/template.h"
#include "model/tokenizer.h"
#include "tests/unit/fixture_util.h"

namespace shoal {
namespace {

TEST(ChatPrompt, ModelFixturesMatchTransformers) {
  int checked = 0;
  for (const std::string& name : testing::ListFixtures()) {
    const std::string dir = testing::FixturesDir() + "/" + name;
    if (!std::filesystem::exists(dir + "/chat_expected.json")) continue;
    SCOPED_TRACE(name);
    auto tok = Tokenizer::Load(dir);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    auto tmpl = jinja::Template::Parse((*tok)->chat_template(), name);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
    std::ifstream in(dir + "/chat_expected.json");
    const auto want = nlohmann::ordered_json::parse(in);
    for (const auto& c : want["chats"]) {
      ChatTemplateOptions o;
      o.bos_token = (*tok)->bos_token().value_or("");
      o.eos_token = (*tok)->eos_token().value_or("");
      auto text = RenderChatTemplate(**tmpl, c["messages"], o);
      ASSERT_TRUE(text.ok()) << text.status().ToString();
      EXPECT_EQ(*text, c["text"].get<std::string>());
      auto ids = (*tok)->Encode(*text, /*add_special_tokens=*/false);
      ASSERT_TRUE(ids.ok()) << ids.status().ToString();
      EXPECT_EQ(*ids, c["prompt_ids"].get<std::vector<int32_t>>());
      ++checked;
    }
    for (const auto& c : want["completions"]) {
      auto ids = (*tok)->Encode(c["prompt"].get<std::string>(), /*add_special_tokens=*/true);
      ASSERT_TRUE(ids.ok()) << ids.status().ToString();
      EXPECT_EQ(*ids, c["prompt_ids"].get<std::vector<int32_t>>()) << c["prompt"];
    }
  }
  EXPECT_GE(checked, 18);
}

}  // namespace
}  // namespace shoal
