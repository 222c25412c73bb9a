// One CPU matmul kernel out of cache: FP8 block-scaled (128 × 128) against bf16 weights of the same
// shape, side by side in one run. Enough distinct matrices are cycled that the weights stream from
// memory (beyond any last-level cache this VM has), as they do in decode.
//
//   build/bench/matmul_bench [--rows 2048] [--cols 2048] [--tokens 1] [--threads 2] [--mb 800] [--seconds 3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace shoal::bench {
namespace {

struct Options {
  int64_t rows = 2048, cols = 2048, tokens = 1, mb = 800;
  int threads = 2;
  double seconds = 3;
};

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--rows") o.rows = std::atoll(v);
    else if (k == "--cols") o.cols = std::atoll(v);
    else if (k == "--tokens") o.tokens = std::atoll(v);
    else if (k == "--threads") o.threads = std::atoi(v);
    else if (k == "--mb") o.mb = std::atoll(v);
    else if (k == "--seconds") o.seconds = std::atof(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (o.rows < 1 || o.cols < 1 || o.tokens < 1 || o.threads < 1 || o.mb < 1) {
    std::fprintf(stderr, "--rows, --cols, --tokens, --threads and --mb must be positive\n");
    return 2;
  }
  const int64_t per = o.rows * o.cols;
  const int64_t count = std::max<int64_t>(1, o.mb * 1000000 / per);  // FP8 bytes ≈ o.mb
  std::mt19937 rng(1);
  std::vector<uint8_t> f8(static_cast<size_t>(count * per));
  std::vector<uint16_t> bf16(static_cast<size_t>(count * per));
  for (auto& v : f8) v = static_cast<uint8_t>(rng() & 0xf7);  // no e4m3 NaN
  for (auto& v : bf16) v = static_cast<uint16_t>(0x3c00 | (rng() & 0x80ff));
  const int64_t block = 128, sr = (o.rows + block - 1) / block, sc = (o.cols + block - 1) / block;
  std::vector<float> scales(static_cast<size_t>(sr * sc), 0.01f);
  std::vector<float> x(static_cast<size_t>(o.tokens * o.cols), 0.5f), y(static_cast<size_t>(o.tokens * o.rows));
  ThreadPool pool(o.threads);
  std::printf("# matmul_bench: %lld x %lld weights, %lld token(s), %d threads, %lld matrices cycled, %s kernels\n",
              static_cast<long long>(o.rows), static_cast<long long>(o.cols), static_cast<long long>(o.tokens),
              o.threads, static_cast<long long>(count), kernels::CpuKernelIsa());
  std::printf("%6s %12s %14s\n", "dtype", "GB/s", "Gweights/s");
  double rate[2] = {0, 0};
  for (int fp8 = 0; fp8 < 2; ++fp8) {
    auto matrix = [&](int64_t i) {
      if (fp8) {
        return kernels::Matrix{DType::kF8E4M3, f8.data() + i * per, o.rows, o.cols, scales.data(), 0, sc,
                               static_cast<int>(block), static_cast<int>(block)};
      }
      return kernels::Matrix{DType::kBF16, bf16.data() + i * per, o.rows, o.cols};
    };
    for (int64_t i = 0; i < count; ++i) kernels::MatMul(x.data(), o.tokens, matrix(i), y.data(), pool);  // warm
    const auto t0 = std::chrono::steady_clock::now();
    double bytes = 0, weights = 0, s = 0;
    do {
      for (int64_t i = 0; i < count; ++i) {
        const kernels::Matrix m = matrix(i);
        kernels::MatMul(x.data(), o.tokens, m, y.data(), pool);
        bytes += static_cast<double>(m.nbytes());
        weights += static_cast<double>(per);
      }
      s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } while (s < o.seconds);
    rate[fp8] = weights / s;
    std::printf("%6s %12.2f %14.2f\n", fp8 ? "fp8" : "bf16", bytes / s / 1e9, weights / s / 1e9);
  }
  std::printf("# fp8 / bf16 weights per second: %.2f\n", rate[1] / rate[0]);
  return 0;
}

}  // namespace
}  // namespace shoal::bench

int main(int argc, char** argv) { return shoal::bench::Main(argc, argv); }
