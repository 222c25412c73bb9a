// Llama 4 config.json as both transformers versions and Meta's own checkpoints write it, what shoal
// derives from it (MoE schedule, NoPE layers, chunked layers, temperature tuning), and the loader's
// handling of a multimodal checkpoint: only the text model's tensors are read.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/weights.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"

namespace shoal::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json FixtureConfig(const std::string& name) {
  std::ifstream in(fs::path(FixturesDir()) / name / "config.json");
  return json::parse(in);
}

// The text_config of Meta's Llama-4-Scout-17B-16E-Instruct (the fields that shape the computation),
// in transformers-4 spelling: rope_theta + rope_scaling, no layer_types or moe_layers, an empty
// no_rope_layers, and attn_temperature_tuning written as the number 4.
json ScoutHubConfig() {
  return json::parse(R"({
    "architectures": ["Llama4ForConditionalGeneration"], "torch_dtype": "bfloat16",
    "text_config": {
      "attention_bias": false, "attention_chunk_size": 8192, "attn_scale": 0.1, "attn_temperature_tuning": 4,
      "floor_scale": 8192, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
      "interleave_moe_layer_step": 1, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
      "max_position_embeddings": 10485760, "model_type": "llama4_text", "no_rope_layers": [],
      "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8,
      "num_local_experts": 16, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "use_qk_norm": true, "vocab_size": 202048}})");
}

TEST(Llama4Config, MetasScoutConfigParses) {
  auto c = ParseModelConfig(ScoutHubConfig().dump(), "scout/config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->arch, Architecture::kLlama4);
  EXPECT_EQ(c->tensor_prefix, "language_model.");
  EXPECT_EQ(c->torch_dtype, DType::kBF16) << "torch_dtype at the top level of a multimodal config";
  EXPECT_EQ(c->num_experts, 16);
  EXPECT_EQ(c->moe_intermediate_size, 8192);
  EXPECT_EQ(c->shared_expert_intermediate_size, 8192);
  EXPECT_EQ(c->intermediate_size, 16384);
  EXPECT_TRUE(c->router_sigmoid_scales_input);
  EXPECT_FALSE(c->shared_expert_gated);
  EXPECT_TRUE(c->rope_interleaved);
  EXPECT_TRUE(c->qk_l2_norm);
  EXPECT_TRUE(c->attn_temperature_tuning);
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->attention_chunk_size, 8192);
  for (int l = 0; l < 48; ++l) {
    EXPECT_TRUE(c->layer_is_moe[l]) << l;
    EXPECT_EQ(c->LayerUsesRope(l), (l + 1) % 4 != 0) << l;
    EXPECT_EQ(c->LayerChunk(l), (l + 1) % 4 != 0 ? 8192 : 0) << l;
  }
}

// Maverick: MoE on every second layer, no q/k norm.
TEST(Llama4Config, MaverickScheduleFromInterleaveStep) {
  json j = ScoutHubConfig();
  j["text_config"]["interleave_moe_layer_step"] = 2;
  j["text_config"]["num_local_experts"] = 128;
  j["text_config"]["use_qk_norm"] = false;
  auto c = ParseModelConfig(j.dump(), "maverick/config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->qk_l2_norm);
  for (int l = 0; l < 48; ++l) EXPECT_EQ(c->layer_is_moe[l], l % 2 == 1) << l;
}

// The fixtures' configs (written by transformers 5: rope_parameters, layer_types, moe_layers) rewritten
// the way transformers 4 writes them parse to the same model.
TEST(Llama4Config, Transformers4SpellingParsesLikeTransformers5) {
  for (const char* name : {"llama4-scout-bf16", "llama4-maverick-f32"}) {
    SCOPED_TRACE(name);
    const json v5 = FixtureConfig(name);
    auto want = ParseModelConfig(v5.dump(), name);
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    json v4 = v5;
    json& t = v4.contains("text_config") ? v4["text_config"] : v4;
    json rope = t["rope_parameters"];
    t["rope_theta"] = rope["rope_theta"];
    rope.erase("rope_theta");
    t["rope_scaling"] = rope["rope_type"] == "default" ? json(nullptr) : rope;
    t.erase("rope_parameters");
    t.erase("layer_types");
    t.erase("moe_layers");
    if (v4.contains("dtype")) v4["torch_dtype"] = v4["dtype"], v4.erase("dtype");
    auto got = ParseModelConfig(v4.dump(), name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->layer_is_moe, want->layer_is_moe);
    EXPECT_EQ(got->layer_rope, want->layer_rope);
    EXPECT_EQ(got->layer_chunked, want->layer_chunked);
    EXPECT_EQ(got->attention_chunk_size, want->attention_chunk_size);
    EXPECT_EQ(got->rope.type, want->rope.type);
    EXPECT_EQ(got->rope.theta, want->rope.theta);
    EXPECT_EQ(got->rope.factor, want->rope.factor);
    EXPECT_EQ(got->torch_dtype, want->torch_dtype);
  }
}

TEST(Llama4Config, BadFieldsAreNamed) {
  struct Case {
    const char* key;
    json value;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"moe_layers", json::array({0, 99}), "moe_layers"},
      {"no_rope_layers", json::array({1, 0}), "no_rope_layers"},
      {"layer_types", json::array({"sliding_attention", "full_attention", "full_attention", "full_attention"}),
       "sliding_attention"},
      {"floor_scale", 0, "floor_scale"},
      {"attn_temperature_tuning", "yes", "attn_temperature_tuning"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.key);
    json j = FixtureConfig("llama4-maverick-f32");
    j[k.key] = k.value;
    auto c = ParseModelConfig(j.dump(), "m/config.json");
    ASSERT_FALSE(c.ok());
    EXPECT_TRUE(MessageHas(c.status(), k.says));
    EXPECT_TRUE(MessageHas(c.status(), "m/config.json"));
  }
  json j = ScoutHubConfig();
  j.erase("text_config");
  auto c = ParseModelConfig(j.dump(), "s/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(MessageHas(c.status(), "text_config"));
}

// Maverick is published in FP8 too; shoal serves the bf16 checkpoint and says so.
TEST(Llama4Config, QuantizedCheckpointsAreRefused) {
  json j = ScoutHubConfig();
  j["quantization_config"] = {{"quant_method", "compressed-tensors"}};
  auto c = ParseModelConfig(j.dump(), "fp8/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(MessageHas(c.status(), "compressed-tensors"));
}

// The vision tower's tensors are never read: the fixture's first shard holds nothing else, so
// overwriting it with garbage changes nothing, while damage to a text shard is named.
TEST(Llama4Loader, VisionShardIsNeverOpened) {
  ScratchDir scratch;
  const fs::path dir = scratch.path() / "scout";
  fs::copy(fs::path(FixturesDir()) / "llama4-scout-bf16", dir, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(dir)) {
    fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
  std::ifstream idx(dir / "model.safetensors.index.json");
  const json index = json::parse(idx);
  std::string vision_shard, text_shard;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    (tensor.rfind("language_model.", 0) == 0 ? text_shard : vision_shard) = shard.get<std::string>();
  }
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (tensor.rfind("language_model.", 0) == 0) {
      ASSERT_NE(shard.get<std::string>(), vision_shard) << tensor;
    }
  }
  ASSERT_FALSE(vision_shard.empty());
  WriteText(dir / vision_shard, "not a safetensors file");
  auto config = LoadModelConfig(dir.string());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto weights = LoadModelWeights(*config, dir.string());
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();

  WriteText(dir / text_shard, "not a safetensors file");
  weights = LoadModelWeights(*config, dir.string());
  ASSERT_FALSE(weights.ok());
  EXPECT_TRUE(MessageHas(weights.status(), text_shard));
}

// A rank's experts come out of the fused [E, H, 2I] / [E, I, H] tensors transposed into the nn.Linear
// layout: expert e's gate row i is column i of gate_up_proj[e], its up row column I + i.
TEST(Llama4Loader, FusedExpertsSplitIntoLinearLayout) {
  const std::string dir = FixturesDir() + "/llama4-maverick-f32";
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok());
  auto weights = LoadModelWeights(*config, dir, [](int, int e) { return e == 4; });
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  auto ck = Checkpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  const int64_t H = config->hidden_size, I = config->moe_intermediate_size;
  auto gu = (*ck)->Get("model.layers.1.feed_forward.experts.gate_up_proj");
  auto dn = (*ck)->Get("model.layers.1.feed_forward.experts.down_proj");
  ASSERT_TRUE(gu.ok() && dn.ok());
  const float* g = static_cast<const float*>(gu->data) + 4 * H * 2 * I;
  const float* d = static_cast<const float*>(dn->data) + 4 * I * H;
  const LayerWeights& L = weights->layers[1];
  ASSERT_TRUE(L.experts[4].present());
  EXPECT_FALSE(L.experts[3].present());
  const auto* gate = static_cast<const float*>(L.experts[4].gate.data);
  const auto* up = static_cast<const float*>(L.experts[4].up.data);
  const auto* down = static_cast<const float*>(L.experts[4].down.data);
  for (int64_t i = 0; i < I; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      ASSERT_EQ(gate[i * H + h], g[h * 2 * I + i]);
      ASSERT_EQ(up[i * H + h], g[h * 2 * I + I + i]);
      ASSERT_EQ(down[h * I + i], d[i * H + h]);
    }
  }
}

}  // namespace
}  // namespace shoal::testing
