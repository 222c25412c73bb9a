// Engine and KV-cache behaviour beyond the numerics: bad input is refused without changing state,
// a full KV cache is an error that rolls the step back, and blocks are reused after release.
#include <gtest/gtest.h>

#include "tests/unit/fixture_util.h"
#include "worker/generate.h"

namespace shoal::testing {
namespace {

const std::string kModel = "qwen3-moe-f32";

TEST(KvCache, ReserveUntilFullThenRelease) {
  auto config = LoadModelConfig(FixturesDir() + "/" + kModel);
  ASSERT_TRUE(config.ok());
  KvCache kv(*config, 4, 3);
  KvTables a, b;
  ASSERT_TRUE(kv.Reserve(&a, 9).ok());  // 3 blocks
  ASSERT_EQ(a.size(), 1u) << "one layer group";
  EXPECT_EQ(a[0].size(), 3u);
  EXPECT_EQ(kv.free_blocks(), 0);
  Status st = kv.Reserve(&b, 1);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("kv_cache.memory_mib"), std::string::npos) << st.message();
  EXPECT_TRUE(b.empty());
  kv.Release(&a);
  EXPECT_EQ(kv.free_blocks(), 3);
  EXPECT_TRUE(kv.Reserve(&b, 12).ok());
  EXPECT_EQ(kv.MaxSequenceTokens(8192), 12);
}

// Llama 4: the chunked layers get their own block tables and give back the blocks before the current
// chunk; the full-attention (NoPE) layer keeps all of them.
TEST(KvCache, ChunkedLayerGroupsFreeBlocksBeforeTheCurrentChunk) {
  auto config = LoadModelConfig(FixturesDir() + "/llama4-scout-bf16");  // 4 layers, layer 3 NoPE, chunk 4
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const KvLayout layout = KvLayout::For(*config);
  EXPECT_EQ(layout.layers_per_group, 1);
  EXPECT_EQ(layout.group_chunk, (std::vector<int>{0, 4, 4, 4}));
  EXPECT_EQ(layout.layer_group, (std::vector<int>{1, 2, 3, 0}));
  EXPECT_EQ(KvCache::BlockBytes(*config, 2), 2 * 1 * 2 * config->kv_dim() * 4) << "a block holds one layer";

  KvCache kv(*config, 2, 100);
  KvTables t;
  ASSERT_TRUE(kv.Reserve(&t, 9).ok());
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(kv.free_blocks(), 100 - 4 * 5);
  kv.FreeBefore(&t, 9);  // the chunk of position 9 starts at 8: blocks 0..3 of each chunked group go
  EXPECT_EQ(kv.free_blocks(), 100 - 5 - 3 * 1);
  EXPECT_EQ(kv.free_blocks(), 100 - kv.BlocksHeld(9));
  EXPECT_EQ(t[0], (std::vector<int32_t>{0, 1, 2, 3, 4})) << "the full-attention group keeps every block";
  for (int g = 1; g < 4; ++g) {
    for (int b = 0; b < 4; ++b) EXPECT_EQ(t[g][b], -1) << "group " << g << " block " << b;
    EXPECT_GE(t[g][4], 0);
  }
  EXPECT_EQ(kv.BlocksToGrow(9, 1), 0) << "position 9 is in block 4, already held";
  EXPECT_EQ(kv.BlocksToGrow(10, 1), 4) << "a new block in every group";
  kv.Release(&t);
  EXPECT_EQ(kv.free_blocks(), 100);
  // Long sequences are bounded by the full group: with steps of 8 tokens a chunked table holds at most
  // ceil((4 + 8) / 2) + 1 = 7 blocks, so the full group gets 100 - 3 · 7 = 79 blocks: 158 tokens.
  EXPECT_EQ(kv.MaxSequenceTokens(8), 158);
}

// DeepSeek-V3's MLA cache: one vector of kv_lora_rank + qk_rope_head_dim floats per token and layer
// (no V, no per-head keys) — 24 floats per layer for the fixture instead of 2 × 4 heads × 20.
TEST(KvCache, MlaKeepsOnlyTheLatentAndTheRopeKey) {
  auto config = LoadModelConfig(FixturesDir() + "/deepseek-v3-f32");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ASSERT_TRUE(config->mla);
  EXPECT_EQ(config->kv_cache_width(), config->kv_lora_rank + config->qk_rope_head_dim);
  EXPECT_FALSE(config->kv_cache_has_v());
  EXPECT_EQ(KvCache::BlockBytes(*config, 16),
            int64_t{config->num_layers} * 16 * (config->kv_lora_rank + config->qk_rope_head_dim) * 4);
  KvCache kv(*config, 16, 4);
  const kernels::PagedKvLayer layer = kv.Layer(0);
  EXPECT_EQ(layer.v, nullptr);
  EXPECT_EQ(layer.num_kv_heads * layer.head_dim, config->kv_lora_rank + config->qk_rope_head_dim);
}

// The same through the engine: decoding a Llama 4 sequence past several chunks leaves the chunked
// layers holding only their current chunk's blocks, and the logits still match transformers (the
// fixture tests check those with these same 4-token blocks).
TEST(Engine, ChunkedLayersHoldOnlyTheCurrentChunk) {
  auto engine = MakeEngine(FixturesDir() + "/llama4-scout-bf16");
  ASSERT_TRUE(engine);
  const KvCache& kv = engine->kv_cache();
  SeqId s = *engine->NewSequence();
  std::vector<ForwardOutput> out;
  std::vector<int32_t> token = {7};
  for (int len = 1; len <= 40; ++len) {
    ASSERT_TRUE(engine->Forward({{s, token, false}}, &out).ok());
    // Block size 4 = chunk 4: the three chunked layers hold one block each, the NoPE layer all.
    ASSERT_EQ(kv.num_blocks() - kv.free_blocks(), (len + 3) / 4 + 3 * (len % 4 == 0 ? 0 : 1)) << len;
  }
  engine->ReleaseSequence(s);
  EXPECT_EQ(kv.free_blocks(), kv.num_blocks());
}

TEST(Engine, RejectsBadInputWithoutChangingState) {
  auto engine = MakeEngine(FixturesDir() + "/" + kModel);
  ASSERT_TRUE(engine);
  SeqId s = *engine->NewSequence();
  std::vector<ForwardOutput> out;
  std::vector<int32_t> ok_tokens = {1, 2, 3};
  ASSERT_TRUE(engine->Forward({{s, ok_tokens, false}}, &out).ok());
  const int64_t free_before = engine->kv_cache().free_blocks();

  std::vector<int32_t> bad = {5, engine->config().vocab_size};
  Status st = engine->Forward({{s, bad, false}}, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sequence " + std::to_string(s)), std::string::npos) << st.message();
  EXPECT_EQ(engine->SequenceLength(s), 3);

  EXPECT_EQ(engine->Forward({{s + 100, ok_tokens, false}}, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Forward({{s, {}, false}}, &out).code(), StatusCode::kInvalidArgument);
  st = engine->Forward({{s, ok_tokens, false}, {s, ok_tokens, false}}, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("twice"), std::string::npos) << st.message();

  std::vector<int32_t> too_long(engine->config().max_position_embeddings, 1);
  st = engine->Forward({{s, too_long, false}}, &out);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("max_position_embeddings"), std::string::npos);
  EXPECT_EQ(engine->SequenceLength(s), 3);
  EXPECT_EQ(engine->kv_cache().free_blocks(), free_before);
}

TEST(Engine, FullKvCacheRollsTheWholeStepBack) {
  auto config = LoadModelConfig(FixturesDir() + "/" + kModel);
  auto weights = LoadModelWeights(*config, FixturesDir() + "/" + kModel);
  ASSERT_TRUE(weights.ok());
  config->max_position_embeddings = 1 << 20;  // let the KV cache, not the context limit, bind
  EngineConfig cfg;
  cfg.threads = 1;
  cfg.kv_block_size = 4;
  cfg.kv_cache_mib = 1;
  auto engine = std::move(Engine::Create(*config, std::move(weights).value(), cfg)).value();
  const int64_t blocks = engine->kv_cache().num_blocks();
  SeqId a = *engine->NewSequence(), b = *engine->NewSequence();
  std::vector<int32_t> small = {1, 2, 3, 4};
  std::vector<int32_t> big(static_cast<size_t>(blocks * 4), 7);  // needs every block by itself
  std::vector<ForwardOutput> out;
  Status st = engine->Forward({{a, small, false}, {b, big, false}}, &out);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_EQ(engine->kv_cache().free_blocks(), blocks) << "sequence a's blocks were rolled back too";
  EXPECT_EQ(engine->SequenceLength(a), 0);
  EXPECT_TRUE(engine->Forward({{a, small, false}}, &out).ok());
}

TEST(Engine, MaxNumSeqsBoundsLiveSequences) {
  auto config = LoadModelConfig(FixturesDir() + "/" + kModel);
  auto weights = LoadModelWeights(*config, FixturesDir() + "/" + kModel);
  ASSERT_TRUE(weights.ok());
  EngineConfig cfg;
  cfg.threads = 1;
  cfg.max_num_seqs = 2;
  auto engine = std::move(Engine::Create(*config, std::move(weights).value(), cfg)).value();
  SeqId a = *engine->NewSequence();
  ASSERT_TRUE(engine->NewSequence().ok());
  auto third = engine->NewSequence();
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("engine.max_num_seqs"), std::string::npos);
  engine->ReleaseSequence(a);
  engine->ReleaseSequence(a);  // releasing twice is harmless and frees nothing more
  EXPECT_TRUE(engine->NewSequence().ok());
  EXPECT_FALSE(engine->NewSequence().ok());
}

TEST(Engine, ReleasedSequencesReturnTheirBlocks) {
  auto engine = MakeEngine(FixturesDir() + "/" + kModel);
  ASSERT_TRUE(engine);
  const int64_t free0 = engine->kv_cache().free_blocks();
  GenerateStats stats;
  std::vector<GenerateRequest> reqs(3, GenerateRequest{{1, 2, 3, 4, 5}, 9, {}, {}});
  auto r = Generate(*engine, reqs, &stats);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(engine->kv_cache().free_blocks(), free0);
  EXPECT_EQ(stats.decode_steps, 8);
  EXPECT_EQ(stats.decode_tokens, 24);
  EXPECT_GT(stats.decode_weight_bytes, 0);
}

TEST(Generate, StopTokensEndASequenceEarly) {
  auto engine = MakeEngine(FixturesDir() + "/" + kModel);
  ASSERT_TRUE(engine);
  Fixture f = LoadFixture(kModel);
  GenerateRequest req{f.prompts[0].prompt, 7, {}, {f.prompts[0].greedy[2]}};
  GenerateStats stats;
  auto r = Generate(*engine, {req}, &stats);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].finish_reason, "stop");
  EXPECT_EQ((*r)[0].tokens, std::vector<int32_t>(f.prompts[0].greedy.begin(), f.prompts[0].greedy.begin() + 3));
}

TEST(Generate, SeededSamplingIsReproducibleAndIndependentOfTheBatch) {
  auto engine = MakeEngine(FixturesDir() + "/" + kModel);
  ASSERT_TRUE(engine);
  GenerateRequest r{{3, 1, 4, 1, 5}, 10, {.temperature = 0.9f, .top_k = 50, .top_p = 0.95f, .seed = 1234}, {}};
  GenerateRequest other{{2, 7, 1, 8}, 6, {.temperature = 1.0f, .seed = 99}, {}};
  GenerateStats st;
  auto alone = Generate(*engine, {r}, &st);
  auto batched = Generate(*engine, {other, r}, &st);
  ASSERT_TRUE(alone.ok() && batched.ok());
  EXPECT_EQ((*alone)[0].tokens, (*batched)[1].tokens);
}

}  // namespace
}  // namespace shoal::testing
