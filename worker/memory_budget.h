// kv_cache.memory_fraction (`--kv-cache-memory-fraction`): the KV cache sized from the memory a rank
// has rather than a fixed MiB, as vLLM's --gpu-memory-utilization does. The rank's weights and its KV
// cache together take `fraction` of the memory it may use; the cache gets what the weights leave.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace shoal {

// Bytes processes on this host may use: physical memory, or less when this process's cgroup or one of
// its ancestors (from /proc/self/cgroup, v1 or v2) has a memory limit (a Slurm job's, a container's).
// 0 when neither can be read.
int64_t HostMemoryBytes();

// The KV cache's bytes: fraction × share_bytes − used_bytes, where used_bytes is what the rank holds
// already (its weights; on a GPU everything allocated on the device so far, with a reserve for
// activations). An error naming every number when that leaves less than min_kv_bytes (one KV block),
// so a start-up with no room says why. `what` names the memory ("GPU 0", "RAM / 2 ranks on this node").
StatusOr<int64_t> KvBytesForFraction(double fraction, int64_t share_bytes, int64_t used_bytes, int64_t min_kv_bytes,
                                     const std::string& what);

}  // namespace shoal
