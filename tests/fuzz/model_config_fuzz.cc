// libFuzzer target: config.json (model/model_config.h) is read from checkpoints users download. Any
// byte string must be rejected cleanly, and a config it accepts must satisfy what the loader and the
// engine index by: per-layer vectors of num_layers entries, a head split, k ≤ experts, and a chunk size
// exactly when some layer is chunked.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = shoal::ParseModelConfig(text, "fuzz/config.json");
  if (!c.ok()) {
    if (c.status().message().find("fuzz/config.json") == std::string::npos) std::abort();
    return 0;
  }
  const auto n = static_cast<size_t>(c->num_layers);
  if (c->num_layers < 1 || c->layer_is_moe.size() != n) std::abort();
  if (!c->layer_rope.empty() && c->layer_rope.size() != n) std::abort();
  if (!c->layer_chunked.empty() && c->layer_chunked.size() != n) std::abort();
  if (c->num_heads < 1 || c->num_kv_heads < 1 || c->num_heads % c->num_kv_heads != 0) std::abort();
  if (c->head_dim < 1 || c->head_dim % 2 != 0 || c->vocab_size < 1 || c->hidden_size < 1) std::abort();
  if (c->num_experts_per_tok > c->num_experts) std::abort();
  bool chunked = false;
  for (int l = 0; l < c->num_layers; ++l) chunked |= c->LayerChunk(l) > 0;
  if (chunked != (c->attention_chunk_size > 0)) std::abort();
  return 0;
}
