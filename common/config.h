// shoal's own YAML configuration: parsed into structs and validated once, at load.
//
// Every error names the file, the line and the key (e.g. "configs/x.yaml:7: kv_cache.block_size: must
// be a power of two in [1, 1024], got 12"): unknown keys, wrong types, out-of-range values and paths
// that do not exist are all rejected here, so nothing later has to re-check them.
//
// Schema (all sections and keys optional; defaults below):
//   model:
//     path: DIR            # HF checkpoint directory; relative paths are relative to the YAML file
//   engine:
//     threads: 0           # CPU kernel threads; 0 = every online core (shoal worker: the node's cores
//                          # divided among the ranks on that node)
//     max_num_seqs: 64     # live sequences at once (Engine::NewSequence refuses more)
//     max_step_tokens: 8192  # tokens per forward step: longer prompts are prefilled in chunks, which
//                            # also bounds how long group peers wait for each other in one step
//   kv_cache:
//     block_size: 16       # tokens per KV block (power of two, 1..1024)
//     memory_mib: 256      # KV cache size per process
//   parallel:              # expert-parallel groups (shoal worker under mpirun/srun)
//     collective_timeout_ms: 60000  # a collective whose peers have not all joined by then fails
//                                   # (DeadlineExceeded naming them) instead of hanging
//     startup_timeout_s: 600        # the same for the first barrier, which waits for every rank's load
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace shoal {

struct EngineConfig {
  std::string source;      // the YAML file this came from ("" when built in code)
  std::string model_path;  // absolute or relative to the working directory after loading
  int threads = 0;
  int max_num_seqs = 64;
  int max_step_tokens = 8192;
  int kv_block_size = 16;
  int64_t kv_cache_mib = 256;
  int64_t collective_timeout_ms = 60000;
  int64_t startup_timeout_s = 600;

  // Thread count after resolving 0 to the number of online cores.
  int ResolvedThreads() const;
};

// Loads and validates `path`. A `model.path` that does not exist is an error.
StatusOr<EngineConfig> LoadEngineConfig(const std::string& path);

// Same, from YAML text; `source_name` is used in messages and `base_dir` resolves relative paths.
StatusOr<EngineConfig> ParseEngineConfig(const std::string& yaml_text, const std::string& source_name,
                                         const std::string& base_dir);

}  // namespace shoal
