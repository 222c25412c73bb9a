// Model shapes for the planner: built-in presets (numbers copied from each model's published
// config.json, cited in docs/plan.md) and a config.json reader for the families the planner knows.
#include "plan/model_preset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace shoal::plan {

using Json = nlohmann::json;

ParamCounts CountParams(const ModelSpec& m) {
  ParamCounts p;
  const double h = m.hidden_size;
  const AttentionSpec& a = m.attn;
  if (a.kind == AttentionSpec::Kind::kMla) {
    const double qk = a.qk_nope_head_dim + a.qk_rope_head_dim;
    const double q = a.q_lora_rank > 0 ? h * a.q_lora_rank + double(a.q_lora_rank) * a.num_heads * qk
                                       : h * a.num_heads * qk;
    const double kv_a = h * (a.kv_lora_rank + a.qk_rope_head_dim);
    const double kv_b = double(a.kv_lora_rank) * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim);
    const double o = double(a.num_heads) * a.v_head_dim * h;
    p.attention_per_layer = q + kv_a + kv_b + o;
  } else {
    const double q_dim = double(a.num_heads) * a.head_dim, kv_dim = double(a.num_kv_heads) * a.head_dim;
    p.attention_per_layer = h * q_dim + 2 * h * kv_dim + q_dim * h;
  }
  p.expert = 3 * h * m.moe_intermediate_size;
  p.shared_per_moe_layer = 3 * h * double(m.shared_intermediate_size) * m.num_shared_experts;
  p.dense_mlp_per_layer = 3 * h * m.dense_intermediate_size;
  p.router_per_moe_layer = m.num_experts > 0 ? h * m.num_experts : 0;
  p.embedding = double(m.vocab_size) * h;
  p.lm_head = m.tie_word_embeddings ? 0 : double(m.vocab_size) * h;

  const int dense_layers = m.num_layers - m.num_moe_layers;
  p.routed_total = double(m.num_moe_layers) * m.num_experts * p.expert;
  p.dense_total = m.num_layers * p.attention_per_layer + dense_layers * p.dense_mlp_per_layer +
                  m.num_moe_layers * (p.shared_per_moe_layer + p.router_per_moe_layer) + p.embedding + p.lm_head;
  p.total = p.dense_total + p.routed_total;
  // The output projection is a matmul over the vocabulary whether or not it is tied.
  p.dense_active = m.num_layers * p.attention_per_layer + dense_layers * p.dense_mlp_per_layer +
                   m.num_moe_layers * (p.shared_per_moe_layer + p.router_per_moe_layer) + double(m.vocab_size) * h;
  p.routed_active = double(m.num_moe_layers) * m.top_k * p.expert;
  return p;
}

double KvElementsPerTokenPerLayer(const ModelSpec& m) {
  if (m.attn.kind == AttentionSpec::Kind::kMla) return m.attn.kv_lora_rank + m.attn.qk_rope_head_dim;
  return 2.0 * m.attn.num_kv_heads * m.attn.head_dim;
}

double KvContextPerLayer(const ModelSpec& m, double ctx) {
  if (m.num_chunked_layers <= 0 || m.attention_chunk_size <= 0 || m.num_layers <= 0) return ctx;
  const double chunked = double(m.num_chunked_layers) / m.num_layers;
  return (1 - chunked) * ctx + chunked * std::min(ctx, double(m.attention_chunk_size));
}

double PrefillPairsPerLayer(const ModelSpec& m, double len) {
  return 0.5 * len * KvContextPerLayer(m, len);
}

double DecodeAttentionFlopsPerContextToken(const ModelSpec& m) {
  const AttentionSpec& a = m.attn;
  double per_layer;
  if (a.kind == AttentionSpec::Kind::kMla) {
    per_layer = 2.0 * a.num_heads * (a.kv_lora_rank + a.qk_rope_head_dim) + 2.0 * a.num_heads * a.kv_lora_rank;
  } else {
    per_layer = 4.0 * a.num_heads * a.head_dim;
  }
  return per_layer * m.num_layers;
}

double PrefillAttentionFlopsPerPair(const ModelSpec& m) {
  const AttentionSpec& a = m.attn;
  double per_layer;
  if (a.kind == AttentionSpec::Kind::kMla) {
    per_layer = 2.0 * a.num_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim) + 2.0 * a.num_heads * a.v_head_dim;
  } else {
    per_layer = 4.0 * a.num_heads * a.head_dim;
  }
  return per_layer * m.num_layers;
}

Status ValidateModelSpec(const ModelSpec& m, const std::string& source) {
  auto bad = [&](const std::string& field, const std::string& why) {
    return InvalidArgument(source + ": " + field + " " + why);
  };
  if (m.hidden_size <= 0) return bad("hidden_size", "must be positive");
  if (m.num_layers <= 0) return bad("num_hidden_layers", "must be positive");
  if (m.vocab_size <= 0) return bad("vocab_size", "must be positive");
  if (m.attn.num_heads <= 0) return bad("num_attention_heads", "must be positive");
  if (m.attn.kind == AttentionSpec::Kind::kGqa) {
    if (m.attn.num_kv_heads <= 0 || m.attn.num_kv_heads > m.attn.num_heads)
      return bad("num_key_value_heads", "must be in 1..num_attention_heads");
    if (m.attn.head_dim <= 0) return bad("head_dim", "must be positive");
  } else {
    if (m.attn.kv_lora_rank <= 0) return bad("kv_lora_rank", "must be positive for MLA");
    if (m.attn.qk_nope_head_dim <= 0 || m.attn.qk_rope_head_dim <= 0 || m.attn.v_head_dim <= 0)
      return bad("qk_nope_head_dim/qk_rope_head_dim/v_head_dim", "must be positive for MLA");
  }
  if (m.num_chunked_layers < 0 || m.num_chunked_layers > m.num_layers)
    return bad("layer_types", "counts more chunked-attention layers than there are layers");
  if (m.attention_chunk_size < 0) return bad("attention_chunk_size", "must not be negative");
  if (m.num_moe_layers < 0 || m.num_moe_layers > m.num_layers)
    return bad("MoE layer count", "must be in 0..num_hidden_layers (got " + std::to_string(m.num_moe_layers) + ")");
  if (m.num_moe_layers > 0) {
    if (m.num_experts <= 0) return bad("num_experts", "must be positive in a MoE model");
    if (m.top_k <= 0 || m.top_k > m.num_experts) return bad("num_experts_per_tok", "must be in 1..num_experts");
    if (m.moe_intermediate_size <= 0) return bad("moe_intermediate_size", "must be positive");
  }
  if (m.num_moe_layers < m.num_layers && m.dense_intermediate_size <= 0)
    return bad("intermediate_size", "must be positive (the model has dense MLP layers)");
  return Status::Ok();
}

namespace {

ModelSpec DeepSeekV3() {
  ModelSpec m;
  m.name = "deepseek-v3";
  m.hidden_size = 7168;
  m.num_layers = 61;
  m.vocab_size = 129280;
  m.attn.kind = AttentionSpec::Kind::kMla;
  m.attn.num_heads = 128;
  m.attn.q_lora_rank = 1536;
  m.attn.kv_lora_rank = 512;
  m.attn.qk_nope_head_dim = 128;
  m.attn.qk_rope_head_dim = 64;
  m.attn.v_head_dim = 128;
  m.num_moe_layers = 61 - 3;  // first_k_dense_replace = 3
  m.dense_intermediate_size = 18432;
  m.num_experts = 256;
  m.top_k = 8;
  m.moe_intermediate_size = 2048;
  m.num_shared_experts = 1;
  m.shared_intermediate_size = 2048;
  m.notes = "deepseek-ai/DeepSeek-V3 config.json (MTP layer not counted)";
  m.weight_dtype = "fp8";
  m.weight_dtype_source = "the release's FP8 checkpoint";
  return m;
}

ModelSpec Mixtral8x22B() {
  ModelSpec m;
  m.name = "mixtral-8x22b";
  m.hidden_size = 6144;
  m.num_layers = 56;
  m.vocab_size = 32768;
  m.attn = {AttentionSpec::Kind::kGqa, 48, 8, 128};
  m.num_moe_layers = 56;
  m.num_experts = 8;
  m.top_k = 2;
  m.moe_intermediate_size = 16384;
  m.notes = "mistralai/Mixtral-8x22B-v0.1 config.json";
  m.weight_dtype = "bf16";
  m.weight_dtype_source = "the release (bf16)";
  return m;
}

ModelSpec Qwen3_235B() {
  ModelSpec m;
  m.name = "qwen3-235b-a22b";
  m.hidden_size = 4096;
  m.num_layers = 94;
  m.vocab_size = 151936;
  m.attn = {AttentionSpec::Kind::kGqa, 64, 4, 128};
  m.num_moe_layers = 94;
  m.num_experts = 128;
  m.top_k = 8;
  m.moe_intermediate_size = 1536;
  m.notes = "Qwen/Qwen3-235B-A22B config.json";
  m.weight_dtype = "bf16";
  m.weight_dtype_source = "the release (bf16; an FP8 one exists: --weight-dtype fp8)";
  return m;
}

ModelSpec Llama4Maverick() {
  ModelSpec m;
  m.name = "llama4-maverick";
  m.hidden_size = 5120;
  m.num_layers = 48;
  m.vocab_size = 202048;
  m.attn = {AttentionSpec::Kind::kGqa, 40, 8, 128};
  m.num_moe_layers = 24;  // interleave_moe_layer_step = 2
  m.dense_intermediate_size = 16384;  // intermediate_size_mlp
  m.num_experts = 128;
  m.top_k = 1;
  m.moe_intermediate_size = 8192;
  m.num_shared_experts = 1;
  m.shared_intermediate_size = 8192;
  m.attention_chunk_size = 8192;
  m.num_chunked_layers = 36;  // every layer but each 4th (no_rope_layers), whose attention is full
  m.notes = "meta-llama/Llama-4-Maverick-17B-128E config.json text_config; 36 of 48 layers chunked "
            "(8192), their KV bounded by the chunk";
  m.weight_dtype = "bf16";
  m.weight_dtype_source = "the release (bf16)";
  return m;
}

ModelSpec Llama4Scout() {
  ModelSpec m = Llama4Maverick();
  m.name = "llama4-scout";
  m.num_moe_layers = 48;  // interleave_moe_layer_step = 1: every layer's MLP is the MoE block
  m.num_experts = 16;
  m.notes = "meta-llama/Llama-4-Scout-17B-16E config.json text_config; 36 of 48 layers chunked "
            "(8192), their KV bounded by the chunk";
  m.weight_dtype = "bf16";
  m.weight_dtype_source = "the release (bf16)";
  return m;
}

// Hypothetical: DeepSeek-V3's layout (MLA, 256 routed + 1 shared expert, top-8, 3 dense layers)
// scaled to Llama-3.1-405B's width and depth (hidden 16384, 126 layers), experts widened to 6144
// so that ~400B parameters are active per token (~9.6T in total).
ModelSpec Frontier405BActive() {
  ModelSpec m;
  m.name = "frontier-405b-active";
  m.hidden_size = 16384;
  m.num_layers = 126;
  m.vocab_size = 129280;
  m.attn.kind = AttentionSpec::Kind::kMla;
  m.attn.num_heads = 128;
  m.attn.q_lora_rank = 3072;
  m.attn.kv_lora_rank = 1024;
  m.attn.qk_nope_head_dim = 128;
  m.attn.qk_rope_head_dim = 64;
  m.attn.v_head_dim = 128;
  m.num_moe_layers = 126 - 3;
  m.dense_intermediate_size = 53248;
  m.num_experts = 256;
  m.top_k = 8;
  m.moe_intermediate_size = 6144;
  m.num_shared_experts = 1;
  m.shared_intermediate_size = 6144;
  m.notes = "hypothetical: DeepSeek-V3 layout scaled to hidden 16384 x 126 layers, ~405B active";
  m.weight_dtype = "fp8";
  m.weight_dtype_source = "assumed, as DeepSeek-V3";
  return m;
}

// --- config.json ---------------------------------------------------------------------------------

class Reader {
 public:
  Reader(const Json& j, const std::string& source) : j_(j), source_(source) {}
  StatusOr<int> Int(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return InvalidArgument(source_ + ": missing field '" + key + "'");
    if (!it->is_number_integer()) return InvalidArgument(source_ + ": field '" + key + "' must be an integer");
    return it->get<int>();
  }
  int IntOr(const char* key, int def) const {
    auto it = j_.find(key);
    return (it == j_.end() || !it->is_number_integer()) ? def : it->get<int>();
  }
  bool BoolOr(const char* key, bool def) const {
    auto it = j_.find(key);
    return (it == j_.end() || !it->is_boolean()) ? def : it->get<bool>();
  }

 private:
  const Json& j_;
  const std::string& source_;
};

StatusOr<ModelSpec> ParseConfigObject(const Json& j, const std::string& arch, const std::string& source) {
  Reader r(j, source);
  ModelSpec m;
  m.name = source;
  m.notes = arch + " from " + source;
  SHOAL_ASSIGN_OR_RETURN(m.hidden_size, r.Int("hidden_size"));
  SHOAL_ASSIGN_OR_RETURN(m.num_layers, r.Int("num_hidden_layers"));
  SHOAL_ASSIGN_OR_RETURN(m.vocab_size, r.Int("vocab_size"));
  SHOAL_ASSIGN_OR_RETURN(m.attn.num_heads, r.Int("num_attention_heads"));
  m.tie_word_embeddings = r.BoolOr("tie_word_embeddings", false);
  m.dense_intermediate_size = r.IntOr("intermediate_size", 0);

  const bool deepseek = arch.rfind("Deepseek", 0) == 0;
  if (deepseek) {
    m.attn.kind = AttentionSpec::Kind::kMla;
    m.attn.q_lora_rank = r.IntOr("q_lora_rank", 0);  // null in V2-Lite
    SHOAL_ASSIGN_OR_RETURN(m.attn.kv_lora_rank, r.Int("kv_lora_rank"));
    SHOAL_ASSIGN_OR_RETURN(m.attn.qk_nope_head_dim, r.Int("qk_nope_head_dim"));
    SHOAL_ASSIGN_OR_RETURN(m.attn.qk_rope_head_dim, r.Int("qk_rope_head_dim"));
    SHOAL_ASSIGN_OR_RETURN(m.attn.v_head_dim, r.Int("v_head_dim"));
    m.num_experts = r.IntOr("n_routed_experts", 0);
    m.top_k = r.IntOr("num_experts_per_tok", 0);
    m.moe_intermediate_size = r.IntOr("moe_intermediate_size", 0);
    m.num_shared_experts = r.IntOr("n_shared_experts", 0);
    m.shared_intermediate_size = m.moe_intermediate_size;
    const int first_dense = r.IntOr("first_k_dense_replace", 0);
    const int freq = std::max(1, r.IntOr("moe_layer_freq", 1));
    m.num_moe_layers = 0;
    if (m.num_experts > 0)
      for (int l = first_dense; l < m.num_layers; ++l) m.num_moe_layers += (l % freq == 0);
    return m;
  }

  m.attn.kind = AttentionSpec::Kind::kGqa;
  m.attn.num_kv_heads = r.IntOr("num_key_value_heads", m.attn.num_heads);
  m.attn.head_dim = r.IntOr("head_dim", m.attn.num_heads > 0 ? m.hidden_size / m.attn.num_heads : 0);
  if (arch == "MixtralForCausalLM") {
    SHOAL_ASSIGN_OR_RETURN(m.num_experts, r.Int("num_local_experts"));
    SHOAL_ASSIGN_OR_RETURN(m.top_k, r.Int("num_experts_per_tok"));
    m.moe_intermediate_size = m.dense_intermediate_size;
    m.num_moe_layers = m.num_layers;
  } else if (arch == "Qwen2MoeForCausalLM" || arch == "Qwen3MoeForCausalLM") {
    // transformers 4 writes "num_experts"; 5 writes "num_local_experts".
    SHOAL_ASSIGN_OR_RETURN(m.num_experts, r.Int(j.contains("num_experts") ? "num_experts" : "num_local_experts"));
    if (j.contains("num_experts") && j.contains("num_local_experts") && r.IntOr("num_local_experts", -1) != m.num_experts) {
      return InvalidArgument(source + ": fields 'num_experts' and 'num_local_experts' disagree");
    }
    SHOAL_ASSIGN_OR_RETURN(m.top_k, r.Int("num_experts_per_tok"));
    SHOAL_ASSIGN_OR_RETURN(m.moe_intermediate_size, r.Int("moe_intermediate_size"));
    const int shared = r.IntOr("shared_expert_intermediate_size", 0);
    if (shared > 0) {
      m.num_shared_experts = 1;
      m.shared_intermediate_size = shared;
    }
    const int step = std::max(1, r.IntOr("decoder_sparse_step", 1));
    std::vector<int> dense_only;
    if (auto it = j.find("mlp_only_layers"); it != j.end() && it->is_array())
      for (const auto& v : *it)
        if (v.is_number_integer()) dense_only.push_back(v.get<int>());
    for (int l = 0; l < m.num_layers; ++l) {
      const bool only = std::find(dense_only.begin(), dense_only.end(), l) != dense_only.end();
      m.num_moe_layers += (!only && (l + 1) % step == 0);
    }
  } else if (arch == "Llama4ForCausalLM" || arch == "Llama4ForConditionalGeneration") {
    SHOAL_ASSIGN_OR_RETURN(m.num_experts, r.Int("num_local_experts"));
    SHOAL_ASSIGN_OR_RETURN(m.top_k, r.Int("num_experts_per_tok"));
    m.moe_intermediate_size = m.dense_intermediate_size;
    m.dense_intermediate_size = r.IntOr("intermediate_size_mlp", 0);
    m.num_shared_experts = 1;
    m.shared_intermediate_size = m.moe_intermediate_size;
    const int step = std::max(1, r.IntOr("interleave_moe_layer_step", 1));
    for (int l = 0; l < m.num_layers; ++l) m.num_moe_layers += ((l + 1) % step == 0);
    // RoPE layers use chunked attention (transformers: layer_types, else no_rope_layers, else every
    // layer but each no_rope_layer_interval-th); an attention_chunk_size of null makes them full.
    m.attention_chunk_size = r.IntOr("attention_chunk_size", 0);
    if (m.attention_chunk_size > 0) {
      if (auto it = j.find("layer_types"); it != j.end() && it->is_array()) {
        for (const auto& t : *it) m.num_chunked_layers += t.is_string() && t.get<std::string>() == "chunked_attention";
      } else if (auto nr = j.find("no_rope_layers"); nr != j.end() && nr->is_array() && !nr->empty()) {
        for (const auto& v : *nr) m.num_chunked_layers += v.is_number_integer() && v.get<int>() != 0;
      } else {
        const int interval = std::max(1, r.IntOr("no_rope_layer_interval", 4));
        for (int l = 0; l < m.num_layers; ++l) m.num_chunked_layers += ((l + 1) % interval != 0);
      }
    }
  } else {
    // A dense decoder (Llama, Qwen2, Mistral, ...): no experts.
    m.num_moe_layers = 0;
  }
  return m;
}

// Kimi K2: DeepSeek-V3's architecture (DeepseekV3ForCausalLM) with 384 experts, 64 heads, one dense layer.
ModelSpec KimiK2() {
  ModelSpec m = DeepSeekV3();
  m.name = "kimi-k2";
  m.vocab_size = 163840;
  m.attn.num_heads = 64;
  m.num_moe_layers = 61 - 1;  // first_k_dense_replace = 1
  m.num_experts = 384;
  m.notes = "moonshotai/Kimi-K2-Instruct config.json (DeepSeek-V3 layout; 384 experts, 64 heads)";
  m.weight_dtype = "fp8";
  m.weight_dtype_source = "the release's FP8 checkpoint";
  return m;
}

}  // namespace

std::vector<std::string> ModelPresetNames() {
  return {"mixtral-8x22b", "qwen3-235b-a22b", "deepseek-v3", "kimi-k2", "llama4-maverick", "llama4-scout",
          "frontier-405b-active"};
}

StatusOr<ModelSpec> GetModelPreset(const std::string& name) {
  if (name == "deepseek-v3" || name == "deepseek-r1") return DeepSeekV3();
  if (name == "kimi-k2") return KimiK2();
  if (name == "mixtral-8x22b") return Mixtral8x22B();
  if (name == "qwen3-235b-a22b") return Qwen3_235B();
  if (name == "llama4-maverick") return Llama4Maverick();
  if (name == "llama4-scout") return Llama4Scout();
  if (name == "frontier-405b-active") return Frontier405BActive();
  std::string list;
  for (const auto& n : ModelPresetNames()) list += (list.empty() ? "" : ", ") + n;
  return NotFound("unknown model preset '" + name + "' (presets: " + list +
                  "; or pass a config.json path or a model directory)");
}

StatusOr<ModelSpec> ParseHfConfig(const std::string& json_text, const std::string& source) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(source + ": not a JSON object");
  std::string arch;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  if (arch.empty()) return InvalidArgument(source + ": missing 'architectures' (needed to read the shape)");
  const Json* body = &j;
  if (auto it = j.find("text_config"); it != j.end() && it->is_object()) body = &*it;  // Llama 4
  SHOAL_ASSIGN_OR_RETURN(ModelSpec m, ParseConfigObject(*body, arch, source));
  SHOAL_RETURN_IF_ERROR(ValidateModelSpec(m, source));
  // The checkpoint's own weights: FP8 when quantization_config says so; anything else is served in
  // bf16 by the GPU engine (f32 and f16 checkpoints are converted as they are uploaded).
  m.weight_dtype = "bf16";
  m.weight_dtype_source = "config.json: no quantization_config";
  if (auto q = j.find("quantization_config"); q != j.end() && q->is_object()) {
    const auto qm = q->find("quant_method");
    const std::string method = qm != q->end() && qm->is_string() ? qm->get<std::string>() : "unnamed";
    if (method == "fp8") {
      m.weight_dtype = "fp8";
      m.weight_dtype_source = "config.json quantization_config: fp8";
    } else {
      m.weight_dtype_source = "config.json quantization_config: " + method + " (planned as bf16)";
    }
  } else {
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (auto t = body->find(key); t != body->end() && t->is_string()) {
        m.weight_dtype_source = std::string("config.json ") + key + " " + t->get<std::string>() +
                                (t->get<std::string>() == "bfloat16" ? "" : " (the GPU engine serves bf16)");
        break;
      }
    }
  }
  return m;
}

StatusOr<ModelSpec> LoadModelSpec(const std::string& name_or_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(name_or_path, ec)) return GetModelPreset(name_or_path);
  fs::path path = name_or_path;
  if (fs::is_directory(path, ec)) path /= "config.json";
  std::ifstream in(path);
  if (!in) return IoError(path.string() + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseHfConfig(ss.str(), path.string());
}

}  // namespace shoal::plan
