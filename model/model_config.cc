#include "model/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace shoal {

namespace {

using json = nlohmann::json;

constexpr const char* kLlama4Multimodal = "Llama4ForConditionalGeneration";

const Architecture kAll[] = {Architecture::kMixtral, Architecture::kQwen2Moe, Architecture::kQwen3Moe,
                             Architecture::kLlama4, Architecture::kDeepseekV3};

// Typed field access that names the file and key on every error.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  Status Int(const char* key, int* out, std::optional<int> def, int lo = 1, int hi = 1 << 30) const {
    const json* v = Find(key);
    if (!v) {
      if (!def) return Missing(key);
      *out = *def;
      return Status::Ok();
    }
    if (!v->is_number_integer()) return Type(key, "an integer", *v);
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) {
      return OutOfRange(source_ + ": field '" + key + "': " + std::to_string(x) + " is outside [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    *out = static_cast<int>(x);
    return Status::Ok();
  }

  Status Double(const char* key, double* out, std::optional<double> def, double lo, double hi) const {
    const json* v = Find(key);
    if (!v) {
      if (!def) return Missing(key);
      *out = *def;
      return Status::Ok();
    }
    if (!v->is_number()) return Type(key, "a number", *v);
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) {
      return OutOfRange(source_ + ": field '" + key + "': " + v->dump() + " is outside [" + Num(lo) + ", " +
                        Num(hi) + "]");
    }
    *out = x;
    return Status::Ok();
  }

  Status Bool(const char* key, bool* out, bool def) const {
    const json* v = Find(key);
    if (!v) {
      *out = def;
      return Status::Ok();
    }
    if (!v->is_boolean()) return Type(key, "true or false", *v);
    *out = v->get<bool>();
    return Status::Ok();
  }

  Status String(const char* key, std::string* out, const std::string& def) const {
    const json* v = Find(key);
    if (!v) {
      *out = def;
      return Status::Ok();
    }
    if (!v->is_string()) return Type(key, "a string", *v);
    *out = v->get<std::string>();
    return Status::Ok();
  }

  // Absent, null or an integer (e.g. sliding_window, head_dim in Mixtral).
  Status OptionalInt(const char* key, int* out, int def_if_null, int lo, int hi) const {
    const json* v = Find(key);
    if (!v || v->is_null()) {
      *out = def_if_null;
      return Status::Ok();
    }
    return Int(key, out, std::nullopt, lo, hi);
  }

  const json* Find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  Status Missing(const char* key) const { return InvalidArgument(source_ + ": missing required field '" + key + "'"); }
  Status Type(const std::string& key, const char* want, const json& v) const {
    return InvalidArgument(source_ + ": field '" + key + "': expected " + want + ", got " + v.dump());
  }
  const std::string& source() const { return source_; }

 private:
  static std::string Num(double x) {
    std::ostringstream os;
    os << x;
    return os.str();
  }
  const json& j_;
  std::string source_;
};

Status ParseRope(const json& root, const Fields& f, ModelConfig* c) {
  SHOAL_RETURN_IF_ERROR(f.Double("rope_theta", &c->rope.theta,
                                 c->arch == Architecture::kMixtral ? 1e6
                                 : c->arch == Architecture::kLlama4 ? 500000.0
                                                                    : 10000.0,
                                 1e-6, 1e30));
  // transformers ≤ 4.x writes "rope_scaling"; 5.x writes "rope_parameters" (which also carries theta).
  const json* rs = f.Find("rope_scaling");
  std::string section = "rope_scaling";
  if (!rs || rs->is_null()) {
    rs = f.Find("rope_parameters");
    section = "rope_parameters";
  }
  if (!rs || rs->is_null()) return Status::Ok();
  if (!rs->is_object()) return f.Type(section, "an object or null", *rs);
  Fields r(*rs, f.source() + ": " + section);
  if (section == "rope_parameters") SHOAL_RETURN_IF_ERROR(r.Double("rope_theta", &c->rope.theta, c->rope.theta, 1e-6, 1e30));
  std::string type;
  SHOAL_RETURN_IF_ERROR(r.String("rope_type", &type, ""));
  if (type.empty()) SHOAL_RETURN_IF_ERROR(r.String("type", &type, "default"));
  RopeConfig& rope = c->rope;
  if (type == "default") {
    rope.type = RopeConfig::Type::kDefault;
    return Status::Ok();
  }
  SHOAL_RETURN_IF_ERROR(r.Double("factor", &rope.factor, std::nullopt, 1e-6, 1e9));
  if (type == "linear") {
    rope.type = RopeConfig::Type::kLinear;
  } else if (type == "yarn") {
    rope.type = RopeConfig::Type::kYarn;
    int orig = 0;
    SHOAL_RETURN_IF_ERROR(r.OptionalInt("original_max_position_embeddings", &orig, c->max_position_embeddings, 1,
                                        1 << 30));
    rope.original_max_position_embeddings = orig;
    const json* bf = r.Find("beta_fast");
    const json* bs = r.Find("beta_slow");
    rope.beta_fast = (bf && bf->is_number() && bf->get<double>() != 0) ? bf->get<double>() : 32.0;
    rope.beta_slow = (bs && bs->is_number() && bs->get<double>() != 0) ? bs->get<double>() : 1.0;
    if (const json* msa = r.Find("mscale_all_dim"); msa && msa->is_number()) rope.mscale_all_dim = msa->get<double>();
    SHOAL_RETURN_IF_ERROR(r.Bool("truncate", &rope.truncate, true));
    auto mscale_of = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    const json* af = r.Find("attention_factor");
    const json* ms = r.Find("mscale");
    const json* msa = r.Find("mscale_all_dim");
    if (af && !af->is_null()) {
      SHOAL_RETURN_IF_ERROR(r.Double("attention_factor", &rope.attention_factor, std::nullopt, 0, 1e9));
    } else if (ms && msa && ms->is_number() && msa->is_number() && ms->get<double>() != 0 &&
               msa->get<double>() != 0) {
      rope.attention_factor = mscale_of(rope.factor, ms->get<double>()) / mscale_of(rope.factor, msa->get<double>());
    } else {
      rope.attention_factor = mscale_of(rope.factor, 1.0);
    }
  } else if (type == "llama3") {
    rope.type = RopeConfig::Type::kLlama3;
    SHOAL_RETURN_IF_ERROR(r.Double("low_freq_factor", &rope.low_freq_factor, std::nullopt, 0, 1e9));
    SHOAL_RETURN_IF_ERROR(r.Double("high_freq_factor", &rope.high_freq_factor, std::nullopt, 0, 1e9));
    SHOAL_RETURN_IF_ERROR(
        r.Int("original_max_position_embeddings", &rope.original_max_position_embeddings, std::nullopt));
    if (rope.high_freq_factor <= rope.low_freq_factor) {
      return InvalidArgument(r.source() + ": high_freq_factor must exceed low_freq_factor");
    }
  } else {
    return Unimplemented(r.source() + ": rope type '" + type +
                         "' is not supported (supported: default, linear, yarn, llama3)");
  }
  return Status::Ok();
}


// A list of layer indices or of per-layer 0/1 flags, as Llama 4's config writes them.
Status IntList(const Fields& f, const char* key, std::vector<int>* out, bool* present) {
  const json* v = f.Find(key);
  *present = v && !v->is_null() && !(v->is_array() && v->empty());
  out->clear();
  if (!*present) return Status::Ok();
  if (!v->is_array()) return f.Type(key, "a list of integers", *v);
  for (const json& x : *v) {
    if (!x.is_number_integer()) return f.Type(key, "a list of integers", *v);
    out->push_back(x.get<int>());
  }
  return Status::Ok();
}

// Llama4TextConfig: the MoE schedule, iRoPE (NoPE layers, chunked attention, temperature tuning) and
// the router, with transformers' defaults and derivations (its __post_init__).
Status ParseLlama4(const Fields& f, ModelConfig* c) {
  const int L = c->num_layers;
  const std::string& src = f.source();
  SHOAL_RETURN_IF_ERROR(f.Int("num_local_experts", &c->num_experts, 16));
  SHOAL_RETURN_IF_ERROR(f.Int("num_experts_per_tok", &c->num_experts_per_tok, 1));
  // Routed and shared experts are intermediate_size wide; the dense layers intermediate_size_mlp.
  SHOAL_RETURN_IF_ERROR(f.Int("intermediate_size", &c->moe_intermediate_size, 8192));
  SHOAL_RETURN_IF_ERROR(f.Int("intermediate_size_mlp", &c->intermediate_size, 16384));
  c->shared_expert_intermediate_size = c->moe_intermediate_size;
  c->router_sigmoid_scales_input = true;
  c->rope_interleaved = true;
  bool bias = false;
  SHOAL_RETURN_IF_ERROR(f.Bool("attention_bias", &bias, false));
  c->qkv_bias = c->o_bias = bias;

  std::vector<int> moe_layers;
  bool listed = false;
  SHOAL_RETURN_IF_ERROR(IntList(f, "moe_layers", &moe_layers, &listed));
  c->layer_is_moe.assign(L, false);
  if (listed || (f.Find("moe_layers") && f.Find("moe_layers")->is_array())) {
    for (int l : moe_layers) {
      if (l < 0 || l >= L) {
        return InvalidArgument(src + ": field 'moe_layers': layer " + std::to_string(l) + " outside [0, " +
                               std::to_string(L) + ")");
      }
      c->layer_is_moe[l] = true;
    }
  } else {
    int step = 1;
    SHOAL_RETURN_IF_ERROR(f.Int("interleave_moe_layer_step", &step, 1));
    for (int l = step - 1; l < L; l += step) c->layer_is_moe[l] = true;
  }

  // no_rope_layers[l] is 1 where layer l uses RoPE (the name says the opposite); empty → every
  // no_rope_layer_interval-th layer is NoPE.
  std::vector<int> rope_flags;
  SHOAL_RETURN_IF_ERROR(IntList(f, "no_rope_layers", &rope_flags, &listed));
  c->layer_rope.assign(L, true);
  if (listed) {
    if (static_cast<int>(rope_flags.size()) < L) {
      return InvalidArgument(src + ": field 'no_rope_layers': " + std::to_string(rope_flags.size()) +
                             " entries for " + std::to_string(L) + " layers");
    }
    for (int l = 0; l < L; ++l) c->layer_rope[l] = rope_flags[l] != 0;
  } else {
    int interval = 4;
    SHOAL_RETURN_IF_ERROR(f.Int("no_rope_layer_interval", &interval, 4));
    for (int l = 0; l < L; ++l) c->layer_rope[l] = (l + 1) % interval != 0;
  }

  SHOAL_RETURN_IF_ERROR(f.OptionalInt("attention_chunk_size", &c->attention_chunk_size,
                                      f.Find("attention_chunk_size") ? 0 : 8192, 1, 1 << 30));
  c->layer_chunked.assign(L, false);
  const json* types = f.Find("layer_types");
  if (types && !types->is_null()) {
    if (!types->is_array() || static_cast<int>(types->size()) != L) {
      return InvalidArgument(src + ": field 'layer_types': expected a list of " + std::to_string(L) + " strings");
    }
    for (int l = 0; l < L; ++l) {
      const json& t = (*types)[l];
      const std::string kind = t.is_string() ? t.get<std::string>() : t.dump();
      if (kind == "chunked_attention") {
        if (c->attention_chunk_size == 0) {
          return InvalidArgument(src + ": field 'layer_types': layer " + std::to_string(l) +
                                 " is chunked_attention but attention_chunk_size is null");
        }
        c->layer_chunked[l] = true;
      } else if (kind != "full_attention") {
        return Unimplemented(src + ": field 'layer_types': layer " + std::to_string(l) + " is '" + kind +
                             "' (supported: full_attention, chunked_attention)");
      }
    }
  } else {
    for (int l = 0; l < L; ++l) c->layer_chunked[l] = c->layer_rope[l] && c->attention_chunk_size > 0;
  }
  bool any_chunked = false;
  for (int l = 0; l < L; ++l) any_chunked |= c->layer_chunked[l];
  if (!any_chunked) c->attention_chunk_size = 0;

  bool qk_norm = true;
  SHOAL_RETURN_IF_ERROR(f.Bool("use_qk_norm", &qk_norm, true));
  c->qk_l2_norm = qk_norm;
  // Meta's own configs write attn_temperature_tuning as a number (4); transformers reads it as a flag.
  if (const json* t = f.Find("attn_temperature_tuning"); t && t->is_number()) {
    c->attn_temperature_tuning = t->get<double>() != 0;
  } else {
    SHOAL_RETURN_IF_ERROR(f.Bool("attn_temperature_tuning", &c->attn_temperature_tuning, true));
  }
  SHOAL_RETURN_IF_ERROR(f.Double("floor_scale", &c->floor_scale, 8192.0, 1e-9, 1e12));
  SHOAL_RETURN_IF_ERROR(f.Double("attn_scale", &c->attn_scale, 0.1, -1e6, 1e6));
  return Status::Ok();
}

// DeepseekV3Config (Kimi K2 uses the same class): MLA shapes, grouped sigmoid routing with the
// correction bias, dense first layers, shared experts. The multi-token-prediction layers
// (num_nextn_predict_layers / num_mtp_layers) sit after num_hidden_layers and are never read.
Status ParseDeepseekV3(const Fields& f, ModelConfig* c) {
  const std::string& src = f.source();
  // transformers writes n_routed_experts; accept the generic name too.
  SHOAL_RETURN_IF_ERROR(f.Int(f.Find("n_routed_experts") || !f.Find("num_local_experts") ? "n_routed_experts"
                                                                                          : "num_local_experts",
                              &c->num_experts, 256));
  SHOAL_RETURN_IF_ERROR(f.Int("num_experts_per_tok", &c->num_experts_per_tok, 8));
  SHOAL_RETURN_IF_ERROR(f.Int("moe_intermediate_size", &c->moe_intermediate_size, 2048));
  SHOAL_RETURN_IF_ERROR(f.Int("intermediate_size", &c->intermediate_size, 18432));
  int shared = 1;
  SHOAL_RETURN_IF_ERROR(f.Int("n_shared_experts", &shared, 1, 0, 1 << 20));
  c->shared_expert_intermediate_size = shared * c->moe_intermediate_size;
  SHOAL_RETURN_IF_ERROR(f.Double("routed_scaling_factor", &c->routed_scaling_factor, 2.5, 0, 1e6));
  SHOAL_RETURN_IF_ERROR(f.Bool("norm_topk_prob", &c->norm_topk_prob, true));
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("n_group", &c->n_group, 1, 1, 1 << 20));
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("topk_group", &c->topk_group, c->n_group, 1, 1 << 20));
  int first_dense = 3;
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("first_k_dense_replace", &first_dense, 0, 0, 1 << 20));
  if (!f.Find("first_k_dense_replace")) first_dense = 3;
  std::string scoring, method;
  SHOAL_RETURN_IF_ERROR(f.String("scoring_func", &scoring, "sigmoid"));
  SHOAL_RETURN_IF_ERROR(f.String("topk_method", &method, "noaux_tc"));
  if (scoring != "sigmoid" || method != "noaux_tc") {
    return Unimplemented(src + ": scoring_func '" + scoring + "' with topk_method '" + method +
                         "' is not supported (DeepSeek-V3's sigmoid with noaux_tc only)");
  }
  c->router_grouped_sigmoid = true;
  if (c->num_experts % c->n_group != 0 || c->topk_group > c->n_group || c->num_experts / c->n_group < 2 ||
      c->num_experts_per_tok > c->topk_group * (c->num_experts / c->n_group)) {
    return InvalidArgument(src + ": n_routed_experts (" + std::to_string(c->num_experts) + "), n_group (" +
                           std::to_string(c->n_group) + "), topk_group (" + std::to_string(c->topk_group) +
                           ") and num_experts_per_tok (" + std::to_string(c->num_experts_per_tok) +
                           ") do not make groups of at least two experts with enough to choose from");
  }
  c->layer_is_moe.assign(c->num_layers, false);
  for (int l = first_dense; l < c->num_layers; ++l) c->layer_is_moe[l] = true;

  c->mla = true;
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("q_lora_rank", &c->q_lora_rank, f.Find("q_lora_rank") ? 0 : 1536, 1, 1 << 20));
  SHOAL_RETURN_IF_ERROR(f.Int("kv_lora_rank", &c->kv_lora_rank, 512));
  SHOAL_RETURN_IF_ERROR(f.Int("qk_nope_head_dim", &c->qk_nope_head_dim, 128));
  SHOAL_RETURN_IF_ERROR(f.Int("qk_rope_head_dim", &c->qk_rope_head_dim, 64));
  SHOAL_RETURN_IF_ERROR(f.Int("v_head_dim", &c->v_head_dim, 128));
  if (c->qk_rope_head_dim % 2 != 0) return InvalidArgument(src + ": field 'qk_rope_head_dim': must be even for RoPE");
  c->head_dim = c->qk_rope_head_dim;  // what RoPE rotates (transformers sets head_dim so)
  c->num_kv_heads = c->num_heads;
  SHOAL_RETURN_IF_ERROR(f.Bool("rope_interleave", &c->rope_interleaved, true));
  bool bias = false;
  SHOAL_RETURN_IF_ERROR(f.Bool("attention_bias", &bias, false));
  c->qkv_bias = c->o_bias = bias;  // on q_a_proj, kv_a_proj_with_mqa and o_proj
  // The softmax scale: 1/sqrt(qk_head_dim), times mscale(factor, mscale_all_dim)² under a scaled RoPE.
  double scale = 1.0 / std::sqrt(static_cast<double>(c->qk_nope_head_dim + c->qk_rope_head_dim));
  if (c->rope.type != RopeConfig::Type::kDefault && c->rope.mscale_all_dim != 0 && c->rope.factor > 1) {
    const double m = 0.1 * c->rope.mscale_all_dim * std::log(c->rope.factor) + 1.0;
    scale *= m * m;
  }
  c->attention_scale = scale;
  return Status::Ok();
}

// quantization_config: DeepSeek's block-scaled FP8 (quant_method fp8, fmt e4m3, weight_block_size
// [rows, cols], optional scale_fmt ue8m0 — power-of-two scales, read like any other f32 scale) is
// supported; anything else is refused naming it.
Status ParseQuantization(const json& q, const std::string& source, ModelConfig* c) {
  const std::string where = source + ": field 'quantization_config'";
  if (!q.is_object()) return InvalidArgument(where + ": expected an object, got " + q.dump());
  const json* method = q.contains("quant_method") ? &q["quant_method"] : nullptr;
  const std::string name = method && method->is_string() ? method->get<std::string>() : "";
  if (name != "fp8") {
    return Unimplemented(where + ": quantized checkpoints (" + (name.empty() ? q.dump() : name) +
                         ") are not supported (only DeepSeek's block-scaled fp8); use the bf16 checkpoint");
  }
  if (q.contains("fmt") && q["fmt"] != "e4m3") {
    return Unimplemented(where + ": fp8 format " + q["fmt"].dump() + " is not supported (e4m3 only)");
  }
  if (q.contains("scale_fmt") && !q["scale_fmt"].is_null() && q["scale_fmt"] != "ue8m0") {
    return Unimplemented(where + ": scale_fmt " + q["scale_fmt"].dump() + " is not supported (f32 or ue8m0 scales)");
  }
  const json* block = q.contains("weight_block_size") ? &q["weight_block_size"] : nullptr;
  if (!block || !block->is_array() || block->size() != 2 || !(*block)[0].is_number_integer() ||
      !(*block)[1].is_number_integer() || (*block)[0].get<int64_t>() < 1 || (*block)[1].get<int64_t>() < 1 ||
      (*block)[0].get<int64_t>() > (1 << 20) || (*block)[1].get<int64_t>() > (1 << 20)) {
    return Unimplemented(where + ": fp8 needs weight_block_size [rows, cols] (per-tensor or per-channel scales "
                                 "are not supported), got " + (block ? block->dump() : std::string("nothing")));
  }
  c->fp8_weights = true;
  c->fp8_block_rows = (*block)[0].get<int>();
  c->fp8_block_cols = (*block)[1].get<int>();
  return Status::Ok();
}
}  // namespace

const char* ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kMixtral: return "MixtralForCausalLM";
    case Architecture::kQwen2Moe: return "Qwen2MoeForCausalLM";
    case Architecture::kQwen3Moe: return "Qwen3MoeForCausalLM";
    case Architecture::kLlama4: return "Llama4ForCausalLM";
    case Architecture::kDeepseekV3: return "DeepseekV3ForCausalLM";
  }
  return "?";
}

std::string SupportedArchitectures() {
  std::string s;
  for (Architecture a : kAll) s += (s.empty() ? "" : ", ") + std::string(ArchitectureName(a));
  return s + ", " + kLlama4Multimodal + " (text only)";
}

// transformers 5 writes "layer_types" (one "full_attention" or "sliding_attention" per layer). shoal
// applies one attention kind to every layer, so the list must say the same as the other keys did.
Status CheckLayerTypes(const Fields& f, const ModelConfig& c) {
  const json* types = f.Find("layer_types");
  if (!types || types->is_null()) return Status::Ok();
  if (!types->is_array()) return f.Type("layer_types", "a list of strings", *types);
  if (static_cast<int>(types->size()) != c.num_layers) {
    return InvalidArgument(f.source() + ": field 'layer_types': " + std::to_string(types->size()) +
                           " entries for " + std::to_string(c.num_layers) + " layers");
  }
  const std::string want = c.sliding_window > 0 ? "sliding_attention" : "full_attention";
  for (size_t l = 0; l < types->size(); ++l) {
    const json& t = (*types)[l];
    if (!t.is_string()) return f.Type("layer_types", "a list of strings", *types);
    if (t.get<std::string>() != want) {
      return Unimplemented(f.source() + ": field 'layer_types': layer " + std::to_string(l) + " is '" +
                           t.get<std::string>() + "' where the other fields give every layer '" + want +
                           "' (attention kinds that differ by layer are not supported)");
    }
  }
  return Status::Ok();
}

StatusOr<ModelConfig> ParseModelConfig(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions to get the position of the error for the message.
    try {
      json ignored = json::parse(text);
      (void)ignored;
    } catch (const json::parse_error& e) {
      return InvalidArgument(source + ": malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
    } catch (const json::exception& e) {  // e.g. a number too large for a double (1e999)
      return InvalidArgument(source + ": malformed JSON: " + e.what());
    }
    return InvalidArgument(source + ": malformed JSON");
  }
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  Fields top(j, source);
  ModelConfig c;

  const json* archs = top.Find("architectures");
  if (!archs || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return InvalidArgument(source + ": field 'architectures' must be a non-empty list of strings (supported: " +
                           SupportedArchitectures() + ")");
  }
  const std::string arch_name = (*archs)[0].get<std::string>();
  bool found = false;
  for (Architecture a : kAll) {
    if (arch_name == ArchitectureName(a)) c.arch = a, found = true;
  }
  // The multimodal Llama 4 checkpoint: its text model's fields sit under "text_config" and its tensors
  // under "language_model."; the vision tower is not served.
  const json* text_config = nullptr;
  if (arch_name == kLlama4Multimodal) {
    c.arch = Architecture::kLlama4, found = true;
    text_config = top.Find("text_config");
    if (!text_config || !text_config->is_object()) {
      return InvalidArgument(source + ": " + arch_name + " needs a 'text_config' object");
    }
    c.tensor_prefix = "language_model.";
  }
  if (!found) {
    return Unimplemented(source + ": architecture '" + arch_name + "' is not supported (supported: " +
                         SupportedArchitectures() + ")");
  }
  if (const json* q = top.Find("quantization_config"); q && !q->is_null()) {
    SHOAL_RETURN_IF_ERROR(ParseQuantization(*q, source, &c));
  }
  const Fields f(text_config ? *text_config : j, text_config ? source + ": text_config" : source);
  const bool mixtral = c.arch == Architecture::kMixtral;
  const bool qwen2 = c.arch == Architecture::kQwen2Moe;
  const bool qwen3 = c.arch == Architecture::kQwen3Moe;
  const bool llama4 = c.arch == Architecture::kLlama4;
  const bool deepseek = c.arch == Architecture::kDeepseekV3;

  std::string act;
  SHOAL_RETURN_IF_ERROR(f.String("hidden_act", &act, "silu"));
  if (act != "silu") {
    return Unimplemented(source + ": field 'hidden_act': '" + act + "' is not supported (only silu)");
  }

  SHOAL_RETURN_IF_ERROR(f.Int("vocab_size", &c.vocab_size, std::nullopt));
  SHOAL_RETURN_IF_ERROR(f.Int("hidden_size", &c.hidden_size, std::nullopt));
  SHOAL_RETURN_IF_ERROR(f.Int("num_hidden_layers", &c.num_layers, std::nullopt, 1, 100000));
  SHOAL_RETURN_IF_ERROR(f.Int("num_attention_heads", &c.num_heads, std::nullopt, 1, 65536));
  // Llama4TextConfig's defaults when the key is absent (null means the derived value, as elsewhere).
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("num_key_value_heads", &c.num_kv_heads,
                                      llama4 && !f.Find("num_key_value_heads") ? 8 : c.num_heads, 1, 65536));
  SHOAL_RETURN_IF_ERROR(f.OptionalInt("head_dim", &c.head_dim,
                                      llama4 && !f.Find("head_dim") ? 128 : c.hidden_size / c.num_heads, 1, 65536));
  if (c.head_dim % 2 != 0) return InvalidArgument(source + ": field 'head_dim': must be even for RoPE");
  if (c.num_heads % c.num_kv_heads != 0) {
    return InvalidArgument(source + ": num_attention_heads (" + std::to_string(c.num_heads) +
                           ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  }
  SHOAL_RETURN_IF_ERROR(f.Int("max_position_embeddings", &c.max_position_embeddings,
                              mixtral || llama4 ? 4096 * 32 : deepseek ? 4096 : 32768));
  SHOAL_RETURN_IF_ERROR(f.Double("rms_norm_eps", &c.rms_norm_eps, mixtral || llama4 ? 1e-5 : 1e-6, 0, 1));
  SHOAL_RETURN_IF_ERROR(f.Bool("tie_word_embeddings", &c.tie_word_embeddings, false));
  SHOAL_RETURN_IF_ERROR(ParseRope(j, f, &c));

  // transformers ≥ 4.56 writes "dtype"; older versions "torch_dtype" (multimodal: either level).
  std::string dtype;
  const Fields& df = f.Find("dtype") || f.Find("torch_dtype") ? f : top;
  SHOAL_RETURN_IF_ERROR(df.String(df.Find("dtype") ? "dtype" : "torch_dtype", &dtype, "float32"));
  c.torch_dtype = dtype == "bfloat16" ? DType::kBF16 : dtype == "float16" ? DType::kF16 : DType::kF32;

  if (llama4) {
    SHOAL_RETURN_IF_ERROR(ParseLlama4(f, &c));
  } else if (deepseek) {
    SHOAL_RETURN_IF_ERROR(ParseDeepseekV3(f, &c));
  } else if (mixtral) {
    SHOAL_RETURN_IF_ERROR(f.Int("num_local_experts", &c.num_experts, 8));
    SHOAL_RETURN_IF_ERROR(f.Int("num_experts_per_tok", &c.num_experts_per_tok, 2));
    SHOAL_RETURN_IF_ERROR(f.Int("intermediate_size", &c.moe_intermediate_size, std::nullopt));
    c.norm_topk_prob = true;  // Mixtral always renormalises the top-k weights
    SHOAL_RETURN_IF_ERROR(f.OptionalInt("sliding_window", &c.sliding_window, 0, 1, 1 << 30));
    c.layer_is_moe.assign(c.num_layers, true);
  } else {
    // transformers 4 writes "num_experts" for Qwen; 5 writes "num_local_experts" (Mixtral's name).
    const bool v4_name = f.Find("num_experts") != nullptr, v5_name = f.Find("num_local_experts") != nullptr;
    SHOAL_RETURN_IF_ERROR(
        f.Int(v4_name || !v5_name ? "num_experts" : "num_local_experts", &c.num_experts, qwen2 ? 60 : 128));
    if (v4_name && v5_name) {
      int other = 0;
      SHOAL_RETURN_IF_ERROR(f.Int("num_local_experts", &other, std::nullopt));
      if (other != c.num_experts) {
        return InvalidArgument(source + ": fields 'num_experts' (" + std::to_string(c.num_experts) +
                               ") and 'num_local_experts' (" + std::to_string(other) + ") disagree");
      }
    }
    SHOAL_RETURN_IF_ERROR(f.Int("num_experts_per_tok", &c.num_experts_per_tok, qwen2 ? 4 : 8));
    SHOAL_RETURN_IF_ERROR(f.Int("moe_intermediate_size", &c.moe_intermediate_size, qwen2 ? 1408 : 768));
    SHOAL_RETURN_IF_ERROR(f.Int("intermediate_size", &c.intermediate_size, qwen2 ? 5632 : 6144));
    SHOAL_RETURN_IF_ERROR(f.Bool("norm_topk_prob", &c.norm_topk_prob, false));
    int step = 1;
    SHOAL_RETURN_IF_ERROR(f.Int("decoder_sparse_step", &step, 1, 1, 1 << 30));
    std::set<int> mlp_only;
    if (const json* m = f.Find("mlp_only_layers"); m && !m->is_null()) {
      if (!m->is_array()) return f.Type("mlp_only_layers", "a list of layer indices", *m);
      for (const auto& x : *m) {
        if (!x.is_number_integer()) return f.Type("mlp_only_layers", "a list of layer indices", *m);
        mlp_only.insert(x.get<int>());
      }
    }
    c.layer_is_moe.resize(c.num_layers);
    for (int l = 0; l < c.num_layers; ++l) c.layer_is_moe[l] = !mlp_only.count(l) && (l + 1) % step == 0;

    bool use_sliding = false;
    SHOAL_RETURN_IF_ERROR(f.Bool("use_sliding_window", &use_sliding, false));
    if (qwen2) {
      SHOAL_RETURN_IF_ERROR(f.Bool("qkv_bias", &c.qkv_bias, true));
      SHOAL_RETURN_IF_ERROR(f.Int("shared_expert_intermediate_size", &c.shared_expert_intermediate_size, 5632));
      c.shared_expert_gated = true;
      if (use_sliding) {
        // transformers applies it per layer (max_window_layers) in one attention path and to every layer
        // in another; shoal will not guess.
        return Unimplemented(source + ": field 'use_sliding_window': true is not supported for " + arch_name);
      }
    }
    if (qwen3) {
      bool attention_bias = false;
      SHOAL_RETURN_IF_ERROR(f.Bool("attention_bias", &attention_bias, false));
      c.qkv_bias = c.o_bias = attention_bias;
      c.qk_norm = true;
      if (use_sliding) SHOAL_RETURN_IF_ERROR(f.Int("sliding_window", &c.sliding_window, 4096));
    }
  }
  if (!llama4 && !deepseek) SHOAL_RETURN_IF_ERROR(CheckLayerTypes(f, c));
  if (c.num_experts_per_tok > c.num_experts) {
    return InvalidArgument(source + ": num_experts_per_tok (" + std::to_string(c.num_experts_per_tok) +
                           ") exceeds the number of experts (" + std::to_string(c.num_experts) + ")");
  }
  return c;
}

StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open (is this a Hugging Face model directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (16u << 20)) return InvalidArgument(path + ": larger than 16 MiB; not a config");
  return ParseModelConfig(ss.str(), path);
}

Status LimitContext(int64_t max_model_len, const std::string& model_dir, ModelConfig* config) {
  if (max_model_len <= 0) return Status::Ok();
  if (max_model_len > config->max_position_embeddings) {
    return InvalidArgument("engine.max_model_len (--max-model-len) " + std::to_string(max_model_len) +
                           " is longer than " + model_dir + "/config.json's max_position_embeddings (" +
                           std::to_string(config->max_position_embeddings) + ")");
  }
  config->max_position_embeddings = static_cast<int>(max_model_len);
  return Status::Ok();
}

}  // namespace shoal
