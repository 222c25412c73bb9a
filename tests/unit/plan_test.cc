// shoal plan: memory arithmetic checked by hand, layout search, hardware YAML, input errors, and the
// validation against two published DeepSeek-V3 deployments (docs/plan.md has the sources).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "model/model_config.h"
#include "model/weights.h"
#include "common/config.h"
#include "plan/calibration.h"
#include "plan/hardware.h"
#include "plan/model_preset.h"
#include "plan/planner.h"
#include "tests/unit/fixture_util.h"
#include "tests/unit/test_files.h"

namespace shoal::plan {
namespace {

using shoal::testing::MessageHas;

// A toy MoE small enough to count by hand.
ModelSpec Toy() {
  ModelSpec m;
  m.name = "toy";
  m.hidden_size = 64;
  m.num_layers = 2;
  m.vocab_size = 100;
  m.attn = {AttentionSpec::Kind::kGqa, 4, 2, 16};
  m.num_moe_layers = 2;
  m.num_experts = 4;
  m.top_k = 2;
  m.moe_intermediate_size = 32;
  return m;
}

TEST(PlanModel, ToyParamsAndKvByHand) {
  const ParamCounts p = CountParams(Toy());
  // attention: q 64*64 + k,v 2*64*32 + o 64*64 = 12288; expert 3*64*32 = 6144; router 64*4 = 256.
  EXPECT_DOUBLE_EQ(p.attention_per_layer, 12288);
  EXPECT_DOUBLE_EQ(p.expert, 6144);
  EXPECT_DOUBLE_EQ(p.routed_total, 2 * 4 * 6144);
  EXPECT_DOUBLE_EQ(p.dense_total, 2 * 12288 + 2 * 256 + 2 * 6400);  // + embedding and lm_head 100*64
  EXPECT_DOUBLE_EQ(p.routed_active, 2 * 2 * 6144);
  EXPECT_DOUBLE_EQ(KvElementsPerTokenPerLayer(Toy()), 2 * 2 * 16);

  PlanRequest r;
  r.model = Toy();
  r.hw = BuiltinHardware()["h100"];
  r.weight_dtype = "bf16";
  r.kv_dtype = "bf16";
  r.input_len = 100;
  r.output_len = 100;  // decode context 150
  auto lp = EvaluateLayout(r, 2);
  ASSERT_TRUE(lp.ok()) << lp.status().ToString();
  EXPECT_DOUBLE_EQ(lp->memory.dense_weight_bytes, p.dense_total * 2);
  EXPECT_EQ(lp->memory.expert_slots_per_layer, 2);
  EXPECT_DOUBLE_EQ(lp->memory.expert_weight_bytes, 2.0 * 2 * 6144 * 2);
  EXPECT_DOUBLE_EQ(lp->memory.kv_bytes_per_token, 64.0 * 2 * 2);
  const double free = r.hw.hbm_bytes * 0.9 - lp->memory.weight_bytes();
  EXPECT_EQ(lp->memory.max_sequences, int(std::floor(free / (256.0 * 150))));
}

TEST(PlanModel, PresetsHaveTheirPublishedSizes) {
  struct Want { const char* name; double total_b, active_b; };
  for (const Want& w : {Want{"deepseek-v3", 671, 37}, Want{"kimi-k2", 1000, 32}, Want{"mixtral-8x22b", 141, 39},
                        Want{"qwen3-235b-a22b", 235, 22},
                        Want{"llama4-maverick", 400, 17}, Want{"frontier-405b-active", 9600, 405}}) {
    auto m = GetModelPreset(w.name);
    ASSERT_TRUE(m.ok());
    const ParamCounts p = CountParams(*m);
    EXPECT_NEAR(p.total / 1e9, w.total_b, 0.03 * w.total_b) << w.name;
    EXPECT_NEAR(p.active() / 1e9, w.active_b, 0.07 * w.active_b) << w.name;
  }
  // DeepSeek-V3 MLA: (512 + 64) latent elements x 61 layers x 2 bytes per token.
  EXPECT_DOUBLE_EQ(KvElementsPerTokenPerLayer(*GetModelPreset("deepseek-v3")), 576);
}

TEST(PlanModel, ParsesDeepSeekAndQwenConfigJson) {
  auto ds = ParseHfConfig(R"({"architectures":["DeepseekV3ForCausalLM"],"hidden_size":7168,"num_hidden_layers":61,
    "vocab_size":129280,"num_attention_heads":128,"q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,
    "qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":256,"num_experts_per_tok":8,"moe_intermediate_size":2048,
    "n_shared_experts":1,"first_k_dense_replace":3,"moe_layer_freq":1,"intermediate_size":18432})", "ds.json");
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_DOUBLE_EQ(CountParams(*ds).total, CountParams(*GetModelPreset("deepseek-v3")).total);
  // transformers 5 names Qwen's expert count num_local_experts.
  const std::string qwen = R"({"architectures":["Qwen3MoeForCausalLM"],"hidden_size":4096,"num_hidden_layers":94,
    "vocab_size":151936,"num_attention_heads":64,"num_key_value_heads":4,"head_dim":128,"moe_intermediate_size":1536,
    "num_experts_per_tok":8,)";
  auto v4 = ParseHfConfig(qwen + R"("num_experts":128})", "v4.json");
  auto v5 = ParseHfConfig(qwen + R"("num_local_experts":128})", "v5.json");
  ASSERT_TRUE(v4.ok() && v5.ok()) << v4.status().ToString() << " " << v5.status().ToString();
  EXPECT_EQ(v5->num_experts, 128);
  EXPECT_DOUBLE_EQ(CountParams(*v5).total, CountParams(*v4).total);
  EXPECT_FALSE(ParseHfConfig(qwen + R"("num_experts":128,"num_local_experts":64})", "both.json").ok());
  auto bad = ParseHfConfig(R"({"architectures":["Qwen3MoeForCausalLM"],"hidden_size":4096})", "q.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(MessageHas(bad.status(), "q.json"));
  EXPECT_TRUE(MessageHas(bad.status(), "num_hidden_layers"));
}

// Llama 4: the layer schedule and the chunked-attention layers come from config.json's text_config
// (layer_types, else no_rope_layers, else every 4th layer full), and those layers' KV is bounded by
// the chunk: at a 128k context a Maverick sequence keeps (12 x 128k + 36 x 8k) / 48 tokens per layer.
TEST(PlanModel, Llama4ChunkedAttentionBoundsKv) {
  const std::string base = R"({"architectures":["Llama4ForConditionalGeneration"],"text_config":{"hidden_size":5120,
    "num_hidden_layers":48,"vocab_size":202048,"num_attention_heads":40,"num_key_value_heads":8,"head_dim":128,
    "intermediate_size":8192,"intermediate_size_mlp":16384,"num_local_experts":128,"num_experts_per_tok":1,
    "interleave_moe_layer_step":2,"attention_chunk_size":8192)";
  auto parse = [&](const std::string& extra) { return ParseHfConfig(base + extra + "}}", "maverick.json"); };
  for (const std::string& extra : {std::string(""), std::string(R"(,"no_rope_layer_interval":4)")}) {
    auto m = parse(extra);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->num_moe_layers, 24);
    EXPECT_EQ(m->num_chunked_layers, 36);
    EXPECT_EQ(m->attention_chunk_size, 8192);
    EXPECT_DOUBLE_EQ(CountParams(*m).total, CountParams(*GetModelPreset("llama4-maverick")).total);
  }
  std::string types = R"(,"layer_types":[)";
  for (int l = 0; l < 48; ++l) types += std::string(l ? "," : "") + (l % 2 ? "\"full_attention\"" : "\"chunked_attention\"");
  auto alt = parse(types + "]");
  ASSERT_TRUE(alt.ok()) << alt.status().ToString();
  EXPECT_EQ(alt->num_chunked_layers, 24);
  auto unchunked = ParseHfConfig(R"({"architectures":["Llama4ForCausalLM"],"hidden_size":64,"num_hidden_layers":4,
    "vocab_size":100,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":32,"num_local_experts":4,
    "num_experts_per_tok":1,"attention_chunk_size":null})", "u.json");
  ASSERT_TRUE(unchunked.ok()) << unchunked.status().ToString();
  EXPECT_EQ(unchunked->num_chunked_layers, 0);

  const ModelSpec mav = *GetModelPreset("llama4-maverick");
  EXPECT_DOUBLE_EQ(KvContextPerLayer(mav, 4096), 4096);  // shorter than a chunk: every layer keeps it all
  EXPECT_DOUBLE_EQ(KvContextPerLayer(mav, 131072), (12.0 * 131072 + 36.0 * 8192) / 48);
  EXPECT_DOUBLE_EQ(PrefillPairsPerLayer(mav, 16384), 0.5 * 16384 * (12.0 * 16384 + 36.0 * 8192) / 48);
  ModelSpec full = mav;
  full.num_chunked_layers = 0;
  EXPECT_DOUBLE_EQ(KvContextPerLayer(full, 131072), 131072);

  // The memory plan: at a 128k context, chunking multiplies the sequences an H200 holds by
  // 131072 / KvContextPerLayer, and makes a decode step's KV reads that much smaller.
  PlanRequest r;
  r.model = mav;
  r.hw = BuiltinHardware()["h200"];
  r.input_len = 131072;
  r.output_len = 2;  // decode context 131073
  auto chunked_lp = EvaluateLayout(r, 8);
  r.model = full;
  auto full_lp = EvaluateLayout(r, 8);
  ASSERT_TRUE(chunked_lp.ok() && full_lp.ok());
  ASSERT_GT(full_lp->memory.max_sequences, 0);
  for (const auto* lp : {&*chunked_lp, &*full_lp}) {
    const ModelSpec& m = lp == &*chunked_lp ? mav : full;
    const double per_seq = lp->memory.kv_bytes_per_token * KvContextPerLayer(m, 131073) * lp->attn_tp /
                           std::min(lp->attn_tp, m.attn.num_kv_heads);
    EXPECT_EQ(lp->memory.max_sequences, int(std::floor(lp->memory.kv_free_bytes / per_seq))) << m.name;
  }
  EXPECT_GT(chunked_lp->memory.max_sequences, 3 * full_lp->memory.max_sequences);  // 131073 / 38912 = 3.4x the room
  const StepBreakdown a = DecodeStep(r, 8, 4);
  r.model = mav;
  const StepBreakdown b = DecodeStep(r, 8, 4);
  EXPECT_LT(b.attention_ms, a.attention_ms / 2);
  // Scout: 16 experts on every layer, ~109B total, 17B active.
  const ParamCounts scout = CountParams(*GetModelPreset("llama4-scout"));
  EXPECT_NEAR(scout.total / 1e9, 109, 0.03 * 109);
  EXPECT_NEAR(scout.active() / 1e9, 17, 0.07 * 17);
}

// The planner and the engine account for a model alike: for every fixture, the parameters `shoal plan`
// counts from its config.json equal the weight elements the engine loads (every matrix, every expert),
// and the KV elements per token and layer equal what the engine's cache keeps (MLA: the latent and the
// rope key only).
TEST(PlanModel, PlanAndEngineCountTheSameWeightsAndKv) {
  for (const std::string& name : shoal::testing::ListFixtures()) {
    SCOPED_TRACE(name);
    const std::string dir = shoal::testing::FixturesDir() + "/" + name;
    auto spec = LoadModelSpec(dir);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    auto config = LoadModelConfig(dir);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    auto weights = LoadModelWeights(*config, dir);
    ASSERT_TRUE(weights.ok()) << weights.status().ToString();
    double elements = 0;
    auto add = [&](const kernels::Matrix& m) { elements += m.empty() ? 0.0 : double(m.rows) * m.cols; };
    auto add_ffn = [&](const FfnWeights& f) { add(f.gate), add(f.up), add(f.down); };
    add(weights->embed);
    if (weights->lm_head.data != weights->embed.data) add(weights->lm_head);
    for (const LayerWeights& L : weights->layers) {
      for (const kernels::Matrix* m : {&L.q, &L.k, &L.v, &L.o, &L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.router,
                                       &L.shared_expert_gate}) {
        add(*m);
      }
      add_ffn(L.dense_mlp);
      add_ffn(L.shared_expert);
      for (const FfnWeights& e : L.experts) add_ffn(e);
    }
    double planned = CountParams(*spec).total;
    // Qwen2-MoE's shared-expert gate ([1, H] per MoE layer) is too small for the planner to model.
    if (config->shared_expert_gated) planned += double(spec->num_moe_layers) * spec->hidden_size;
    EXPECT_EQ(elements, planned);
    EXPECT_EQ(KvElementsPerTokenPerLayer(*spec), config->kv_cache_width() * (config->kv_cache_has_v() ? 2 : 1));
  }
}

TEST(PlanLayout, TooBigForOneGpuGetsAMultiGpuLayout) {
  PlanRequest r;
  r.model = *GetModelPreset("qwen3-235b-a22b");  // ~235 GB in FP8
  r.hw = BuiltinHardware()["h100"];
  auto one = EvaluateLayout(r, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one->fits);
  EXPECT_NE(one->why.find("weights need"), std::string::npos);
  auto p = Plan(r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_GT(p->smallest.num_gpus, 1);
  EXPECT_TRUE(p->smallest.fits);
  EXPECT_LE(p->smallest.memory.weight_bytes(), p->smallest.memory.usable_bytes);
  // The frontier model (~9.6T params) needs hundreds of GPUs and split attention.
  r.model = *GetModelPreset("frontier-405b-active");
  p = Plan(r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_GE(p->smallest.num_gpus, 128);
  EXPECT_GT(p->smallest.attn_tp, 1);
}

TEST(PlanHardware, YamlOverridesOneField) {
  HardwareTable t = BuiltinHardware();
  ASSERT_TRUE(ApplyHardwareYaml("hardware:\n  h100:\n    net_gbps: 25\n", "o.yaml", &t).ok());
  EXPECT_DOUBLE_EQ(t["h100"].net_bw, 25e9);
  EXPECT_DOUBLE_EQ(t["h100"].hbm_bw, BuiltinHardware()["h100"].hbm_bw);  // untouched
}

TEST(PlanHardware, ShippedYamlMatchesBuiltins) {
  HardwareTable t;
  ASSERT_TRUE(ApplyHardwareFile(std::string(SHOAL_SOURCE_DIR) + "/configs/hardware.yaml", &t).ok());
  for (const auto& [name, hw] : BuiltinHardware()) {
    ASSERT_TRUE(t.count(name)) << name;
    EXPECT_NEAR(t[name].hbm_bytes, hw.hbm_bytes, 1) << name;
    EXPECT_DOUBLE_EQ(t[name].hbm_bw, hw.hbm_bw) << name;
    EXPECT_DOUBLE_EQ(t[name].fp8_flops, hw.fp8_flops) << name;
    EXPECT_DOUBLE_EQ(t[name].bf16_flops, hw.bf16_flops) << name;
    EXPECT_DOUBLE_EQ(t[name].nvlink_bw, hw.nvlink_bw) << name;
    EXPECT_DOUBLE_EQ(t[name].net_bw, hw.net_bw) << name;
    EXPECT_EQ(t[name].gpus_per_node, hw.gpus_per_node) << name;
  }
}

TEST(PlanErrors, BadInputsNameTheCulprit) {
  HardwareTable t = BuiltinHardware();
  Status s = ApplyHardwareYaml("hardware: [unclosed", "bad.yaml", &t);
  EXPECT_TRUE(MessageHas(s, "bad.yaml"));
  EXPECT_TRUE(MessageHas(s, "malformed YAML"));
  s = ApplyHardwareYaml("hardware:\n  h100:\n    net_gbs: 25\n", "typo.yaml", &t);
  EXPECT_TRUE(MessageHas(s, "typo.yaml: hardware.h100.net_gbs: unknown field"));
  s = ApplyHardwareYaml("hardware:\n  h100:\n    gpus_per_node: 0\n", "z.yaml", &t);
  EXPECT_TRUE(MessageHas(s, "gpus_per_node must be positive"));
  s = ApplyHardwareYaml("hardware:\n  mi300x:\n    hbm_gib: 192\n", "new.yaml", &t);
  EXPECT_TRUE(MessageHas(s, "must set all"));
  EXPECT_TRUE(MessageHas(FindHardware(t, "tpu").status(), "unknown hardware preset 'tpu'"));
  EXPECT_TRUE(MessageHas(GetModelPreset("gpt-5").status(), "unknown model preset 'gpt-5'"));

  PlanRequest r;
  r.model = Toy();
  r.hw = t["h100"];
  EXPECT_TRUE(MessageHas(EvaluateLayout(r, 0).status(), "number of GPUs must be positive"));
  r.weight_dtype = "int3";
  EXPECT_TRUE(MessageHas(Plan(r).status(), "--weight-dtype"));
}

// Validation against published numbers. One calibration (the defaults) for both; see docs/plan.md.
double DecodePerNode(PlanRequest r, int gpus) {
  r.num_gpus = gpus;
  auto p = Plan(r);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  const LayoutPlan& l = p->chosen;
  return l.decode.tokens_per_s * l.num_gpus / l.nodes;
}

// DeepSeek-V3 with data-parallel attention on a hardware preset, as both deployments ran it.
PlanRequest DeepSeekV3On(const char* hardware, int input_len, int output_len) {
  PlanRequest r;
  r.model = *GetModelPreset("deepseek-v3");
  r.hw = BuiltinHardware()[hardware];
  r.attn_tp = 1;
  r.input_len = input_len;
  r.output_len = output_len;
  return r;
}

// SGLang's deployment (LMSYS, May 2025): 2000-token inputs, short outputs.
PlanRequest SglangSetup() { return DeepSeekV3On("h100", 2000, 100); }

TEST(PlanValidation, SglangDeepSeekV3On96H100) {
  // LMSYS, May 2025: 22.3k output tok/s per node, 2000-token inputs, decode with DP attention + EP.
  PlanRequest r = SglangSetup();
  r.tpot_ms = 100;
  const double predicted = DecodePerNode(r, 72);
  EXPECT_NEAR(predicted / 22300.0, 1.0, 0.35) << predicted;
}

TEST(PlanValidation, DeepSeekDay6DecodeOnH800) {
  // DeepSeek Day 6: decode EP144 over 18 H800 nodes, ~14.8k output tok/s per node, average KV length
  // per output token 4989, users see 20-22 tok/s (TPOT ~47.6 ms at 21). Decode uses MTP with one
  // draft; the V3 report gives 85-90 % acceptance of the second token.
  PlanRequest r = DeepSeekV3On("h800", 4989, 1000);
  r.decode_context = 4989;
  r.tpot_ms = 1000.0 / 21;
  r.mtp_draft_tokens = 1;
  r.mtp_accept = 0.85;
  const double predicted = DecodePerNode(r, 144);
  EXPECT_NEAR(predicted / 14800.0, 1.0, 0.35) << predicted;
}

// Where the overlap default comes from: SGLang's two-batch-overlap ablation in decode (DeepSeek-V3,
// 72 H100s, 256 tokens per GPU) measured x1.255 over no overlap; the model's own compute and
// all-to-all times at that point, combined with overlap_eff, must reproduce it.
TEST(PlanValidation, OverlapDefaultReproducesSglangsTwoBatchOverlapSpeedup) {
  PlanRequest r = SglangSetup();
  const double overlapped = DecodeStep(r, 72, 256).step_ms;
  r.overlap = false;
  const double sequential = DecodeStep(r, 72, 256).step_ms;
  EXPECT_NEAR(sequential / overlapped, 1.255, 0.03) << sequential << " ms vs " << overlapped << " ms";
}

TEST(PlanModel, MtpEmitsAcceptedTokensAndChargesTheDrafts) {
  PlanRequest r = DeepSeekV3On("h800", 2000, 500);
  r.decode_context = 4000;
  const StepBreakdown plain = DecodeStep(r, 144, 64);
  r.mtp_draft_tokens = 1;
  r.mtp_accept = 0.8;
  const StepBreakdown mtp = DecodeStep(r, 144, 64);
  EXPECT_EQ(mtp.batch, 64);
  EXPECT_DOUBLE_EQ(mtp.tokens, 128);
  EXPECT_DOUBLE_EQ(mtp.output_tokens, 64 * 1.8);
  EXPECT_NEAR(mtp.tpot_ms, mtp.step_ms / 1.8, 1e-9);
  EXPECT_GT(mtp.step_ms, plain.step_ms);         // twice the tokens through the model
  EXPECT_LT(mtp.tpot_ms, plain.tpot_ms);         // but fewer steps per output token
  EXPECT_GT(mtp.net_bytes, 2 * plain.net_bytes);  // drafts travel in the all-to-all too (plus the MTP layer)
  r.mtp_draft_tokens = 2;
  EXPECT_DOUBLE_EQ(DecodeStep(r, 144, 64).output_tokens, 64 * (1 + 0.8 + 0.64));
  r.mtp_draft_tokens = 9;
  EXPECT_TRUE(MessageHas(ValidateRequest(r), "--mtp"));

  // The MTP module is one more MoE layer in memory: its KV, its expert slots, its dense weights.
  r.mtp_draft_tokens = 1;
  auto with = EvaluateLayout(r, 144);
  r.mtp_draft_tokens = 0;
  auto without = EvaluateLayout(r, 144);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_NEAR(with->memory.kv_bytes_per_token / without->memory.kv_bytes_per_token, 62.0 / 61, 1e-12);
  EXPECT_NEAR(with->memory.expert_weight_bytes / without->memory.expert_weight_bytes, 59.0 / 58, 1e-12);
  EXPECT_GT(with->memory.dense_weight_bytes, without->memory.dense_weight_bytes);
  EXPECT_LT(with->memory.max_sequences, without->memory.max_sequences);
}

// Calibration from our own GPU benchmarks' JSON (plan/calibration.h).
constexpr const char* kDecodeJson = R"({"device": "NVIDIA H100 80GB HBM3", "copy_bandwidth_gbs": 3000, "ok": true,
    "runs": [{"batch": 1, "ratio": 0.5}, {"batch": 32, "ratio": 0.8}]})";
constexpr const char* kKernelsJson = R"({"device": "H100", "copy_gbs": 3000, "verified": true, "results": [
    {"name": "d2d_copy_1GiB", "measured": 3000},
    {"name": "expert_gemm_decode_128x8_e64_2048x7168_grouped", "status": "unsupported: cuBLAS refused", "pass": null},
    {"name": "expert_gemm_decode_128x8_e64_2048x7168_per_expert", "measured": 2000},
    {"name": "expert_gemm_decode_128x8_e64_2048x7168_per_expert_bf16out", "measured": 2900},
    {"name": "expert_gemm_prefill_16384_e32_4096x7168_per_expert", "measured": 600}]})";

TEST(PlanCalibration, DecodeBenchGivesHbmEfficiencyOfItsBestRun) {
  const HardwareSpec hw = BuiltinHardware()["h100"];
  // Best run: ratio 0.8 of a 3000 GB/s copy = 2400 GB/s of the preset's peak.
  auto src = CalibrateFromBenchJson(kDecodeJson, "decode.json", hw);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ASSERT_TRUE(src->hbm_eff.has_value());
  EXPECT_NEAR(*src->hbm_eff, 2400e9 / hw.hbm_bw, 1e-9);
  EXPECT_FALSE(src->flops_eff.has_value());
  EXPECT_EQ(src->device, "NVIDIA H100 80GB HBM3");
  ASSERT_EQ(src->notes.size(), 1u);
  EXPECT_NE(src->notes[0].find("batch 32"), std::string::npos) << src->notes[0];
}

TEST(PlanCalibration, KernelsBenchGivesHbmAndFlopsEfficiency) {
  const HardwareSpec hw = BuiltinHardware()["h100"];
  auto src = CalibrateFromBenchJson(kKernelsJson, "kernels.json", hw);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  EXPECT_NEAR(src->hbm_eff.value(), 2000e9 / hw.hbm_bw, 1e-9);
  EXPECT_NEAR(src->flops_eff.value(), 600e12 / hw.bf16_flops, 1e-9);
}

// The whole decode run's bandwidth wins over the GEMM's whatever the order of the files, and since it
// already contains the per-layer overheads, the planner's own overhead term is dropped.
TEST(PlanCalibration, DecodeRunWinsInEitherOrderAndReplacesTheOverheadTerm) {
  const HardwareSpec hw = BuiltinHardware()["h100"];
  auto decode = CalibrateFromBenchJson(kDecodeJson, "decode.json", hw);
  auto kernels = CalibrateFromBenchJson(kKernelsJson, "kernels.json", hw);
  ASSERT_TRUE(decode.ok() && kernels.ok());
  for (const auto& order : {std::vector<CalibrationSource>{*decode, *kernels}, std::vector<CalibrationSource>{*kernels, *decode}}) {
    Calibration c;
    const auto applied = ApplyCalibration(order, &c);
    EXPECT_NEAR(c.hbm_eff, 2400e9 / hw.hbm_bw, 1e-9);
    EXPECT_NEAR(c.flops_eff, 600e12 / hw.bf16_flops, 1e-9);
    EXPECT_EQ(c.layer_overhead_us, 0);
    EXPECT_EQ(applied.size(), 2u);
  }
  Calibration only_gemm;
  const double overhead = only_gemm.layer_overhead_us;
  ApplyCalibration({*kernels}, &only_gemm);
  EXPECT_NEAR(only_gemm.hbm_eff, 2000e9 / hw.hbm_bw, 1e-9);
  EXPECT_EQ(only_gemm.layer_overhead_us, overhead) << "a GEMM alone does not contain the per-layer overheads";
}

TEST(PlanCalibration, RefusesFailedRunsImpossibleRatesAndOtherFiles) {
  const HardwareSpec hw = BuiltinHardware()["h100"];
  auto failed = CalibrateFromBenchJson(R"({"copy_bandwidth_gbs": 3000, "ok": false, "runs": [{"batch": 1, "ratio": 0.5}]})",
                                       "d.json", hw);
  EXPECT_EQ(failed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(failed.status().message().find("checks failed"), std::string::npos);
  // 9 TB/s on an H100 preset: the preset is not the card that ran.
  auto too_fast = CalibrateFromBenchJson(R"({"copy_bandwidth_gbs": 9000, "ok": true, "runs": [{"batch": 1, "ratio": 1.0}]})",
                                         "d.json", hw);
  EXPECT_NE(too_fast.status().message().find("hardware preset"), std::string::npos) << too_fast.status().ToString();
  // A plausible hbm_eff with an impossible flops_eff: the whole file is refused.
  auto half_bad = CalibrateFromBenchJson(R"({"verified": true, "results": [
      {"name": "expert_gemm_decode_x", "measured": 2000}, {"name": "expert_gemm_prefill_x", "measured": 99999}]})",
                                         "k.json", hw);
  EXPECT_FALSE(half_bad.ok());
  EXPECT_FALSE(CalibrateFromBenchJson(R"({"something": 1})", "x.json", hw).ok());
  EXPECT_FALSE(CalibrateFromBenchJson("not json", "x.json", hw).ok());
  EXPECT_FALSE(CalibrateFromBenchJson(R"({"ok": true, "runs": [{"batch": "one"}]})", "x.json", hw).ok());
  EXPECT_FALSE(CalibrateFromBenchJson(R"({"device": 7, "ok": true, "runs": [{"batch": 1, "ratio": 0.5}]})", "x.json", hw).ok());
  EXPECT_EQ(CalibrateFromBenchFile("/nonexistent.json", hw).status().code(), StatusCode::kNotFound);
}

// shoal bench a2a --json across hosts: net_eff from MPI_Alltoallv's bytes that leave each rank's host.
TEST(PlanCalibration, AllToAllAcrossHostsGivesNetEfficiency) {
  const HardwareSpec hw = BuiltinHardware()["h100"];  // 50 GB/s per GPU NIC
  // 4 hosts x 8 ranks: 24 of 32 destinations are off-host. Best size: 64 MiB per rank in 2 ms =
  // 32 GiB/s sent, 3/4 of it leaving the host = 25.2 GB/s per rank = 0.503 of the NIC.
  const std::string across = R"({"tool": "shoal bench a2a", "backend": "mpi", "ranks": 32, "hosts": 4,
      "max_ranks_per_host": 8, "min_ranks_per_host": 8, "ok": true, "results": [
      {"hidden": 7168, "topk": 8, "tokens": 64, "bytes": 1048576, "raw_us": 400, "ours_us": 500},
      {"hidden": 7168, "topk": 8, "tokens": 4096, "bytes": 67108864, "raw_us": 2000, "ours_us": 2100}]})";
  auto src = CalibrateFromBenchJson(across, "a2a.json", hw);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  ASSERT_TRUE(src->net_eff.has_value());
  EXPECT_NEAR(*src->net_eff, 67108864.0 * 0.75 / 2e-3 / 50e9, 1e-9);
  EXPECT_FALSE(src->hbm_eff.has_value());
  EXPECT_NE(src->notes[0].find("4096 tokens/rank"), std::string::npos) << src->notes[0];
  Calibration c;
  const auto applied = ApplyCalibration({*src}, &c);
  EXPECT_NEAR(c.net_eff, *src->net_eff, 1e-12);
  ASSERT_EQ(applied.size(), 1u);

  // One host measures shared memory; uneven hosts and failed runs calibrate nothing.
  auto with = [&](const std::string& from, const std::string& to) {
    std::string j = across;
    j.replace(j.find(from), from.size(), to);
    return j;
  };
  EXPECT_TRUE(MessageHas(CalibrateFromBenchJson(with("\"hosts\": 4", "\"hosts\": 1"), "a2a.json", hw).status(),
                         "shared memory, not the network"));
  EXPECT_TRUE(MessageHas(CalibrateFromBenchJson(with("\"min_ranks_per_host\": 8", "\"min_ranks_per_host\": 7"),
                                                "a2a.json", hw).status(),
                         "different numbers of ranks"));
  EXPECT_TRUE(MessageHas(CalibrateFromBenchJson(with("\"ok\": true", "\"ok\": false"), "a2a.json", hw).status(),
                         "checks failed"));
  // Faster than the preset's NIC: the preset is not this fabric.
  const std::string fast = with("\"raw_us\": 2000", "\"raw_us\": 900");
  EXPECT_TRUE(MessageHas(CalibrateFromBenchJson(fast, "a2a.json", hw).status(), "net_eff"));
}

// The weight dtype comes from the checkpoint (quantization_config, else bf16 whatever torch_dtype
// says: the GPU engine serves bf16) or from the preset's release, and says where it came from.
TEST(PlanReport, WeightDtypeFromTheCheckpointOrThePreset) {
  auto fp8 = LoadModelSpec(testing::FixturesDir() + "/deepseek-v3-fp8");
  ASSERT_TRUE(fp8.ok()) << fp8.status().ToString();
  EXPECT_EQ(fp8->weight_dtype, "fp8");
  EXPECT_EQ(fp8->weight_dtype_source, "config.json quantization_config: fp8");
  auto f32 = LoadModelSpec(testing::FixturesDir() + "/qwen3-moe-f32");
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->weight_dtype, "bf16");
  EXPECT_NE(f32->weight_dtype_source.find("float32 (the GPU engine serves bf16)"), std::string::npos)
      << f32->weight_dtype_source;
  EXPECT_EQ(GetModelPreset("deepseek-v3")->weight_dtype, "fp8");
  EXPECT_EQ(GetModelPreset("kimi-k2")->weight_dtype, "fp8");
  EXPECT_EQ(GetModelPreset("mixtral-8x22b")->weight_dtype, "bf16");
}

// The header: every assumption, flagged where shoal does not serve that way yet; the accuracy band;
// parameter counts readable for a tiny model too.
TEST(PlanReport, HeaderStatesAssumptionsAndTheBand) {
  PlanRequest r;
  r.model = *LoadModelSpec(testing::FixturesDir() + "/deepseek-v3-fp8");
  r.weight_dtype = r.model.weight_dtype;
  r.weight_dtype_source = r.model.weight_dtype_source;
  r.hw = BuiltinHardware()["h100"];
  auto p = Plan(r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const std::string text = FormatPlan(*p);
  for (const char* want : {"WARNING  weights fp8 (config.json quantization_config: fp8)", "WARNING  KV cache bf16, MLA latent",
                           "WARNING  two-micro-batch overlap", "WARNING  expert load 1.30", "accuracy the published checks",
                           "0.79-0.96", "K params"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << " in\n" << text;
  }
  EXPECT_EQ(text.find("0.0B"), std::string::npos) << text;
  r.overlap = false;
  r.weight_dtype = "bf16";
  r.model = *GetModelPreset("mixtral-8x22b");
  const std::string plain = FormatPlan(*Plan(r));
  EXPECT_NE(plain.find("assumes  weights bf16"), std::string::npos) << plain;
  EXPECT_NE(plain.find("assumes  no compute/all-to-all overlap"), std::string::npos) << plain;
}

// A model whose dense part does not fit one GPU beside its experts: the layout splits attention, the
// header flags it (shoal has no attention TP yet), and the report says what data-parallel attention
// would need.
TEST(PlanReport, AttentionTpIsExplainedAndFlagged) {
  PlanRequest r;
  r.model = *GetModelPreset("frontier-405b-active");
  r.hw = BuiltinHardware()["h100"];
  auto p = Plan(r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_GT(p->smallest.attn_tp, 1);
  const std::string text = FormatPlan(*p);
  const std::string tp = std::to_string(p->smallest.attn_tp);
  EXPECT_NE(text.find("WARNING  attention TP" + tp), std::string::npos) << text;
  EXPECT_NE(text.find("why TP" + tp + " with data-parallel attention: weights need"), std::string::npos) << text;
}

TEST(PlanReport, TtftQueuesAtTheTargetLoad) {
  LayoutPlan l;
  l.ttft_ms = 100;
  l.prefill.tokens_per_s = 1000;
  PlanRequest r;
  double rho = 0, ttft = 0;
  QueuedTtft(r, l, 4, &rho, &ttft);
  EXPECT_EQ(ttft, 100) << "no target load: no queue";
  r.target_input_tps = 2000;  // half of 4 GPUs x 1000
  QueuedTtft(r, l, 4, &rho, &ttft);
  EXPECT_DOUBLE_EQ(rho, 0.5);
  EXPECT_DOUBLE_EQ(ttft, 150);  // M/D/1: wait = rho / (2 (1 - rho)) = 0.5 services
  r.target_input_tps = 4000;
  QueuedTtft(r, l, 4, &rho, &ttft);
  EXPECT_TRUE(std::isinf(ttft));
}

// --sweep: the smallest layout and doublings; exactly one cheapest among those meeting the SLOs, with
// the fewest GPUs for the load; --emit-config's YAML reads back as shoal's config of that layout.
TEST(PlanReport, SweepMarksTheCheapestAndItsConfigLoads) {
  PlanRequest r;
  r.model = *GetModelPreset("deepseek-v3");
  r.hw = BuiltinHardware()["h100"];
  r.tpot_ms = 50;
  r.ttft_ms = 2000;
  r.max_batch_per_gpu = 256;
  r.target_output_tps = 200000;
  r.target_input_tps = 400000;
  auto p = Plan(r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  auto rows = Sweep(r, *p);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_GE(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].layout.num_gpus, p->smallest.num_gpus);
  const SweepRow* best = nullptr;
  for (const SweepRow& row : *rows) {
    EXPECT_EQ(row.layout.num_gpus % p->smallest.num_gpus, 0);
    if (row.cheapest) {
      EXPECT_EQ(best, nullptr) << "one cheapest";
      best = &row;
    }
  }
  ASSERT_NE(best, nullptr);
  for (const SweepRow& row : *rows) {
    if (row.meets_slos) {
      EXPECT_GE(row.gpus_for_load, best->gpus_for_load);
    }
  }
  EXPECT_TRUE(best->meets_slos);
  EXPECT_NE(FormatSweep(*p, *rows).find("*"), std::string::npos);

  const std::string yaml = LayoutConfigYaml(*p, best->layout, testing::FixturesDir() + "/deepseek-v3-fp8");
  auto cfg = ParseEngineConfig(yaml, "emitted.yaml", "");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString() << "\n" << yaml;
  EXPECT_EQ(cfg->device, "cuda");
  EXPECT_EQ(cfg->max_num_seqs, best->layout.decode.batch);
  EXPECT_EQ(cfg->cluster.ranks_per_group, best->layout.num_gpus);
  EXPECT_EQ(cfg->max_model_len, r.input_len + r.output_len);
  EXPECT_DOUBLE_EQ(cfg->kv_memory_fraction, 0.9);
  EXPECT_NE(yaml.find("# Planned assuming weights fp8"), std::string::npos) << yaml;
  EXPECT_EQ(SbatchCommand(*p, best->layout, "x.yaml"),
            "sbatch --nodes=" + std::to_string(best->layout.nodes) +
                " --ntasks=" + std::to_string(best->layout.num_gpus) + " --gpus-per-task=1 deploy/slurm/shoal.sbatch x.yaml");
}

}  // namespace
}  // namespace shoal::plan

namespace shoal::plan {
namespace {

// A saved GET /v1/expert_load calibrates the expert imbalance per layout: computed from the routing
// counts for each GPU count (balanced ranges), so a skewed load costs more than an even one, and the
// constant 1.3 is no longer used.
TEST(PlanCalibration, MeasuredExpertLoadSetsTheImbalancePerLayout) {
  const HardwareSpec hw = BuiltinHardware()["h100"];
  PlanRequest r = DeepSeekV3On("h100", 2000, 100);
  const int E = r.model.num_experts;
  auto load_json = [&](double zipf) {
    nlohmann::ordered_json tokens = nlohmann::ordered_json::array();
    for (int l = 0; l < r.model.num_layers; ++l) {
      std::vector<uint64_t> row;
      for (int e = 0; e < E; ++e) row.push_back(static_cast<uint64_t>(1e6 / std::pow(1 + (e * 7 + l) % E, zipf)));
      tokens.push_back(row);
    }
    nlohmann::ordered_json g = {{"layers", r.model.num_layers}, {"experts", E}, {"window_seconds", 60}, {"tokens", tokens}};
    return nlohmann::ordered_json{{"window_seconds", 60}, {"groups", {{"g0", g}}}}.dump();
  };
  auto skewed = CalibrateFromBenchJson(load_json(1.0), "load.json", hw);
  ASSERT_TRUE(skewed.ok()) << skewed.status().ToString();
  ASSERT_NE(skewed->expert_load, nullptr);
  auto even = CalibrateFromBenchJson(load_json(0.0), "even.json", hw);
  ASSERT_TRUE(even.ok());
  PlanRequest rs = r, re = r;
  ApplyCalibration({*skewed}, &rs.calib);
  ApplyCalibration({*even}, &re.calib);
  EXPECT_NEAR(ExpertImbalance(re, 64), 1.0, 1e-9);              // 4 experts on every GPU
  EXPECT_NEAR(ExpertImbalance(re, 72), 4.0 / (256.0 / 72), 1e-9);  // 3 or 4: the ranges cannot be even
  EXPECT_NEAR(ExpertImbalance(rs, 72), skewed->expert_load->BalancedImbalance(72), 1e-12);
  EXPECT_GT(ExpertImbalance(rs, 72), 1.5);
  EXPECT_GT(ExpertImbalance(rs, 128), ExpertImbalance(rs, 8));  // fewer experts per GPU: less averaging
  EXPECT_LT(DecodePerNode(rs, 72), DecodePerNode(re, 72));
  // A load of another model is refused by the planner; a broken file by the calibration.
  PlanRequest other = rs;
  other.model = *GetModelPreset("qwen3-235b-a22b");
  EXPECT_TRUE(MessageHas(Plan(other).status(), "measured expert load has"));
  EXPECT_FALSE(CalibrateFromBenchJson(R"({"groups": {"g0": {"layers": 1, "experts": 2, "tokens": [[1]]}}})", "bad.json", hw).ok());
}

}  // namespace
}  // namespace shoal::plan
