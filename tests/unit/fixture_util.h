// Test helpers: the reference fixtures under tests/fixtures (made by tools/reference/make_fixtures.py).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "worker/engine.h"

namespace shoal::testing {

// The source tree compiled in, or $SHOAL_SOURCE_DIR when set (a test binary carried to another
// machine, scripts/gpu-check.sh).
inline std::string FixturesDir() {
  const char* env = std::getenv("SHOAL_SOURCE_DIR");
  return std::string(env && *env ? env : SHOAL_SOURCE_DIR) + "/tests/fixtures";
}

inline std::vector<std::string> ListFixtures() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(FixturesDir())) {
    if (e.is_directory() && std::filesystem::exists(e.path() / "expected.json")) names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct FixturePrompt {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;  // decode_steps + 1 tokens
};

struct Fixture {
  std::string name, dir, stored_dtype;
  int decode_steps = 0;
  std::vector<FixturePrompt> prompts;
  std::unique_ptr<SafetensorsFile> expected;

  // Row-major [rows, vocab] view of an expected tensor, as floats.
  std::vector<float> Tensor(const std::string& key, int64_t* rows = nullptr) const {
    auto v = expected->Tensor(key);
    if (!v.ok()) return {};
    const float* p = static_cast<const float*>(v->data);
    if (rows) *rows = v->shape[0];
    return std::vector<float>(p, p + v->numel());
  }
  bool HasTensor(const std::string& key) const { return expected->header().tensors.count(key) != 0; }
};

inline Fixture LoadFixture(const std::string& name) {
  Fixture f;
  f.name = name;
  f.dir = FixturesDir() + "/" + name;
  std::ifstream in(f.dir + "/expected.json");
  nlohmann::json j = nlohmann::json::parse(in);
  f.stored_dtype = j["stored_dtype"];
  f.decode_steps = j["decode_steps"];
  for (const auto& p : j["prompts"]) {
    f.prompts.push_back({p["prompt_ids"].get<std::vector<int32_t>>(), p["greedy_tokens"].get<std::vector<int32_t>>()});
  }
  auto e = SafetensorsFile::Open(f.dir + "/expected.safetensors");
  if (e.ok()) f.expected = std::move(e).value();
  return f;
}

inline std::unique_ptr<Engine> MakeEngine(const std::string& dir, int threads = 2, int max_step_tokens = 8192) {
  auto config = LoadModelConfig(dir);
  if (!config.ok()) return nullptr;
  auto weights = LoadModelWeights(*config, dir);
  if (!weights.ok()) return nullptr;
  EngineConfig cfg;
  cfg.threads = threads;
  cfg.kv_block_size = 4;  // small blocks: every fixture prompt spans several
  cfg.kv_cache_mib = 16;
  cfg.max_step_tokens = max_step_tokens;
  auto engine = Engine::Create(*config, std::move(weights).value(), cfg);
  return engine.ok() ? std::move(engine).value() : nullptr;
}

// Largest |a - b| over the elements.
inline float MaxAbsDiff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace shoal::testing
