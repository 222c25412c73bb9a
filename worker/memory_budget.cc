#include "worker/memory_budget.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

namespace shoal {

namespace {

// A cgroup's limit file: a byte count, or "max" (none) / missing → 0.
int64_t ReadLimit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return 0;
  try {
    return static_cast<int64_t>(std::min<unsigned long long>(std::stoull(text), INT64_MAX));
  } catch (...) {
    return 0;
  }
}

std::string Gib(int64_t bytes) {
  char buf[32];
  if (bytes >= (int64_t{1} << 30) || bytes <= -(int64_t{1} << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  }
  return buf;
}

}  // namespace

int64_t HostMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  int64_t total = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
  // This process's own cgroup (a Slurm job's or a container's sits deep in the hierarchy, with no
  // cgroup namespace) and every ancestor up to the root, for v2 ("0::/path" → memory.max) and v1
  // ("N:…memory…:/path" → memory.limit_in_bytes, whose "no limit" is larger than the machine).
  auto apply = [&](const std::string& root, std::string rel, const char* file) {
    for (;;) {
      const int64_t limit = ReadLimit((root + rel + (rel.empty() || rel.back() != '/' ? "/" : "") + file).c_str());
      if (limit > 0) total = total > 0 ? std::min(total, limit) : limit;
      const size_t slash = rel.find_last_of('/');
      if (rel.empty() || slash == std::string::npos) break;
      rel = rel.substr(0, slash);
    }
  };
  std::ifstream cg("/proc/self/cgroup");
  for (std::string line; std::getline(cg, line);) {
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (path.find("..") != std::string::npos) continue;
    if (controllers.empty()) {
      apply("/sys/fs/cgroup", path, "memory.max");
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      apply("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes");
    }
  }
  return total;
}

StatusOr<int64_t> KvBytesForFraction(double fraction, int64_t share_bytes, int64_t used_bytes, int64_t min_kv_bytes,
                                     const std::string& what) {
  if (!(fraction > 0 && fraction <= 1)) {
    return InvalidArgument("kv_cache.memory_fraction must be in (0, 1], got " + std::to_string(fraction));
  }
  if (share_bytes <= 0) {
    return Unavailable("kv_cache.memory_fraction: cannot tell how much memory " + what +
                       " has; set kv_cache.memory_mib instead");
  }
  const int64_t budget = static_cast<int64_t>(fraction * static_cast<double>(share_bytes));
  const int64_t kv = budget - used_bytes;
  if (kv < std::max<int64_t>(min_kv_bytes, 1)) {
    return ResourceExhausted("kv_cache.memory_fraction " + std::to_string(fraction) + " of " + what + " (" +
                             Gib(share_bytes) + ") is " + Gib(budget) + ", but this rank already holds " +
                             Gib(used_bytes) + " (its weights" + (what.rfind("GPU", 0) == 0 ? ", the runtime's and an activation reserve" : "") +
                             "): no room for the KV cache (one block is " + std::to_string(min_kv_bytes) +
                             " bytes); raise the fraction, or use more ranks so each holds fewer experts");
  }
  return kv;
}

}  // namespace shoal
