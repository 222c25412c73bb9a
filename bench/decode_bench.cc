// Decode throughput of the single-process CPU engine against the machine's memory bandwidth.
//
// A synthetic Qwen3-MoE-shaped model of a few GB (far larger than any cache) with bf16 weights; decode
// at batch 1 and batch 16; bytes of weights each step reads (dense matrices, the experts it routed to,
// the lm_head); a STREAM triad in the same run. The roofline ratio is
//   achieved weight bandwidth (bytes read per step × steps/s) / triad bandwidth.
// It verifies before it times: batch-16 decode of 16 copies of the batch-1 prompt must reproduce the
// batch-1 tokens exactly, and the footer says OK or FAILED.
//
// --model deepseek: a DeepSeek-V3-shaped model (MLA, grouped routing) instead, with --dtype fp8 for
// block-scaled FP8 weights (bf16 otherwise); the KV bytes per token the engine's cache takes are printed
// next to the latent-cache formula.
//
//   build/bench/decode_bench [--model qwen3|deepseek] [--dtype bf16|fp8] [--layers N] [--experts N]
//                            [--threads N] [--steps N] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/memory_bandwidth.h"
#include "bench/synthetic_model.h"
#include "kernels/kernels.h"
#include "model/weights.h"
#include "worker/engine.h"
#include "worker/generate.h"

namespace shoal::bench {
namespace {

struct Options {
  int layers = 6, experts = 48, threads = 0, steps = 32;
  std::string json, model = "qwen3", dtype = "bf16";
};


struct Run {
  double tok_s = 0, ms_per_step = 0, bytes_per_step = 0, gbs = 0;
  std::vector<std::vector<int32_t>> tokens;
};

// batch sequences; with distinct=false they all get the same prompt (and so route identically).
Run Decode(Engine& engine, int batch, int steps, bool distinct) {
  std::vector<GenerateRequest> reqs;
  for (int b = 0; b < batch; ++b) {
    GenerateRequest r;
    const int32_t d = distinct ? 1000 * b : 0;
    r.prompt = {11 + d, 22 + d, 33 + d, 44 + d, 55 + d, 66 + d, 77 + d, 88 + d};
    r.max_tokens = steps + 1;
    reqs.push_back(r);
  }
  GenerateStats st;
  auto res = Generate(engine, reqs, &st);
  Run run;
  if (!res.ok()) {
    std::fprintf(stderr, "decode failed: %s\n", res.status().ToString().c_str());
    return run;
  }
  run.tok_s = st.decode_tokens / st.decode_seconds;
  run.ms_per_step = 1e3 * st.decode_seconds / st.decode_steps;
  run.bytes_per_step = st.decode_weight_bytes / st.decode_steps;
  run.gbs = st.decode_weight_bytes / st.decode_seconds / 1e9;
  for (auto& r : *res) run.tokens.push_back(r.tokens);
  return run;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--layers") o.layers = std::stoi(argv[i + 1]);
    else if (k == "--experts") o.experts = std::stoi(argv[i + 1]);
    else if (k == "--threads") o.threads = std::stoi(argv[i + 1]);
    else if (k == "--steps") o.steps = std::stoi(argv[i + 1]);
    else if (k == "--json") o.json = argv[i + 1];
    else if (k == "--model") o.model = argv[i + 1];
    else if (k == "--dtype") o.dtype = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if ((o.model != "qwen3" && o.model != "deepseek") || (o.dtype != "bf16" && o.dtype != "fp8") ||
      (o.dtype == "fp8" && o.model != "deepseek")) {
    std::fprintf(stderr, "--model qwen3|deepseek, --dtype bf16|fp8 (fp8 with deepseek)\n");
    return 2;
  }
  const bool deepseek = o.model == "deepseek", fp8 = o.dtype == "fp8";
  const ModelConfig c = deepseek ? SyntheticMlaConfig(o.layers, o.experts, 768) : SyntheticMoeConfig(o.layers, o.experts, 768);
  EngineConfig cfg;
  cfg.threads = o.threads;
  cfg.kv_cache_mib = 256;
  std::printf("# shoal decode_bench: synthetic %s, hidden %d, %d layers, %d experts top-%d, "
              "expert ffn %d, %s weights\n",
              deepseek ? "DeepSeek-V3-shaped (MLA)" : "Qwen3-MoE", c.hidden_size, c.num_layers, c.num_experts,
              c.num_experts_per_tok, c.moe_intermediate_size, fp8 ? "block-scaled FP8 (128x128)" : "bf16");
  if (deepseek) {
    // The engine's cache (f32 on the CPU) against the latent-cache formula: layers x (kv_lora + rope) x 4.
    const double measured = double(KvCache::BlockBytes(c, 16)) / 16 * (double(c.num_layers) / KvLayout::For(c).layers_per_group);
    std::printf("# KV per token: %.0f bytes (cache) vs %d x (%d + %d) x 4 = %d bytes (formula)\n", measured,
                c.num_layers, c.kv_lora_rank, c.qk_rope_head_dim, c.num_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * 4);
  }
  ModelWeights w = MakeSyntheticWeights(c, fp8 ? DType::kF8E4M3 : DType::kBF16, 42);
  const double total_gb = w.MatrixBytes() / 1e9;
  auto engine = std::move(Engine::Create(c, std::move(w), cfg)).value();
  std::printf("# weights %.2f GB, %d threads, %s kernels, hardware threads %u%s\n", total_gb, engine->pool().size(),
              kernels::CpuKernelIsa(), std::thread::hardware_concurrency(),
#ifdef NDEBUG
              ""
#else
              "  WARNING: assertions enabled (not a Release build)"
#endif
  );

  const double triad = TriadBandwidth(engine->pool());
  std::printf("# STREAM triad: %.2f GB/s\n", triad / 1e9);

  // Verify first: 16 copies of the batch-1 prompt decoded together reproduce its tokens exactly.
  Run b1 = Decode(*engine, 1, o.steps, false);
  Run same16 = Decode(*engine, 16, 4, false);
  bool ok = !b1.tokens.empty() && same16.tokens.size() == 16;
  for (const auto& t : same16.tokens) ok = ok && t.size() == 5 && std::equal(t.begin(), t.end(), b1.tokens[0].begin());
  // Then batch 16 of distinct prompts: different tokens route to different experts, as in serving.
  Run b16 = Decode(*engine, 16, o.steps, true);

  std::printf("%6s %10s %12s %14s %10s %9s %10s\n", "batch", "tok/s", "ms/step", "MB read/step", "GB/s", "roofline",
              "GFLOP/s");
  // Each token does ~2 FLOPs per active weight; at batch 1 every weight read is active, so active
  // weights per token = batch-1 bytes per step / 2 (bf16).
  // (FP8: about one byte per weight, so this column is approximate there.)
  const double active_params = b1.bytes_per_step / (fp8 ? 1.0 : 2.0);
  auto row = [&](int batch, const Run& r) {
    std::printf("%6d %10.2f %12.2f %14.1f %10.2f %9.2f %10.1f\n", batch, r.tok_s, r.ms_per_step, r.bytes_per_step / 1e6,
                r.gbs, r.gbs * 1e9 / triad, 2.0 * active_params * r.tok_s / 1e9);
  };
  row(1, b1);
  row(16, b16);
  std::printf("# roofline = (weight bytes read per step x steps/s) / triad bandwidth; goal >= 0.60 at batch 1\n");
  std::printf("# verification (batch 16 == batch 1 tokens): %s\n", ok ? "OK" : "FAILED");
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    js << "{\"model\":\"" << o.model << "\",\"dtype\":\"" << o.dtype << "\",\"triad_gbs\":" << triad / 1e9 << ",\"weights_gb\":" << total_gb << ",\"threads\":" << engine->pool().size()
       << ",\"batch1\":{\"tok_s\":" << b1.tok_s << ",\"gbs\":" << b1.gbs << ",\"roofline\":" << b1.gbs * 1e9 / triad
       << "},\"batch16\":{\"tok_s\":" << b16.tok_s << ",\"gbs\":" << b16.gbs << ",\"roofline\":"
       << b16.gbs * 1e9 / triad << "},\"verified\":" << (ok ? "true" : "false") << "}\n";
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace shoal::bench

int main(int argc, char** argv) { return shoal::bench::Main(argc, argv); }
