// Single-GPU decode throughput of the GPU engine (worker/cuda/cuda_engine.h) against the card's memory
// bandwidth.
//
// A synthetic Qwen3-MoE-shaped model of about 10 GB of bf16 weights, generated on the device; decode
// at several batch sizes over 128-token prompts; bytes each step reads (weights the step touched, from
// the engine, plus the KV cache it attended over); a device-to-device copy in the same run as the
// roofline. The ratio is (bytes read per step / step time) / copy bandwidth.
// Verifies while it times: batch-B decode of B copies of one prompt must give B identical token
// streams (footer says OK or FAILED); how many leading tokens equal the batch-1 stream is reported.
//
//   build/bench/gpu_decode_bench [--layers N] [--steps N] [--batches 1,8,64,256] [--json FILE] [--profile 1]
//                                [--experimental 1]
// (exit 77: no device). --profile 1: the default path only, its timed steps between cudaProfilerStart
// and cudaProfilerStop (scripts/gpu-profile.sh runs it under ncu --profile-from-start off).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include "bench/synthetic_model.h"
#include "kernels/cuda/cuda_check.h"
#include "worker/cuda/cuda_engine.h"

namespace shoal::bench {
namespace {

struct Options {
  int layers = 24, steps = 32, prompt = 128;
  bool profile = false;  // only the default path, and cudaProfilerStart/Stop around its timed steps
  bool experimental = false;  // --experimental 1: that path is the one profiled
  std::vector<int> batches = {1, 8, 64, 256};
  std::string json;
};

// Device-to-device copy of 1 GiB, bytes read + written per second, median of 7.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 8; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i > 0) ms.push_back(t);  // the first is a warm-up
  }
  cudaFree(a);
  cudaFree(b);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3);
}

struct Result {
  int batch = 0;
  std::string mode;
  double step_ms = 0, tok_s = 0, gb_per_step = 0, ratio = 0;
  int same_as_batch1 = 0;  // leading tokens equal to the batch-1 stream
};

int Run(const Options& o) {
  std::string why;
  if (cuda::CudaDeviceCount(&why) == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double copy_bw = CopyBandwidth();
  // ~10.2 GB of bf16: 24 layers × (6.3 M attention + 32 experts × 6.3 M) + 2 × 65.5 M embedding/lm_head.
  const ModelConfig c = SyntheticMoeConfig(o.layers, 32, 1024);
  EngineConfig cfg;
  cfg.kv_block_size = 16;
  cfg.kv_cache_mib = 8192;
  cfg.max_num_seqs = 512;
  auto made = cuda::CudaEngine::CreateSynthetic(c, cfg, 0, 42);
  if (!made.ok()) {
    std::fprintf(stderr, "gpu_decode_bench: %s\n", made.status().ToString().c_str());
    return 1;
  }
  cuda::CudaEngine& engine = **made;
  std::printf("gpu_decode_bench: %s, %.2f GB of bf16 weights, copy bandwidth %.0f GB/s\n", prop.name,
              engine.weights().matrix_bytes() / 1e9, copy_bw / 1e9);

  std::vector<int32_t> prompt(o.prompt);
  for (int i = 0; i < o.prompt; ++i) prompt[i] = (i * 7919 + 13) % c.vocab_size;
  const int64_t kv_bytes_per_token = int64_t{2} * c.num_layers * c.kv_dim() * 2;
  std::vector<Result> results;
  std::vector<int32_t> batch1_tokens;
  bool ok = true;
  // Each batch size with the engine's default path (for batches up to kDeviceMoeMaxTokens: the
  // device-offset MoE kernels and a replayed CUDA graph), and the small ones also without (cuBLAS
  // per-expert GEMMs with one host synchronisation per MoE layer), so both are measured in one run.
  // Small batches also with engine.experimental_gpu_kernels (not yet run on a GPU when written).
  struct Config {
    int batch;
    bool fast, experimental;
  };
  std::vector<Config> configs;
  for (int B : o.batches) {
    const bool small = B <= cuda::CudaEngine::kDeviceMoeMaxTokens && engine.device_moe_available();
    if (small && !o.profile) configs.push_back({B, false, false});
    configs.push_back({B, true, o.experimental});
    if (small && !o.profile && !o.experimental) configs.push_back({B, true, true});
  }
  for (const auto& [B, fast, experimental] : configs) {
    engine.set_device_moe(fast);
    engine.set_decode_graphs(fast);
    engine.set_experimental_kernels(experimental);
    const bool graphed = fast && B <= cuda::CudaEngine::kDeviceMoeMaxTokens && engine.device_moe_available();
    const char* mode_name = graphed ? (experimental ? "graph+exp" : "graph") : "per-expert";
    const int64_t replays_before = engine.graph_replays();
    std::vector<SeqId> seqs;
    std::vector<ForwardInput> batch;
    for (int b = 0; b < B; ++b) {
      seqs.push_back(*engine.NewSequence());
      batch.push_back({seqs.back(), prompt, false});
    }
    std::vector<int32_t> next;
    Status st = engine.ForwardGreedy(batch, &next);
    std::vector<std::vector<int32_t>> streams(B);
    double total_ms = 0, bytes = 0;
    for (int s = 0; s < o.steps && st.ok(); ++s) {
      for (int b = 0; b < B; ++b) {
        streams[b].push_back(next[b]);
        batch[b] = {seqs[b], std::span<const int32_t>(&streams[b].back(), 1), false};
      }
      if (o.profile && s == 2) cudaProfilerStart();  // ncu --profile-from-start off: the timed steps only
      const auto t0 = std::chrono::steady_clock::now();
      st = engine.ForwardGreedy(batch, &next);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (s >= 2) {  // the first steps warm cuBLAS heuristics and caches
        total_ms += ms;
        bytes += static_cast<double>(engine.last_step_weight_bytes()) +
                 static_cast<double>(B) * (o.prompt + s + 1) * kv_bytes_per_token;
      }
    }
    if (o.profile) cudaProfilerStop();
    for (SeqId s : seqs) engine.ReleaseSequence(s);
    if (!st.ok()) {
      std::printf("batch %d (%s): %s\n", B, mode_name, st.ToString().c_str());
      ok = false;
      continue;
    }
    if (graphed && engine.graph_replays() - replays_before < o.steps) {
      std::printf("batch %d: expected %d graph replays, saw %lld\n", B, o.steps,
                  static_cast<long long>(engine.graph_replays() - replays_before));
      ok = false;
    }
    for (int b = 1; b < B; ++b) ok &= streams[b] == streams[0];
    if (B == 1) batch1_tokens = streams[0];
    // Other batch sizes may run other GEMM algorithms (other rounding): agreement with batch 1 is
    // reported, not required.
    int same = 0;
    while (same < static_cast<int>(std::min(batch1_tokens.size(), streams[0].size())) &&
           batch1_tokens[same] == streams[0][same]) {
      ++same;
    }
    const int timed = o.steps - 2;
    Result r{B, mode_name, total_ms / timed, B * timed / (total_ms * 1e-3), bytes / timed / 1e9, 0, same};
    r.ratio = (bytes / (total_ms * 1e-3)) / copy_bw;
    results.push_back(r);
  }

  std::printf("\n%-6s %-11s %10s %10s %12s %12s %14s\n", "batch", "experts", "step ms", "tok/s", "GB/step",
              "of copy bw", "=batch-1 toks");
  for (const Result& r : results) {
    std::printf("%-6d %-11s %10.3f %10.0f %12.2f %12.2f %14d\n", r.batch, r.mode.c_str(), r.step_ms, r.tok_s,
                r.gb_per_step, r.ratio, r.same_as_batch1);
  }
  std::printf("%s: the B streams of every batch identical\n", ok ? "OK" : "FAILED");
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    js << "{\"device\": \"" << prop.name << "\", \"copy_bandwidth_gbs\": " << copy_bw / 1e9
       << ", \"weights_gb\": " << engine.weights().matrix_bytes() / 1e9 << ", \"ok\": " << (ok ? "true" : "false")
       << ", \"runs\": [";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      js << (i ? ", " : "") << "{\"batch\": " << r.batch << ", \"experts\": \"" << r.mode << "\", \"step_ms\": " << r.step_ms
         << ", \"tok_s\": " << r.tok_s << ", \"gb_per_step\": " << r.gb_per_step << ", \"ratio\": " << r.ratio << ", \"same_as_batch1\": " << r.same_as_batch1 << "}";
    }
    js << "]}\n";
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace shoal::bench

int main(int argc, char** argv) {
  shoal::bench::Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--layers") o.layers = std::atoi(argv[i + 1]);
    else if (k == "--steps") o.steps = std::max(4, std::atoi(argv[i + 1]));
    else if (k == "--json") o.json = argv[i + 1];
    else if (k == "--profile") o.profile = std::string(argv[i + 1]) == "1";
    else if (k == "--experimental") o.experimental = std::string(argv[i + 1]) == "1";
    else if (k == "--batches") {
      o.batches.clear();
      for (const char* p = argv[i + 1]; *p;) {
        char* end = nullptr;
        const long b = std::strtol(p, &end, 10);
        if (end == p || b < 1 || b > 512) {
          std::fprintf(stderr, "gpu_decode_bench: --batches takes sizes 1..512 separated by commas\n");
          return 2;
        }
        o.batches.push_back(static_cast<int>(b));
        p = *end == ',' ? end + 1 : end;
      }
    } else {
      std::fprintf(stderr, "usage: gpu_decode_bench [--layers N] [--steps N] [--batches 1,8,64,256] [--json FILE]\n");
      return 2;
    }
  }
  return shoal::bench::Run(o);
}
