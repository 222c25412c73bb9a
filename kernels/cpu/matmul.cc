// y = x · Wᵀ for f32 activations and f32/f16/bf16 weights: the generic kernel, the run-time ISA choice,
// and the split over threads (by output feature, so each weight row is read by exactly one thread —
// decode is bound by reading weights once).
#include <cmath>
#include <algorithm>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <array>
#include <vector>

#include "kernels/cpu/matmul_impl.h"

namespace shoal::kernels {

namespace cpu {

namespace {

template <class Load>
void RowsGeneric(const float* x, int64_t m, int64_t k, int64_t ldy, int64_t n_begin, int64_t n_end, float* y,
                 Load load) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += xi[j] * load(n * k + j);
      y[i * ldy + n] = acc;
    }
  }
}

}  // namespace

void MatMulRowsGeneric(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y) {
  const int64_t k = w.cols;
  switch (w.dtype) {
    case DType::kF32: {
      const float* p = static_cast<const float*>(w.data);
      RowsGeneric(x, m, k, w.rows, n_begin, n_end, y, [p](int64_t i) { return p[i]; });
      break;
    }
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data);
      RowsGeneric(x, m, k, w.rows, n_begin, n_end, y, [p](int64_t i) { return Bf16ToF32(p[i]); });
      break;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data);
      RowsGeneric(x, m, k, w.rows, n_begin, n_end, y, [p](int64_t i) { return F16ToF32(p[i]); });
      break;
    }
    case DType::kF8E4M3:
      MatMulRowsF8(x, m, w, n_begin, n_end, y);
      break;
  }
}

// FP8 e4m3 weights with block scales: each block of block_cols inputs is summed against the raw FP8
// values (widened through a 256-entry table) and scaled once, so the scales cost one multiply per
// block rather than per weight.
void MatMulRowsF8(const float* x, int64_t m, const Matrix& w, int64_t n_begin, int64_t n_end, float* y) {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = F8E4M3ToF32(static_cast<uint8_t>(v));
    return t;
  }();
  const int64_t k = w.cols, bc = w.block_cols;
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* p = static_cast<const uint8_t*>(w.data) + n * k;
    for (int64_t j = 0; j < k; ++j) row[j] = table[p[j]];
    const float* scale = w.block_scale + ((w.scale_row0 + n) / w.block_rows) * w.scale_cols;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      float acc = 0.0f;
      for (int64_t b0 = 0; b0 < k; b0 += bc) {
        const int64_t b1 = std::min(k, b0 + bc);
        float part = 0.0f;
        for (int64_t j = b0; j < b1; ++j) part += xi[j] * row[j];
        acc += part * scale[b0 / bc];
      }
      y[i * w.rows + n] = acc;
    }
  }
}

static MatMulRowsFn PickKernel() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // F16C is read from CPUID directly: not every compiler's __builtin_cpu_supports knows it.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return MatMulRowsAvx2;
  }
#endif
  return MatMulRowsGeneric;
}

static MatMulRowsFn Kernel() {
  static const MatMulRowsFn fn = PickKernel();
  return fn;
}

static MatMulRowsFn F8Kernel() {
#if defined(__x86_64__)
  if (Kernel() == MatMulRowsAvx2) return MatMulRowsF8Avx2;
#endif
  return MatMulRowsF8;
}

}  // namespace cpu

const char* CpuKernelIsa() { return cpu::Kernel() == cpu::MatMulRowsGeneric ? "generic" : "avx2+fma+f16c"; }

void MatMul(const float* x, int64_t m, const Matrix& w, float* y, ThreadPool& pool) {
  if (m == 0 || w.rows == 0) return;
  // FP8 has its own block-scaled kernels, chosen with the same ISA check.
  const cpu::MatMulRowsFn fn = w.dtype != DType::kF8E4M3 ? cpu::Kernel() : cpu::F8Kernel();
  // Tiny problems are not worth waking the pool.
  if (w.rows * w.cols * m < (1 << 15)) {
    fn(x, m, w, 0, w.rows, y);
    return;
  }
  pool.ParallelFor(w.rows, [&](int64_t b, int64_t e) { fn(x, m, w, b, e, y); }, /*align=*/8);
}

void MatMulBatch(std::span<const MatMulJob> jobs, ThreadPool& pool) {
  constexpr int64_t kRows = 8;  // MatMul's split alignment
  const size_t J = jobs.size();
  // Cost prefix over the jobs' 8-row units: unit u of job j costs kRows · cols · m.
  std::vector<int64_t> first_unit(J + 1, 0);
  std::vector<double> cost_before(J + 1, 0.0), unit_cost(J, 0.0);
  for (size_t j = 0; j < J; ++j) {
    const MatMulJob& a = jobs[j];
    const int64_t units = a.m > 0 && a.w->rows > 0 ? (a.w->rows + kRows - 1) / kRows : 0;
    first_unit[j + 1] = first_unit[j] + units;
    unit_cost[j] = static_cast<double>(kRows * a.w->cols * a.m);
    cost_before[j + 1] = cost_before[j] + unit_cost[j] * static_cast<double>(units);
  }
  const int64_t total_units = first_unit[J];
  if (total_units == 0) return;
  // The first unit at or after a cost.
  auto unit_at = [&](double cost) {
    for (size_t j = 0; j < J; ++j) {
      if (cost < cost_before[j + 1]) {
        const auto k = static_cast<int64_t>(std::ceil((cost - cost_before[j]) / unit_cost[j]));
        return std::min(first_unit[j] + std::max<int64_t>(k, 0), first_unit[j + 1]);
      }
    }
    return total_units;
  };
  auto run_units = [&](int64_t ub, int64_t ue) {
    for (size_t j = 0; j < J && ub < ue; ++j) {
      const int64_t lo = std::max(ub, first_unit[j]), hi = std::min(ue, first_unit[j + 1]);
      if (lo >= hi) continue;
      const MatMulJob& a = jobs[j];
      const cpu::MatMulRowsFn fn = a.w->dtype != DType::kF8E4M3 ? cpu::Kernel() : cpu::F8Kernel();
      fn(a.x, a.m, *a.w, (lo - first_unit[j]) * kRows, std::min(a.w->rows, (hi - first_unit[j]) * kRows), a.y);
    }
  };
  // Tiny problems are not worth waking the pool (MatMul's threshold, over all the jobs).
  if (pool.size() == 1 || cost_before[J] < static_cast<double>(1 << 15)) {
    run_units(0, total_units);
    return;
  }
  const double total = cost_before[J];
  pool.Run([&](int i, int nt) {
    const int64_t ub = unit_at(total * i / nt), ue = i + 1 == nt ? total_units : unit_at(total * (i + 1) / nt);
    if (ub < ue) run_units(ub, ue);
  });
}

}  // namespace shoal::kernels
