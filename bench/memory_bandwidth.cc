#include "bench/memory_bandwidth.h"

#include <algorithm>
#include <chrono>
#include <memory>

namespace shoal::bench {

double TriadBandwidth(ThreadPool& pool, size_t bytes_per_array, int repeats) {
  const int64_t n = static_cast<int64_t>(bytes_per_array / sizeof(double));
  std::unique_ptr<double[]> a(new double[n]), b(new double[n]), c(new double[n]);
  // First touch by the threads that will use each chunk.
  pool.ParallelFor(n, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) a[i] = 0.0, b[i] = 1.0, c[i] = 2.0;
  });
  double best = 0.0;
  const double s = 3.0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.ParallelFor(n, [&](int64_t lo, int64_t hi) {
      double* __restrict pa = a.get();
      const double* __restrict pb = b.get();
      const double* __restrict pc = c.get();
      for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + s * pc[i];
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 24.0 * static_cast<double>(n) / secs);
  }
  // Use the result so the loop cannot be dropped.
  if (a[n / 2] != 7.0) return 0.0;
  return best;
}

}  // namespace shoal::bench
