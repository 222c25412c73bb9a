// libFuzzer target: the batch-file parser (`shoal worker --batch`) must reject any byte string cleanly,
// and every request it accepts must satisfy the limits the engine relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "worker/batch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int kVocab = 1000;
  const std::string text(reinterpret_cast<const char*>(data), size);
  constexpr int64_t kContext = 4096;
  auto requests = shoal::ParseBatchFile(text, "fuzz.jsonl", kVocab, 16, kContext);
  if (!requests.ok()) return 0;
  for (const auto& r : *requests) {
    const auto& q = r.request;
    // A violated invariant is a parser bug: crash loudly so the fuzzer records the input.
    if (q.prompt.empty() || q.max_tokens < 1 || q.max_tokens > shoal::kMaxNewTokens) std::abort();
    if (static_cast<int64_t>(q.prompt.size()) + q.max_tokens > kContext) std::abort();
    for (int32_t id : q.prompt) {
      if (id < 0 || id >= kVocab) std::abort();
    }
    for (int32_t id : q.stop_ids) {
      if (id < 0 || id >= kVocab) std::abort();
    }
    if (!(q.sampling.top_p > 0.0f && q.sampling.top_p <= 1.0f) || q.sampling.temperature < 0.0f) std::abort();
    if (r.id_json.empty()) std::abort();
  }
  return 0;
}
