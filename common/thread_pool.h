// A fixed pool of worker threads for the CPU kernels.
//
// Kernels split their work statically: Run() calls fn(i, n) once on each of n threads (the caller is
// thread 0), so a kernel decides which rows thread i owns and results do not depend on timing. The
// threads spin briefly before sleeping, because decode steps issue many small jobs back to back.
// Thread-safety: one Run() at a time; Run() must not be called from inside fn.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace shoal {

class ThreadPool {
 public:
  // threads >= 1 is the total, the caller included.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void Run(const std::function<void(int thread, int num_threads)>& fn);

  // Calls f(begin, end) on contiguous chunks of [0, n), chunk boundaries multiples of `align`.
  template <class F>
  void ParallelFor(int64_t n, F&& f, int64_t align = 1) {
    if (n <= 0) return;
    const int t = size();
    if (t == 1 || n <= align) {
      f(int64_t{0}, n);
      return;
    }
    Run([&](int i, int nt) {
      const int64_t units = (n + align - 1) / align;
      const int64_t b = std::min(n, units * i / nt * align);
      const int64_t e = std::min(n, units * (i + 1) / nt * align);
      if (b < e) f(b, e);
    });
  }

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace shoal
