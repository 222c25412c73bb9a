// The model as the coordinator serves it: generation_config.json's sampling defaults fill what a
// request leaves unset (server.generation_config: auto, vLLM's default), and nothing with "vllm".
#include "coordinator/served_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/unit/fixture_util.h"

namespace shoal::coord {
namespace {

namespace fs = std::filesystem;

std::string ModelWithGenerationConfig(const std::string& generation_config) {
  const fs::path dir = fs::temp_directory_path() / ("shoal-served-model-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path src = testing::FixturesDir() + "/qwen3-moe-f32";
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) fs::copy_file(src / f, dir / f);
  std::ofstream(dir / "generation_config.json") << generation_config;
  return dir.string();
}

TEST(ServedModel, GenerationConfigDefaultsFillWhatTheRequestLeavesUnset) {
  EngineConfig cfg;
  cfg.model_path = ModelWithGenerationConfig(
      R"({"eos_token_id": 5, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.05, "min_p": 0.0})");
  auto m = ServedModel::Load(cfg);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  api::SamplingOptions req;  // the request set temperature 0.2 only
  req.params.temperature = 0.2f;
  req.given = api::SamplingOptions::kTemperature;
  m->ApplySamplingDefaults(&req);
  EXPECT_FLOAT_EQ(req.params.temperature, 0.2f);
  EXPECT_FLOAT_EQ(req.params.top_p, 0.95f);
  EXPECT_EQ(req.params.top_k, 20);
  EXPECT_FLOAT_EQ(req.params.repetition_penalty, 1.05f);
  EXPECT_FLOAT_EQ(req.params.min_p, 0.0f);
  EXPECT_EQ(m->eos_ids.at(0), 5) << "generation_config.json's EOS first";

  cfg.server.generation_config = "vllm";
  auto plain = ServedModel::Load(cfg);
  ASSERT_TRUE(plain.ok());
  api::SamplingOptions none;
  plain->ApplySamplingDefaults(&none);
  EXPECT_FLOAT_EQ(none.params.temperature, 1.0f) << "OpenAI's default";
  EXPECT_FLOAT_EQ(none.params.top_p, 1.0f);

  // Out-of-range values are ignored, not applied; a file that is not JSON is an error naming it.
  cfg.server.generation_config = "auto";
  cfg.model_path = ModelWithGenerationConfig(R"({"temperature": -1, "top_p": 0, "top_k": "x"})");
  auto odd = ServedModel::Load(cfg);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->sampling_defaults_given, 0u);
  cfg.model_path = ModelWithGenerationConfig("{not json");
  auto bad = ServedModel::Load(cfg);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("generation_config.json"), std::string::npos);
  fs::remove_all(cfg.model_path);
}

}  // namespace
}  // namespace shoal::coord
