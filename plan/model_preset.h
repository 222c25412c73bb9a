// The shape of a model as the capacity planner needs it: parameter counts by kind (attention, dense
// MLP, shared and routed experts, embeddings), the KV-cache layout (GQA or MLA's compressed latent)
// and the attention FLOPs per context token. Nothing here loads weights; a ModelSpec comes from an
// HF config.json or from a built-in preset, and every count is derived from the shape fields below.
//
// Covered config.json families: DeepseekV2/V3 (MLA, shared experts, first_k_dense_replace),
// Mixtral, Qwen2-MoE / Qwen3-MoE, Llama 4 (text_config, interleaved MoE layers), and plain dense
// decoders (Llama/Qwen2/Mistral) as a model with no experts.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::plan {

struct AttentionSpec {
  enum class Kind { kGqa, kMla };
  Kind kind = Kind::kGqa;
  int num_heads = 0;
  // GQA (MHA when num_kv_heads == num_heads)
  int num_kv_heads = 0;
  int head_dim = 0;
  // MLA (DeepSeek-V2/V3). q_lora_rank 0 means q is projected straight from hidden.
  int q_lora_rank = 0;
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
};

struct ModelSpec {
  std::string name;
  int hidden_size = 0;
  int num_layers = 0;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  AttentionSpec attn;

  // Layers whose MLP is a MoE block; the other num_layers - num_moe_layers have a dense MLP of
  // dense_intermediate_size (gate/up/down, SwiGLU).
  int num_moe_layers = 0;
  int dense_intermediate_size = 0;
  int num_experts = 0;            // routed experts per MoE layer
  int top_k = 0;                  // routed experts per token
  int moe_intermediate_size = 0;  // per routed expert
  int num_shared_experts = 0;     // always-on experts per MoE layer (DeepSeek, Llama 4, Qwen2-MoE)
  int shared_intermediate_size = 0;
  // Chunked local attention (Llama 4's RoPE layers): a query sees only the keys of its own chunk of
  // attention_chunk_size positions, so those layers keep at most that many tokens of KV (blocks of
  // earlier chunks are freed) and read at most that many per query. 0 layers: all full attention.
  int attention_chunk_size = 0;
  int num_chunked_layers = 0;

  std::string notes;  // where the shape came from / what is approximate
  // The weights as published (bf16 or fp8) and where that was read: a preset's release, or the
  // checkpoint's quantization_config / torch_dtype. `shoal plan` uses it unless --weight-dtype says.
  std::string weight_dtype = "bf16";
  std::string weight_dtype_source = "default";
};

// Parameter counts (elements) derived from the shape.
struct ParamCounts {
  double attention_per_layer = 0;  // all projections of one attention block
  double expert = 0;               // one routed expert (3 matrices)
  double shared_per_moe_layer = 0; // all shared experts of one MoE layer
  double dense_mlp_per_layer = 0;
  double router_per_moe_layer = 0;
  double embedding = 0;            // input embedding
  double lm_head = 0;              // 0 when tied

  // Replicated on every EP rank (split only by attention TP): everything but routed experts.
  double dense_total = 0;
  double routed_total = 0;
  double total = 0;
  // Per token: the matmul parameters a token passes through (the embedding lookup is not a matmul).
  double dense_active = 0;   // attention + dense MLP + shared + router + lm_head
  double routed_active = 0;  // top_k routed experts in every MoE layer
  double active() const { return dense_active + routed_active; }
};

ParamCounts CountParams(const ModelSpec& m);

// KV-cache elements per token per layer: 2*kv_heads*head_dim (GQA) or kv_lora_rank+qk_rope_head_dim (MLA).
double KvElementsPerTokenPerLayer(const ModelSpec& m);
// Tokens of KV a sequence keeps per layer, averaged over the layers, at context length `ctx`: full
// layers keep ctx, chunked layers at most min(ctx, attention_chunk_size) (their bound, used for both
// memory and reads). Equals ctx for a model without chunked layers.
double KvContextPerLayer(const ModelSpec& m, double ctx);
// Query-key pairs of causal attention over a prompt of `len` tokens, averaged over the layers: len²/2
// in full layers, len·min(len, chunk)/2 in chunked ones.
double PrefillPairsPerLayer(const ModelSpec& m, double len);
// Attention-core FLOPs for one query token against one cached token, all layers, decode form (MLA with
// the absorbed projections: scores over kv_lora+rope, values over kv_lora).
double DecodeAttentionFlopsPerContextToken(const ModelSpec& m);
// Same for prefill (MLA un-absorbed: q·k over qk_nope+rope, p·v over v_head_dim).
double PrefillAttentionFlopsPerPair(const ModelSpec& m);

// Checks the shape is usable (positive sizes, top_k <= experts, ...); errors name `source` and field.
Status ValidateModelSpec(const ModelSpec& m, const std::string& source);

// "mixtral-8x22b, qwen3-235b-a22b, deepseek-v3, kimi-k2, llama4-maverick, llama4-scout, frontier-405b-active"
std::vector<std::string> ModelPresetNames();
StatusOr<ModelSpec> GetModelPreset(const std::string& name);

// Parses HF config.json text; `source` names the file in errors.
StatusOr<ModelSpec> ParseHfConfig(const std::string& json_text, const std::string& source);
// A preset name, a config.json path or a directory holding config.json.
StatusOr<ModelSpec> LoadModelSpec(const std::string& name_or_path);

}  // namespace shoal::plan
