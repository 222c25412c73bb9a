// libFuzzer target: the safetensors header parser must reject any byte string cleanly — no crash, no
// read outside the buffer, no unbounded allocation — and every tensor it accepts must lie inside it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = shoal::ParseSafetensorsHeader(data, size, "fuzz.safetensors");
  if (header.ok()) {
    const uint64_t data_size = size - header->data_offset;
    for (const auto& [name, e] : header->tensors) {
      // A violated invariant is a parser bug: crash loudly so the fuzzer records the input.
      if (e.begin > e.end || e.end > data_size) std::abort();
    }
  }
  return 0;
}
