// libFuzzer target: the tokenizer must handle any byte string cleanly — as a tokenizer.json (FromJson
// accepts or rejects it, never crashes), and as text/ids for a real fixture tokenizer: Encode either
// rejects invalid UTF-8 or returns in-range ids that decode, Decode of arbitrary ids never crashes, and
// streaming detokenization always reproduces the full decode in whole UTF-8 characters.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace {

const shoal::Tokenizer* Fixture(int which) {
  static const char* kNames[] = {"llama3-style", "spm-bytefallback", "tiny-unk"};
  static std::unique_ptr<shoal::Tokenizer> toks[3];
  if (!toks[which]) {
    auto t = shoal::Tokenizer::Load(std::string(SHOAL_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + kNames[which]);
    if (!t.ok()) std::abort();  // the committed fixture must load
    toks[which] = std::move(t).value();
  }
  return toks[which].get();
}

void CheckStream(const shoal::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  auto full = tok.Decode(ids, skip);
  if (!full.ok()) return;
  shoal::IncrementalDetokenizer d(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    auto piece = d.Append(id);
    if (!piece.ok()) std::abort();  // Decode accepted every id
    if (shoal::ValidUtf8(*piece) != *piece) std::abort();
    all += *piece;
  }
  all += d.Finish();
  if (all != shoal::ValidUtf8(*full)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  // 1. As a tokenizer.json; whatever loads must also encode and decode without crashing.
  if (auto t = shoal::Tokenizer::FromJson(input, "fuzz.json"); t.ok()) {
    if (auto ids = (*t)->Encode("Hello, wörld 123 日本 😀", true); ids.ok()) (void)(*t)->Decode(*ids, false);
  }
  if (size == 0) return 0;
  const shoal::Tokenizer& tok = *Fixture(data[0] % 3);
  // 2. As text: ids in range, and decode + streaming agree.
  auto ids = tok.Encode(std::string_view(input).substr(1), data[0] & 4);
  if (ids.ok()) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    }
    if (!tok.Decode(*ids, false).ok()) std::abort();
    CheckStream(tok, *ids, data[0] & 8);
  }
  // 3. As ids (2 bytes each, some out of range): Decode errors or succeeds, streaming agrees.
  std::vector<int32_t> raw;
  for (size_t i = 1; i + 1 < size; i += 2) raw.push_back(static_cast<int32_t>(data[i] | (data[i + 1] << 8)) % 700 - 20);
  (void)tok.Decode(raw, false);
  CheckStream(tok, raw, data[0] & 16);
  return 0;
}
