// Throughput of the CUDA backend's bandwidth-bound kernels and expert GEMMs, each as a ratio to a
// roofline measured in the same run on the same device:
//   (a) device-to-device copy of 1 GiB: (bytes read + written) / time, the bandwidth roofline;
//   (b) PermuteRows and UnpermuteCombine at prefill scale: bytes moved / time ÷ (a), target ≥ 0.8;
//   (c) decode-size expert GEMMs (few rows per expert, so weight reads dominate): weight bytes read /
//       time ÷ (a), in both ExpertGemmMode modes, target ≥ 0.6;
//   (d) a prefill expert GEMM (many rows per expert) in both modes against one Gemm::Linear of the
//       same total shape: time(Linear) / time(experts), target ≥ 0.85.
// The expert GEMMs run with the engine's f32 output and with a bf16 output, the type combination
// cuBLAS documents for grouped GEMMs; a grouped combination that this cuBLAS refused when Gemm::Create
// probed it is a row marked "unsupported", not a failure.
// Each measurement is the median of several cudaEvent-timed repetitions after a warm-up. Before its
// numbers count, every op is checked on a sample of its output (outputs are poisoned first), so a
// kernel that does nothing cannot post a fast time; cuda_ops_test is the precision test.
//
//   build/bench/gpu_kernels_bench [--json FILE] [--strict]
// Exit: 0, or 1 on an error or a failed check (--strict: also when a target is missed); 77 with a
// SKIP line when there is no CUDA device. Runs in well under a minute (a few GB of device memory).
// An error in one section (a CUDA or cuBLAS failure) is recorded as a FAILED row and the sections
// after it still run, so the table and the JSON always come out.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/gemm.h"
#include "tests/gpu/device_buffer.h"

namespace shoal::cuda {
namespace {

using gpu_util::DeviceBuffer;

struct Result {
  Result() = default;
  Result(std::string n, double m, const char* u, double r, double t, double time_ms)
      : name(std::move(n)), measured(m), unit(u), ratio(r), target(t), ms(time_ms) {}
  std::string name;
  double measured = 0;
  const char* unit = "";
  double ratio = 0;
  double target = 0;  // 0: informational, no target
  double ms = 0;
  bool output_ok = true;  // the sampled output checks of this measurement passed
  std::string status;     // empty: measured; "unsupported: ..." or "FAILED: ..." otherwise
  bool measured_ok() const { return status.empty(); }
  bool pass() const { return measured_ok() && output_ok && (target <= 0 || ratio >= target); }
  bool failed() const { return status.rfind("FAILED", 0) == 0; }
};

std::vector<Result> g_results;
bool g_verified = true, g_row_verified = true;  // all checks; the checks since the last result
cudaStream_t g_stream = nullptr;

void Record(Result r) {
  r.output_ok = std::exchange(g_row_verified, true);
  g_results.push_back(std::move(r));
}

// An error ends the current section (Main catches it per section and records a FAILED row).
struct SectionFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Must(const Status& st, const char* what) {
  if (st.ok()) return;
  throw SectionFailure(std::string(what) + ": " + st.ToString());
}

// A row that was not measured: the combination is unsupported, or its section failed.
void RecordNotMeasured(const std::string& name, const std::string& status, double target) {
  Result r;
  r.name = name;
  r.status = status;
  r.target = target;
  Record(std::move(r));
}

// A sanity check on an op's output (not a precision test): records a failure and says which.
void Verify(bool ok, const std::string& what) {
  if (ok) return;
  g_verified = g_row_verified = false;
  std::printf("CHECK FAILED: %s\n", what.c_str());
}

template <class T>
std::vector<T> Fetch(const T* device, size_t count) {
  std::vector<T> host(count);
  SHOAL_GPU_CHECK(cudaMemcpyAsync(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost, g_stream));
  SHOAL_GPU_CHECK(cudaStreamSynchronize(g_stream));
  return host;
}

// Median of `reps` event-timed runs of op (each timed alone, back to back on the stream, so host
// launch overhead that leaves the GPU idle counts, as it would in serving), after `warmup` runs (cuBLAS
// heuristics, first-touch and clocks settle there).
template <class Op>
double MedianMs(const char* what, int warmup, int reps, Op&& op) {
  for (int i = 0; i < warmup; ++i) Must(op(), what);
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) SHOAL_GPU_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    SHOAL_GPU_CHECK(cudaEventRecord(ev[2 * i], g_stream));
    Must(op(), what);
    SHOAL_GPU_CHECK(cudaEventRecord(ev[2 * i + 1], g_stream));
  }
  SHOAL_GPU_CHECK(cudaStreamSynchronize(g_stream));
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    float t = 0;
    SHOAL_GPU_CHECK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : ev) SHOAL_GPU_CHECK(cudaEventDestroy(e));
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2];
}

// Random device data without generating gigabytes on the host: one 32 MiB block of random normal
// values (bf16 and f32) is uploaded, then doubled in place on the device. The period does not matter
// to any kernel timed here (no data-dependent work), and every value is a nonzero normal sample.
class RandomFill {
 public:
  explicit RandomFill(std::mt19937_64& rng)
      : bf16_(gpu_util::ToBits(gpu_util::Normal(kChunk / 2, rng))), f32_(gpu_util::Normal(kChunk / 4, rng)) {}
  void Bf16(bf16* dst, size_t count) const { Fill(dst, count * 2, bf16_.data()); }
  void F32(float* dst, size_t count) const { Fill(dst, count * 4, f32_.data()); }

 private:
  static constexpr size_t kChunk = size_t{32} << 20;
  static void Fill(void* dst, size_t bytes, const void* chunk) {
    char* d = static_cast<char*>(dst);
    size_t filled = std::min(bytes, kChunk);
    SHOAL_GPU_CHECK(cudaMemcpyAsync(d, chunk, filled, cudaMemcpyHostToDevice, g_stream));
    while (filled < bytes) {
      const size_t n = std::min(filled, bytes - filled);
      SHOAL_GPU_CHECK(cudaMemcpyAsync(d + filled, d, n, cudaMemcpyDeviceToDevice, g_stream));
      filled += n;
    }
  }
  gpu_util::Bits bf16_;
  gpu_util::Floats f32_;
};

// k distinct experts out of E per token, in random order (as a router emits them), and the stable
// expert-major plan of kernels/cuda/cuda_kernels.h MoePermutePlan built on the host.
struct Routing {
  std::vector<int32_t> ids, row_of, row_token;
  std::vector<int64_t> offsets;
};
Routing Route(int64_t m, int k, int E, std::mt19937_64& rng) {
  Routing r;
  std::vector<int32_t> all(E);
  for (int e = 0; e < E; ++e) all[e] = e;
  r.ids.resize(m * k);
  for (int64_t t = 0; t < m; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), k, r.ids.begin() + t * k);
  }
  std::vector<int32_t> order(m * k);
  for (int32_t i = 0; i < m * k; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return r.ids[a] < r.ids[b]; });
  r.offsets.assign(E + 1, 0);
  for (int32_t e : r.ids) ++r.offsets[e + 1];
  for (int e = 0; e < E; ++e) r.offsets[e + 1] += r.offsets[e];
  r.row_of.resize(m * k), r.row_token.resize(m * k);
  for (int32_t i = 0; i < m * k; ++i) r.row_of[order[i]] = i, r.row_token[i] = order[i] / k;
  return r;
}

// The double-precision dot product of x row r and W row c (fetched back) and Σ|x·w|.
std::pair<double, double> HostDot(const bf16* x_row, const bf16* w_row, int64_t k) {
  const auto xs = Fetch(reinterpret_cast<const uint16_t*>(x_row), k);
  const auto ws = Fetch(reinterpret_cast<const uint16_t*>(w_row), k);
  double dot = 0, mag = 0;
  for (int64_t i = 0; i < k; ++i) {
    const double p = static_cast<double>(Bf16ToF32(xs[i])) * Bf16ToF32(ws[i]);
    dot += p, mag += std::fabs(p);
  }
  return {dot, mag};
}

// y[r, c] against HostDot; loose: a sanity check, not a precision test.
bool DotMatches(const bf16* x_row, const bf16* w_row, int64_t k, const float* y_elem) {
  const auto [dot, mag] = HostDot(x_row, w_row, k);
  return std::fabs(Fetch(y_elem, 1)[0] - dot) <= 1e-3 * mag + 1e-3;
}

// The same for a bf16 output element (its rounding adds 2^-8 of |y|).
bool DotMatchesBf16(const bf16* x_row, const bf16* w_row, int64_t k, const bf16* y_elem) {
  const auto [dot, mag] = HostDot(x_row, w_row, k);
  const float y = Bf16ToF32(Fetch(reinterpret_cast<const uint16_t*>(y_elem), 1)[0]);
  return std::fabs(y - dot) <= 1e-3 * mag + std::ldexp(std::fabs(dot), -8) + 1e-3;
}

// (a) The roofline: one 1 GiB device-to-device copy reads and writes 1 GiB each.
double BenchCopy() {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer<uint8_t> src(bytes), dst(bytes);
  SHOAL_GPU_CHECK(cudaMemsetAsync(src.get(), 0x5A, bytes, g_stream));
  const double ms = MedianMs("d2d copy", 2, 10, [&] {
    return CudaStatus(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, g_stream),
                      "cudaMemcpyAsync", __FILE__, __LINE__);
  });
  const double gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  Record({"d2d_copy_1GiB", gbs, "GB/s", 1.0, 0, ms});
  return gbs;
}

// (b) Prefill-scale MoE data movement: 8192 tokens × top-8 of 256 experts, hidden 7168.
void BenchPermuteCombine(double copy_gbs, const RandomFill& fill, std::mt19937_64& rng) {
  const int64_t m = 8192, d = 7168;
  const int k = 8, E = 256;
  const int64_t rows = m * k;
  const Routing r = Route(m, k, E, rng);
  auto row_token = gpu_util::ToDevice<int32_t>(r.row_token, g_stream);
  auto row_of = gpu_util::ToDevice<int32_t>(r.row_of, g_stream);
  auto ids = gpu_util::ToDevice<int32_t>(r.ids, g_stream);
  std::vector<float> weights(rows);
  for (float& w : weights) w = std::uniform_real_distribution<float>(0.01f, 0.3f)(rng);
  auto dweights = gpu_util::ToDevice<float>(weights, g_stream);
  {
    DeviceBuffer<bf16> x(m * d), out(rows * d);
    fill.Bf16(x.get(), x.size());
    out.Poison(g_stream);
    // Bytes moved: each permuted row is read once from x and written once.
    const double bytes = 2.0 * rows * d * sizeof(uint16_t);
    const double ms = MedianMs("PermuteRows", 3, 10, [&] {
      return PermuteRows(x.get(), d, row_token.get(), rows, out.get(), g_stream);
    });
    for (int64_t row : {int64_t{0}, rows / 2 + 1, rows - 1})
      Verify(Fetch(reinterpret_cast<const uint16_t*>(out.get() + row * d), d) ==
                 Fetch(reinterpret_cast<const uint16_t*>(x.get() + r.row_token[row] * d), d),
             "PermuteRows row " + std::to_string(row));
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    Record({"permute_rows_8192x8x7168_bf16", gbs, "GB/s", gbs / copy_gbs, 0.8, ms});
  }
  DeviceBuffer<float> expert_out(rows * d), residual(m * d);
  fill.F32(expert_out.get(), expert_out.size());
  fill.F32(residual.get(), residual.size());
  // One checked run first: token t's row against the host sum in ascending expert id.
  const int64_t t = m / 2 + 3;
  const auto before = Fetch(residual.get() + t * d, d);
  Must(UnpermuteCombine(expert_out.get(), d, row_of.get(), ids.get(), dweights.get(), m, k, residual.get(), g_stream),
       "UnpermuteCombine");
  const auto after = Fetch(residual.get() + t * d, d);
  std::vector<double> want(before.begin(), before.end()), mag(d, 0.0);
  for (int j = 0; j < k; ++j) {
    const auto eo = Fetch(expert_out.get() + static_cast<int64_t>(r.row_of[t * k + j]) * d, d);
    for (int64_t i = 0; i < d; ++i) {
      const double term = static_cast<double>(weights[t * k + j]) * eo[i];
      want[i] += term, mag[i] += std::fabs(term);
    }
  }
  bool ok = true;  // loose (1e-4 of the magnitudes): a sanity check, cuda_ops_test checks precision
  for (int64_t i = 0; i < d; ++i)
    ok = ok && std::fabs(after[i] - want[i]) <= 1e-4 * (mag[i] + std::fabs(before[i])) + 1e-5;
  Verify(ok, "UnpermuteCombine token " + std::to_string(t));
  // Bytes moved: every expert-output row read once, the residual read and written once.
  const double bytes = (static_cast<double>(rows) * d + 2.0 * m * d) * sizeof(float);
  const double ms = MedianMs("UnpermuteCombine", 2, 10, [&] {
    return UnpermuteCombine(expert_out.get(), d, row_of.get(), ids.get(), dweights.get(), m, k, residual.get(),
                            g_stream);
  });
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  Record({"unpermute_combine_8192x8x7168_f32", gbs, "GB/s", gbs / copy_gbs, 0.8, ms});
}

const char* ModeName(ExpertGemmMode mode) { return mode == ExpertGemmMode::kGrouped ? "grouped" : "per_expert"; }

// The expert GEMM variants timed: each mode with the engine's f32 output and with a bf16 output.
struct ExpertVariant {
  ExpertGemmMode mode;
  bool bf16_out;
  std::string Name() const { return std::string(ModeName(mode)) + (bf16_out ? "_bf16out" : ""); }
  // Empty when Gemm::Create's probe found this combination supported.
  std::string Unsupported(const Gemm& gemm) const {
    if (mode != ExpertGemmMode::kGrouped) return "";
    const GroupedGemmSupport& g = gemm.grouped_support();
    if (bf16_out ? g.bf16_out : g.f32_out) return "";
    return "unsupported: cuBLAS refused grouped bf16→" + std::string(bf16_out ? "bf16" : "f32") + " (" + g.why_not + ")";
  }
};
const ExpertVariant kExpertVariants[] = {{ExpertGemmMode::kGrouped, false},
                                         {ExpertGemmMode::kPerExpert, false},
                                         {ExpertGemmMode::kGrouped, true},
                                         {ExpertGemmMode::kPerExpert, true}};

// Poisons y, times ExpertLinear in the variant, then checks the first row of a few experts that have
// rows (the last output of the timed runs: beta is 0, so every run writes the same values). y holds
// rows × n f32 values; a bf16-out variant uses its first half.
double TimeExperts(Gemm& gemm, const ExpertVariant& v, const bf16* x, std::span<const int64_t> offsets,
                   const std::vector<const bf16*>& w, int64_t n, int64_t k, DeviceBuffer<float>& y, int reps) {
  y.Poison(g_stream);
  bf16* y16 = reinterpret_cast<bf16*>(y.get());
  const double ms = MedianMs("ExpertLinear", 3, reps, [&] {
    return v.bf16_out ? gemm.ExpertLinear(x, offsets, w.data(), n, k, y16, v.mode)
                      : gemm.ExpertLinear(x, offsets, w.data(), n, k, y.get(), v.mode);
  });
  const int E = static_cast<int>(offsets.size()) - 1;
  for (int e : {0, E / 2, E - 1}) {
    if (offsets[e + 1] == offsets[e]) continue;
    const int64_t row = offsets[e], col = (e * 7919) % n;
    const bool ok = v.bf16_out ? DotMatchesBf16(x + row * k, w[e] + col * k, k, y16 + row * n + col)
                               : DotMatches(x + row * k, w[e] + col * k, k, y.get() + row * n + col);
    Verify(ok, "ExpertLinear " + v.Name() + " expert " + std::to_string(e));
  }
  return ms;
}

// (c) Decode: 128 tokens × top-8 over 64 local experts of [2048, 7168] bf16 (~16 rows per expert), so
// the time is the time to read the weights of every expert that has rows.
void BenchDecodeExperts(double copy_gbs, Gemm& gemm, const RandomFill& fill, std::mt19937_64& rng) {
  const int64_t tokens = 128, n = 2048, k = 7168;
  const int top_k = 8, E = 64;
  const Routing r = Route(tokens, top_k, E, rng);
  const int64_t rows = tokens * top_k;
  DeviceBuffer<bf16> weights(static_cast<size_t>(E) * n * k), x(rows * k);
  DeviceBuffer<float> y(rows * n);
  fill.Bf16(weights.get(), weights.size());
  fill.Bf16(x.get(), x.size());
  std::vector<const bf16*> w(E, nullptr);
  double weight_bytes = 0;
  for (int e = 0; e < E; ++e) {
    if (r.offsets[e + 1] == r.offsets[e]) continue;  // an expert with no rows is not read
    w[e] = weights.get() + static_cast<int64_t>(e) * n * k;
    weight_bytes += static_cast<double>(n) * k * sizeof(uint16_t);
  }
  // The device-offset kernel of small steps (MoeDown: the same [2048, 7168] weight shape, counts read
  // on the device), at this shape and at one token (8 experts of 64, one row each).
  for (const int64_t toks : {tokens, int64_t{1}}) {
    const Routing rr = toks == tokens ? r : Route(toks, top_k, E, rng);
    std::vector<const bf16*> ptrs(E, nullptr);
    double bytes = 0;
    for (int e = 0; e < E; ++e) {
      if (rr.offsets[e + 1] == rr.offsets[e]) continue;
      ptrs[e] = weights.get() + static_cast<int64_t>(e) * n * k;
      bytes += static_cast<double>(n) * k * sizeof(uint16_t);
    }
    auto dptrs = gpu_util::ToDevice<const bf16*>(ptrs, g_stream);
    auto doff = gpu_util::ToDevice<int64_t>(rr.offsets, g_stream);
    // The CUDA-core kernel the engine runs, and the experimental tensor-core one (MoeDownTc).
    for (const bool tc : {false, true}) {
      y.Poison(g_stream);
      const double ms = MedianMs("MoeDown", 3, 20, [&] {
        return tc ? MoeDownTc(x.get(), k, doff.get(), E, dptrs.get(), n, y.get(), g_stream)
                  : MoeDown(x.get(), k, doff.get(), E, dptrs.get(), n, y.get(), g_stream);
      });
      for (int e = 0; e < E; ++e) {
        if (rr.offsets[e + 1] == rr.offsets[e]) continue;
        const int64_t row = rr.offsets[e], col = (e * 7919) % n;
        Verify(DotMatches(x.get() + row * k, ptrs[e] + col * k, k, y.get() + row * n + col),
               std::string(tc ? "MoeDownTc" : "MoeDown") + " expert " + std::to_string(e));
        break;
      }
      const double gbs = bytes / (ms * 1e-3) / 1e9;
      Record({"expert_gemm_decode_" + std::to_string(toks) + "x8_e64_2048x7168_device_offsets" + (tc ? "_tc" : ""), gbs,
              "GB/s", gbs / copy_gbs, 0.6, ms});
    }
  }
  for (const ExpertVariant& v : kExpertVariants) {
    const std::string name = "expert_gemm_decode_128x8_e64_2048x7168_" + v.Name();
    if (const std::string why = v.Unsupported(gemm); !why.empty()) {
      RecordNotMeasured(name, why, 0.6);
      continue;
    }
    const double ms = TimeExperts(gemm, v, x.get(), r.offsets, w, n, k, y, 20);
    const double gbs = weight_bytes / (ms * 1e-3) / 1e9;
    Record({name, gbs, "GB/s", gbs / copy_gbs, 0.6, ms});
  }
}

// (d) Prefill: 16384 rows spread evenly over 32 experts of [4096, 7168] bf16, against one Linear of
// [16384, 7168] × [4096, 7168]ᵀ — the same FLOPs with no grouping overhead.
void BenchPrefillExperts(Gemm& gemm, const RandomFill& fill) {
  const int64_t rows = 16384, n = 4096, k = 7168;
  const int E = 32;
  DeviceBuffer<bf16> weights(static_cast<size_t>(E) * n * k), x(rows * k);
  DeviceBuffer<float> y(rows * n);
  fill.Bf16(weights.get(), weights.size());
  fill.Bf16(x.get(), x.size());
  std::vector<int64_t> offsets(E + 1);
  std::vector<const bf16*> w(E);
  for (int e = 0; e <= E; ++e) offsets[e] = rows * e / E;
  for (int e = 0; e < E; ++e) w[e] = weights.get() + static_cast<int64_t>(e) * n * k;
  const double tflop = 2.0 * rows * n * k / 1e12;

  y.Poison(g_stream);
  const double linear_ms = MedianMs("Linear", 3, 10, [&] { return gemm.Linear(x.get(), rows, k, w[0], n, y.get()); });
  Verify(DotMatches(x.get() + 12345 * k, w[0] + 777 * k, k, y.get() + 12345 * n + 777), "Linear");
  Record({"linear_16384x7168x4096", tflop / (linear_ms * 1e-3), "TFLOP/s", 1.0, 0, linear_ms});
  for (const ExpertVariant& v : kExpertVariants) {
    const std::string name = "expert_gemm_prefill_16384_e32_4096x7168_" + v.Name();
    if (const std::string why = v.Unsupported(gemm); !why.empty()) {
      RecordNotMeasured(name, why, 0.85);
      continue;
    }
    const double ms = TimeExperts(gemm, v, x.get(), offsets, w, n, k, y, 10);
    Record({name, tflop / (ms * 1e-3), "TFLOP/s", linear_ms / ms, 0.85, ms});
  }
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20) out += c;
  return out;
}

int Main(int argc, char** argv) {
  std::string json;
  bool strict = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json = argv[++i];
    } else if (a == "--strict") {
      strict = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--strict]\n", argv[0]);
      return 2;
    }
  }
  std::string why;
  if (CudaDeviceCount(&why) == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  SHOAL_GPU_CHECK(cudaSetDevice(0));
  SHOAL_GPU_CHECK(cudaGetDeviceProperties(&prop, 0));
  SHOAL_GPU_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) ^ rd();
  std::printf("gpu_kernels_bench on %s (sm_%d%d, %d SMs, %.1f GiB), data seed %llu\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / double(1 << 30),
              static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  const RandomFill fill(rng);
  auto gemm_or = Gemm::Create(g_stream);
  if (gemm_or.ok()) {
    const GroupedGemmSupport& g = (*gemm_or)->grouped_support();
    std::printf("cuBLAS %d grouped GEMM: bf16→f32 %s, bf16→bf16 %s%s%s\n", CUBLAS_VERSION,
                g.f32_out ? "supported" : "refused", g.bf16_out ? "supported" : "refused",
                g.why_not.empty() ? "" : " — ", g.why_not.c_str());
  }

  // Each section on its own: an error records a FAILED row and the next section still runs (after a
  // sticky CUDA error they fail too, each saying so).
  double copy_gbs = 0;
  auto section = [&](const char* name, auto&& body) {
    try {
      body();
    } catch (const std::exception& e) {
      g_verified = false;
      std::printf("SECTION FAILED: %s: %s\n", name, e.what());
      RecordNotMeasured(name, std::string("FAILED: ") + e.what(), 0);
    }
    std::fflush(stdout);
  };
  section("d2d_copy", [&] { copy_gbs = BenchCopy(); });
  if (copy_gbs <= 0) copy_gbs = 1;  // ratios of later rows are then meaningless, and the run has failed
  section("permute_combine", [&] { BenchPermuteCombine(copy_gbs, fill, rng); });
  section("expert_gemm_decode", [&] {
    Must(gemm_or.status(), "Gemm::Create");
    BenchDecodeExperts(copy_gbs, **gemm_or, fill, rng);
  });
  section("expert_gemm_prefill", [&] {
    Must(gemm_or.status(), "Gemm::Create");
    BenchPrefillExperts(**gemm_or, fill);
  });

  // The table as markdown rows (scripts/gpu-check.sh shows the lines that start with '|').
  bool all_met = true;
  std::printf("\n# ratio: GB/s rows / d2d copy GB/s; prefill expert rows: Linear time / expert time\n");
  std::printf("| %-52s | %10s | %-7s | %6s | %6s | %-10s |\n", "name", "measured", "unit", "ratio", "target", "pass");
  std::printf("|%s|%s:|%s|%s:|%s:|%s|\n", std::string(54, '-').c_str(), std::string(11, '-').c_str(),
              std::string(9, '-').c_str(), std::string(7, '-').c_str(), std::string(7, '-').c_str(),
              std::string(12, '-').c_str());
  for (const Result& r : g_results) {
    char target[16] = "-";
    if (r.target > 0) std::snprintf(target, sizeof target, "%.2f", r.target);
    if (!r.measured_ok()) {
      all_met = all_met && !r.failed();  // an unsupported combination is not a missed target
      std::printf("| %-52s | %10s | %-7s | %6s | %6s | %-10s |\n", r.name.c_str(), "-", "", "-", target,
                  r.failed() ? "FAILED" : "unsupported");
      continue;
    }
    all_met = all_met && r.pass();
    const char* pass = !r.output_ok ? "BAD OUTPUT" : r.target <= 0 ? "-" : r.pass() ? "yes" : "NO";
    std::printf("| %-52s | %10.1f | %-7s | %6.3f | %6s | %-10s |\n", r.name.c_str(), r.measured, r.unit, r.ratio,
                target, pass);
  }
  for (const Result& r : g_results)
    if (!r.measured_ok()) std::printf("# %s: %s\n", r.name.c_str(), r.status.c_str());
  std::printf("# output checks: %s\n", g_verified ? "OK" : "FAILED");
  if (!json.empty()) {
    std::ofstream js(json);
    js << "{\"device\":\"" << JsonEscape(prop.name) << "\",\"copy_gbs\":" << copy_gbs << ",\"verified\":"
       << (g_verified ? "true" : "false") << ",\"all_targets_met\":" << (all_met ? "true" : "false")
       << ",\"results\":[";
    for (size_t i = 0; i < g_results.size(); ++i) {
      const Result& r = g_results[i];
      js << (i ? "," : "") << "{\"name\":\"" << r.name << "\",";
      if (!r.measured_ok()) {
        js << "\"status\":\"" << JsonEscape(r.status) << "\",\"pass\":" << (r.failed() ? "false" : "null") << "}";
        continue;
      }
      js << "\"measured\":" << r.measured << ",\"unit\":\""
         << r.unit << "\",\"ratio\":" << r.ratio << ",\"ms\":" << r.ms
         << ",\"output_ok\":" << (r.output_ok ? "true" : "false") << ",\"target\":";
      if (r.target > 0)
        js << r.target << ",\"pass\":" << (r.pass() ? "true" : "false") << "}";
      else
        js << "null,\"pass\":null}";
    }
    js << "]}\n";
    if (!js) std::fprintf(stderr, "gpu_kernels_bench: could not write %s\n", json.c_str());
  }
  if (gemm_or.ok()) gemm_or->reset();  // the handle and its forked streams go before their stream
  SHOAL_GPU_CHECK(cudaStreamDestroy(g_stream));
  if (!g_verified) return 1;
  return strict && !all_met ? 1 : 0;
}

}  // namespace
}  // namespace shoal::cuda

int main(int argc, char** argv) { return shoal::cuda::Main(argc, argv); }
