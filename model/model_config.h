// HF config.json → ModelConfig: the shape of a supported MoE model and every option that changes its
// arithmetic, with the defaults transformers applies when a key is absent.
//
// Supported: MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, Llama4ForCausalLM, the
// text part of Llama4ForConditionalGeneration, and DeepseekV3ForCausalLM (Kimi K2 too). Anything else is an error that lists these. A key that would change the maths in a way shoal does not implement (an unknown
// rope type, a non-SiLU activation, Qwen2-MoE's per-layer sliding window) is an error too: a model
// that loads is a model shoal computes exactly.
#pragma once

#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace shoal {

enum class Architecture { kMixtral, kQwen2Moe, kQwen3Moe, kLlama4, kDeepseekV3 };

const char* ArchitectureName(Architecture a);  // the HF class name
// "MixtralForCausalLM, Qwen2MoeForCausalLM, ..."
std::string SupportedArchitectures();

// RoPE frequencies, following transformers' modeling_rope_utils (rope_scaling / rope_type).
struct RopeConfig {
  enum class Type { kDefault, kLinear, kYarn, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  double attention_factor = 1.0;  // multiplies cos and sin (yarn's mscale); 1 otherwise
  bool truncate = true;
  // yarn and llama3
  int original_max_position_embeddings = 0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  // yarn's mscale_all_dim (DeepSeek), 0 when absent: MLA folds mscale² of it into the softmax scale
  double mscale_all_dim = 0;
};

struct ModelConfig {
  Architecture arch = Architecture::kQwen3Moe;
  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;

  bool qkv_bias = false;  // q/k/v projections have a bias (Qwen2-MoE: qkv_bias; Qwen3-MoE: attention_bias)
  bool o_bias = false;    // o_proj has a bias (Qwen3-MoE attention_bias)
  bool qk_norm = false;   // RMSNorm over head_dim on q and k before RoPE (Qwen3-MoE)
  int sliding_window = 0; // 0: full causal attention; else a key is visible when q_pos - k_pos < window

  RopeConfig rope;
  // Llama 4 (iRoPE). RoPE rotates interleaved pairs (x[2i], x[2i+1]) instead of halves; layers without
  // RoPE ("NoPE") attend to the whole causal context and, with temperature tuning, scale q by
  // log1p(floor((pos + 1) / floor_scale)) · attn_scale + 1; chunked layers see only keys of their own
  // chunk of attention_chunk_size positions; q and k of RoPE layers get a weightless RMS norm after
  // RoPE when qk_l2_norm.
  bool rope_interleaved = false;
  std::vector<bool> layer_rope;      // size num_layers; false: a NoPE layer
  int attention_chunk_size = 0;      // 0: no chunked layers
  std::vector<bool> layer_chunked;   // size num_layers
  bool qk_l2_norm = false;
  bool attn_temperature_tuning = false;
  double floor_scale = 8192.0, attn_scale = 0.1;

  // DeepSeek-V3 multi-head latent attention (MLA). q = q_b(norm(q_a(h))) (or q_proj(h) without
  // q_lora_rank), per head [qk_nope | qk_rope]; the KV cache holds per token only the normalised latent
  // norm(kv_a(h))[:kv_lora_rank] and the rotated shared rope key (qk_rope_head_dim), and attention runs
  // in latent space (W_UK absorbed into q, W_UV applied to the output); head_dim is qk_rope_head_dim
  // (what RoPE rotates), as in transformers.
  bool mla = false;
  int q_lora_rank = 0;  // 0: q_proj
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  double attention_scale = 0;  // the softmax scale: qk_head_dim^-0.5, times yarn's mscale² for MLA

  // MoE
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;     // per routed expert
  int intermediate_size = 0;         // dense MLP layers (Qwen mlp_only_layers / decoder_sparse_step)
  int shared_expert_intermediate_size = 0;  // always-on shared expert; 0 = none
  bool shared_expert_gated = false;  // Qwen2-MoE: its output scaled by sigmoid(shared_expert_gate · h)
  bool norm_topk_prob = false;       // renormalise the top-k softmax weights to sum to 1
  // Llama 4: the top-k of the router logits, each scored sigmoid(logit); an expert's input is the row
  // times its score and its output is added with weight 1 (instead of softmax weights on the outputs).
  bool router_sigmoid_scales_input = false;
  // DeepSeek-V3: sigmoid scores; the choice adds e_score_correction_bias, keeps the topk_group best of
  // n_group groups (a group's score: its two best) and takes the top-k there; the weights are the
  // unbiased scores, renormalised when norm_topk_prob, times routed_scaling_factor.
  bool router_grouped_sigmoid = false;
  int n_group = 1, topk_group = 1;
  double routed_scaling_factor = 1.0;
  std::vector<bool> layer_is_moe;    // size num_layers

  DType torch_dtype = DType::kF32;   // informational: the dtype config.json declares
  // quantization_config {quant_method: fp8, weight_block_size: [rows, cols]}: the projection and expert
  // weights are F8_E4M3 with a `<name>_scale_inv` f32 tensor per block (DeepSeek-V3's official format);
  // embeddings, norms, routers and lm_head stay unquantised. Weight-only: activations stay f32.
  bool fp8_weights = false;
  int fp8_block_rows = 0, fp8_block_cols = 0;
  // Prefix of the text model's tensors: "" or "language_model." (Llama4ForConditionalGeneration,
  // whose vision tensors are never read).
  std::string tensor_prefix;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  // Floats one token takes in one layer's KV cache, for K (and V when kv_cache_has_v()).
  int kv_cache_width() const { return mla ? kv_lora_rank + qk_rope_head_dim : kv_dim(); }
  bool kv_cache_has_v() const { return !mla; }
  bool LayerUsesRope(int l) const { return layer_rope.empty() || layer_rope[l]; }
  // The chunk size of layer l's attention, 0 when it is not chunked.
  int LayerChunk(int l) const { return !layer_chunked.empty() && layer_chunked[l] ? attention_chunk_size : 0; }
};

// Parses config.json text; `source` names the file in errors.
StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& source);
// Reads `<dir>/config.json`.
StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// engine.max_model_len (0: no change): serve sequences of at most `max_model_len` tokens by lowering
// max_position_embeddings, which the scheduler, the admission checks and the caches bound sequences
// by (RoPE scaling reads original_max_position_embeddings, resolved at parse, so the math is
// unchanged). Longer than the model's own context is an error naming both.
Status LimitContext(int64_t max_model_len, const std::string& model_dir, ModelConfig* config);

}  // namespace shoal
