// A STREAM-style triad (a[i] = b[i] + s·c[i]) over arrays far larger than the caches, on the same
// thread pool the kernels use: the machine's sustainable memory bandwidth, measured in the same run as
// the benchmark it is a roofline for.
#pragma once

#include <cstddef>

#include "common/thread_pool.h"

namespace shoal::bench {

// Best-of-`repeats` bandwidth in bytes/s, counting 24 bytes per element (STREAM's convention: two
// reads and one write of a double; write-allocate traffic not counted).
double TriadBandwidth(ThreadPool& pool, size_t bytes_per_array = size_t{512} << 20, int repeats = 8);

}  // namespace shoal::bench
