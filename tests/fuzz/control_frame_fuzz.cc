// libFuzzer target: the control-plane frame decoder (control/wire.h) must reject any byte string
// cleanly — a worker or coordinator on the other end may be buggy or hostile — and every message it
// accepts must re-encode to exactly the bytes it came from.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "control/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shoal::control;
  if (size < kHeaderBytes) return 0;
  auto h = DecodeHeader(std::span<const uint8_t>(data, kHeaderBytes));
  if (!h.ok()) return 0;
  const std::span<const uint8_t> payload(data + kHeaderBytes, size - kHeaderBytes);
  if (payload.size() != h->payload_bytes) return 0;
  auto m = DecodePayload(static_cast<MessageType>(h->type), payload);
  if (!m.ok()) return 0;
  // A violated invariant is a decoder bug: crash loudly so the fuzzer records the input.
  const std::string again = EncodeFrame(*m);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
  return 0;
}
