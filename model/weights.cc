#include "model/weights.h"

#include <algorithm>
#include <cstring>
#include <random>

#include <sys/mman.h>
#include <unistd.h>

namespace shoal {

namespace {

// HF tensor names of each architecture's MoE block.
struct Names {
  std::string moe_prefix;                 // "block_sparse_moe" or "mlp"
  std::string gate, up, down;             // expert projections
};

Names NamesFor(Architecture a) {
  if (a == Architecture::kMixtral) return {"block_sparse_moe", "w1", "w3", "w2"};
  if (a == Architecture::kLlama4) return {"feed_forward", "gate_proj", "up_proj", "down_proj"};
  if (a == Architecture::kDeepseekV3) return {"mlp", "gate_proj", "up_proj", "down_proj"};
  return {"mlp", "gate_proj", "up_proj", "down_proj"};
}

kernels::Matrix ToMatrix(const TensorView& v) {
  return {v.dtype, v.data, v.shape.at(0), v.shape.size() > 1 ? v.shape[1] : 1};
}

std::vector<float> ToFloats(const TensorView& v) {
  std::vector<float> out(static_cast<size_t>(v.numel()));
  kernels::Matrix m{v.dtype, v.data, 1, v.numel()};
  kernels::GatherRow(m, 0, out.data());
  return out;
}

class Loader {
 public:
  Loader(const Checkpoint& ck, const ModelConfig& c, ModelWeights* w) : ck_(ck), c_(c), w_(w) {}
  Status Mat(const std::string& name, int64_t rows, int64_t cols, kernels::Matrix* out) {
    SHOAL_ASSIGN_OR_RETURN(TensorView v, ck_.Get(name, {rows, cols}));
    *out = ToMatrix(v);
    if (v.dtype == DType::kF8E4M3) SHOAL_RETURN_IF_ERROR(AttachScales(name, out));
    return Status::Ok();
  }
  Status Vec(const std::string& name, int64_t n, std::vector<float>* out) {
    SHOAL_ASSIGN_OR_RETURN(TensorView v, ck_.Get(name, {n}));
    if (v.dtype == DType::kF8E4M3) return Unimplemented(ck_.dir() + ": tensor '" + name + "' is F8_E4M3; only weight matrices may be");
    *out = ToFloats(v);
    return Status::Ok();
  }
  // An FP8 weight's `<name>_scale_inv`: one f32 (or bf16) scale per block, widened to f32 and kept.
  Status AttachScales(const std::string& name, kernels::Matrix* m) {
    if (!c_.fp8_weights) {
      return InvalidArgument(ck_.dir() + ": tensor '" + name +
                             "' is F8_E4M3 but config.json has no fp8 quantization_config (its block size)");
    }
    const int64_t br = c_.fp8_block_rows, bc = c_.fp8_block_cols;
    const int64_t sr = (m->rows + br - 1) / br, sc = (m->cols + bc - 1) / bc;
    SHOAL_ASSIGN_OR_RETURN(TensorView s, ck_.Get(name + "_scale_inv", {sr, sc}));
    if (s.dtype == DType::kF8E4M3) {
      return Unimplemented(ck_.dir() + ": tensor '" + name + "_scale_inv' is F8; scales must be F32 or BF16");
    }
    std::vector<float> f = ToFloats(s);
    auto buf = std::make_unique<uint8_t[]>(f.size() * sizeof(float));
    std::memcpy(buf.get(), f.data(), f.size() * sizeof(float));
    m->block_scale = reinterpret_cast<const float*>(buf.get());
    m->scale_row0 = 0;
    m->scale_cols = sc;
    m->block_rows = static_cast<int>(br);
    m->block_cols = static_cast<int>(bc);
    w_->owned.push_back(std::move(buf));
    return Status::Ok();
  }
  Status Ffn(const std::string& prefix, const Names& n, int64_t hidden, int64_t inter, FfnWeights* f) {
    SHOAL_RETURN_IF_ERROR(Mat(prefix + n.gate + ".weight", inter, hidden, &f->gate));
    SHOAL_RETURN_IF_ERROR(Mat(prefix + n.up + ".weight", inter, hidden, &f->up));
    SHOAL_RETURN_IF_ERROR(Mat(prefix + n.down + ".weight", hidden, inter, &f->down));
    return Status::Ok();
  }

 private:
  const Checkpoint& ck_;
  const ModelConfig& c_;
  ModelWeights* w_;
};

// Parses "<prefix>model.layers.L.<moe>.experts.E." from a tensor name; false if it is not an expert
// tensor of one expert (Llama 4's fused expert tensors hold every expert of a layer).
bool ParseExpertName(const std::string& name, const std::string& prefix, const std::string& moe_prefix, int* layer,
                     int* expert) {
  const std::string kLayers = prefix + "model.layers.";
  if (name.compare(0, kLayers.size(), kLayers) != 0) return false;
  size_t p = kLayers.size();
  size_t q = name.find('.', p);
  if (q == std::string::npos) return false;
  const std::string mid = "." + moe_prefix + ".experts.";
  if (name.compare(q, mid.size(), mid) != 0) return false;
  size_t r = q + mid.size();
  size_t s = name.find('.', r);
  if (s == std::string::npos) return false;
  try {
    *layer = std::stoi(name.substr(p, q - p));
    *expert = std::stoi(name.substr(r, s - r));
  } catch (...) {
    return false;
  }
  return true;
}

// dst[c, r] = src[r, c] for a rows×cols matrix (row stride src_stride elements), in tiles so that
// both sides are read and written a cache line at a time.
template <typename T>
void TransposeTiled(const T* src, int64_t rows, int64_t cols, int64_t src_stride, T* dst) {
  constexpr int64_t kTile = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * src_stride + c];
      }
    }
  }
}

// The same for the checkpoint's 2- or 4-byte elements (f16/bf16 or f32) given as bytes; Checkpoint
// hands out every tensor aligned for its dtype.
void Transpose(const uint8_t* src, int64_t rows, int64_t cols, int64_t src_stride, size_t elem, uint8_t* dst) {
  if (elem == 2) {
    TransposeTiled(reinterpret_cast<const uint16_t*>(src), rows, cols, src_stride, reinterpret_cast<uint16_t*>(dst));
  } else {
    TransposeTiled(reinterpret_cast<const uint32_t*>(src), rows, cols, src_stride, reinterpret_cast<uint32_t*>(dst));
  }
}

// Llama 4 keeps a layer's experts fused, in the x·W layout: gate_up_proj [E, H, 2I] (gate in the first
// I columns) and down_proj [E, I, H]. Each expert this rank holds is copied out once into the nn.Linear
// layout the kernels read ([I, H], [I, H], [H, I]); only that expert's slice of the mapping is touched,
// so a rank reads its own experts' bytes and no others.
Status LoadFusedExperts(const Checkpoint& ck, const std::string& m, int layer, const ModelConfig& c,
                        const ExpertFilter& experts, LayerWeights* L, ModelWeights* w) {
  const int64_t E = c.num_experts, H = c.hidden_size, I = c.moe_intermediate_size;
  SHOAL_ASSIGN_OR_RETURN(TensorView gate_up, ck.Get(m + "experts.gate_up_proj", {E, H, 2 * I}));
  SHOAL_ASSIGN_OR_RETURN(TensorView down, ck.Get(m + "experts.down_proj", {E, I, H}));
  if (gate_up.dtype == DType::kF8E4M3) {
    return Unimplemented(ck.dir() + ": " + m + "experts: fused FP8 experts are not supported");
  }
  if (gate_up.dtype != down.dtype) {
    return InvalidArgument(ck.dir() + ": " + m + "experts: gate_up_proj and down_proj have different dtypes");
  }
  const size_t elem = DTypeSize(gate_up.dtype);
  const auto* gu = static_cast<const uint8_t*>(gate_up.data);
  const auto* dn = static_cast<const uint8_t*>(down.data);
  for (int64_t e = 0; e < E; ++e) {
    if (experts && !experts(layer, static_cast<int>(e))) continue;
    auto buf = std::make_unique<uint8_t[]>(3 * static_cast<size_t>(I * H) * elem);
    uint8_t* g = buf.get();
    uint8_t* u = g + I * H * elem;
    uint8_t* d = u + I * H * elem;
    const uint8_t* src = gu + e * H * 2 * I * elem;
    Transpose(src, H, I, 2 * I, elem, g);
    Transpose(src + I * elem, H, I, 2 * I, elem, u);
    Transpose(dn + e * I * H * elem, I, H, H, elem, d);
    FfnWeights& f = L->experts[e];
    f.gate = {gate_up.dtype, g, I, H};
    f.up = {gate_up.dtype, u, I, H};
    f.down = {gate_up.dtype, d, H, I};
    w->owned.push_back(std::move(buf));
  }
  return Status::Ok();
}

// DeepSeek-V3's attention projections (see LayerWeights).
Status LoadMla(Loader& ld, const std::string& a, const ModelConfig& c, LayerWeights* L) {
  const int64_t H = c.hidden_size, heads = c.num_heads;
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  if (c.q_lora_rank > 0) {
    SHOAL_RETURN_IF_ERROR(ld.Mat(a + "q_a_proj.weight", c.q_lora_rank, H, &L->q_a));
    SHOAL_RETURN_IF_ERROR(ld.Vec(a + "q_a_layernorm.weight", c.q_lora_rank, &L->q_a_norm));
    SHOAL_RETURN_IF_ERROR(ld.Mat(a + "q_b_proj.weight", heads * qk, c.q_lora_rank, &L->q_b));
    if (c.qkv_bias) SHOAL_RETURN_IF_ERROR(ld.Vec(a + "q_a_proj.bias", c.q_lora_rank, &L->q_a_bias));
  } else {
    SHOAL_RETURN_IF_ERROR(ld.Mat(a + "q_proj.weight", heads * qk, H, &L->q));
  }
  SHOAL_RETURN_IF_ERROR(ld.Mat(a + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H, &L->kv_a));
  if (c.qkv_bias) {
    SHOAL_RETURN_IF_ERROR(ld.Vec(a + "kv_a_proj_with_mqa.bias", c.kv_lora_rank + c.qk_rope_head_dim, &L->kv_a_bias));
  }
  SHOAL_RETURN_IF_ERROR(ld.Vec(a + "kv_a_layernorm.weight", c.kv_lora_rank, &L->kv_a_norm));
  SHOAL_RETURN_IF_ERROR(
      ld.Mat(a + "kv_b_proj.weight", heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, &L->kv_b));
  SHOAL_RETURN_IF_ERROR(ld.Mat(a + "o_proj.weight", H, heads * c.v_head_dim, &L->o));
  if (c.o_bias) SHOAL_RETURN_IF_ERROR(ld.Vec(a + "o_proj.bias", H, &L->o_bias));
  return Status::Ok();
}

}  // namespace

size_t ModelWeights::MatrixBytes() const {
  size_t total = embed.nbytes() + (lm_head.data == embed.data ? 0 : lm_head.nbytes());
  for (const auto& l : layers) {
    total += l.q.nbytes() + l.k.nbytes() + l.v.nbytes() + l.o.nbytes() + l.router.nbytes() + l.q_a.nbytes() +
             l.q_b.nbytes() + l.kv_a.nbytes() + l.kv_b.nbytes() +
             l.shared_expert.nbytes() + l.shared_expert_gate.nbytes() + l.dense_mlp.nbytes();
    for (const auto& e : l.experts) total += e.present() ? e.nbytes() : 0;
  }
  return total;
}

void CastMatrices(ModelWeights* w, DType to) {
  auto cast = [&](kernels::Matrix& m) {
    if (m.empty() || m.dtype == to || m.dtype == DType::kF8E4M3) return;
    const size_t elem = DTypeSize(to);
    auto buf = std::make_unique<uint8_t[]>(static_cast<size_t>(m.rows * m.cols) * elem);
    std::vector<float> row(static_cast<size_t>(m.cols));
    for (int64_t r = 0; r < m.rows; ++r) {
      kernels::GatherRow(m, r, row.data());
      uint8_t* dst = buf.get() + static_cast<size_t>(r * m.cols) * elem;
      for (int64_t c = 0; c < m.cols; ++c) {
        if (to == DType::kF32) {
          std::memcpy(dst + c * 4, &row[c], 4);
        } else {
          const uint16_t h = to == DType::kBF16 ? F32ToBf16(row[c]) : F32ToF16(row[c]);
          std::memcpy(dst + c * 2, &h, 2);
        }
      }
    }
    m.data = buf.get();
    m.dtype = to;
    w->owned.push_back(std::move(buf));
  };
  const bool tied = w->lm_head.data == w->embed.data;
  cast(w->embed);
  if (tied) w->lm_head = w->embed; else cast(w->lm_head);
  for (LayerWeights& l : w->layers) {
    for (kernels::Matrix* m : {&l.q, &l.k, &l.v, &l.o, &l.q_a, &l.q_b, &l.kv_a, &l.kv_b, &l.router, &l.shared_expert_gate}) cast(*m);
    for (FfnWeights* f : {&l.shared_expert, &l.dense_mlp}) {
      cast(f->gate), cast(f->up), cast(f->down);
    }
    for (FfnWeights& f : l.experts) cast(f.gate), cast(f.up), cast(f.down);
  }
}

namespace {

// The checkpoint filter for a load: the experts `experts` wants (all when null), every other tensor of
// the text model unless experts_only, never DeepSeek's multi-token-prediction layers nor a vision tower.
Checkpoint::TensorFilter MakeFilter(const ModelConfig& c, const Names& names, const ExpertFilter& experts, bool experts_only) {
  return [&c, names, experts, experts_only](const std::string& tensor) {
    if (!c.tensor_prefix.empty() && tensor.compare(0, c.tensor_prefix.size(), c.tensor_prefix) != 0) return false;
    const std::string kLayers = c.tensor_prefix + "model.layers.";
    int layer = -1;
    if (tensor.compare(0, kLayers.size(), kLayers) == 0) {
      const size_t dot = tensor.find('.', kLayers.size());
      try {
        layer = std::stoi(tensor.substr(kLayers.size(), dot - kLayers.size()));
      } catch (...) {
      }
      // DeepSeek's multi-token-prediction layers come after num_hidden_layers: never opened.
      if (c.mla && layer >= c.num_layers) return false;
    }
    int l = 0, e = 0;
    if (ParseExpertName(tensor, c.tensor_prefix, names.moe_prefix, &l, &e)) return !experts || experts(l, e);
    if (!experts_only) return true;
    // Llama 4's fused expert tensors hold every expert of a layer: opened when the layer has a wanted one.
    const std::string fused = "." + names.moe_prefix + ".experts.";
    if (layer < 0 || layer >= c.num_layers || tensor.find(fused) == std::string::npos) return false;
    for (int x = 0; x < c.num_experts; ++x) {
      if (!experts || experts(layer, x)) return true;
    }
    return false;
  };
}

// Layer l's routed experts that `experts` wants, into L->experts (sized to every expert).
Status LoadLayerExperts(const Checkpoint& ck, Loader& ld, const ModelConfig& c, const Names& names, int l,
                        const ExpertFilter& experts, LayerWeights* L, ModelWeights* w) {
  const std::string m = c.tensor_prefix + "model.layers." + std::to_string(l) + "." + names.moe_prefix + ".";
  L->experts.resize(c.num_experts);
  if (c.arch == Architecture::kLlama4) return LoadFusedExperts(ck, m, l, c, experts, L, w);
  for (int e = 0; e < c.num_experts; ++e) {
    if (experts && !experts(l, e)) continue;
    SHOAL_RETURN_IF_ERROR(
        ld.Ffn(m + "experts." + std::to_string(e) + ".", names, c.hidden_size, c.moe_intermediate_size, &L->experts[e]));
  }
  return Status::Ok();
}

// Reads one byte of every page of m, so that the pages are resident before a step needs them.
uint8_t TouchPages(const kernels::Matrix& m) {
  const auto* p = static_cast<const volatile uint8_t*>(m.data);
  uint8_t x = 0;
  for (size_t i = 0; i < m.nbytes(); i += 4096) x ^= p[i];
  return m.nbytes() > 0 ? static_cast<uint8_t>(x ^ p[m.nbytes() - 1]) : x;
}

// Gives back the pages lying wholly inside m's bytes: a checkpoint mapping's are read again if ever
// touched; an owned buffer's read as zeros until it is freed.
void ReleasePages(const kernels::Matrix& m) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(m.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(m.data) + m.nbytes()) / page * page;
  if (m.data != nullptr && end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& c, const std::string& dir, const ExpertFilter& experts) {
  const Names names = NamesFor(c.arch);
  SHOAL_ASSIGN_OR_RETURN(auto ck, Checkpoint::Open(dir, MakeFilter(c, names, experts, /*experts_only=*/false)));
  ModelWeights w;
  Loader ld(*ck, c, &w);
  const int64_t H = c.hidden_size;
  const std::string& pre = c.tensor_prefix;
  SHOAL_RETURN_IF_ERROR(ld.Mat(pre + "model.embed_tokens.weight", c.vocab_size, H, &w.embed));
  if (c.tie_word_embeddings && !ck->Has(pre + "lm_head.weight")) {
    w.lm_head = w.embed;
  } else {
    SHOAL_RETURN_IF_ERROR(ld.Mat(pre + "lm_head.weight", c.vocab_size, H, &w.lm_head));
  }
  SHOAL_RETURN_IF_ERROR(ld.Vec(pre + "model.norm.weight", H, &w.final_norm));
  const bool llama4 = c.arch == Architecture::kLlama4;
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    const std::string p = pre + "model.layers." + std::to_string(l) + ".";
    SHOAL_RETURN_IF_ERROR(ld.Vec(p + "input_layernorm.weight", H, &L.input_norm));
    SHOAL_RETURN_IF_ERROR(ld.Vec(p + "post_attention_layernorm.weight", H, &L.post_attn_norm));
    const std::string a = p + "self_attn.";
    if (c.mla) {
      SHOAL_RETURN_IF_ERROR(LoadMla(ld, a, c, &L));
    } else {
      SHOAL_RETURN_IF_ERROR(ld.Mat(a + "q_proj.weight", c.q_dim(), H, &L.q));
      SHOAL_RETURN_IF_ERROR(ld.Mat(a + "k_proj.weight", c.kv_dim(), H, &L.k));
      SHOAL_RETURN_IF_ERROR(ld.Mat(a + "v_proj.weight", c.kv_dim(), H, &L.v));
      SHOAL_RETURN_IF_ERROR(ld.Mat(a + "o_proj.weight", H, c.q_dim(), &L.o));
      if (c.qkv_bias) {
        SHOAL_RETURN_IF_ERROR(ld.Vec(a + "q_proj.bias", c.q_dim(), &L.q_bias));
        SHOAL_RETURN_IF_ERROR(ld.Vec(a + "k_proj.bias", c.kv_dim(), &L.k_bias));
        SHOAL_RETURN_IF_ERROR(ld.Vec(a + "v_proj.bias", c.kv_dim(), &L.v_bias));
      }
      if (c.o_bias) SHOAL_RETURN_IF_ERROR(ld.Vec(a + "o_proj.bias", H, &L.o_bias));
      if (c.qk_norm) {
        SHOAL_RETURN_IF_ERROR(ld.Vec(a + "q_norm.weight", c.head_dim, &L.q_norm));
        SHOAL_RETURN_IF_ERROR(ld.Vec(a + "k_norm.weight", c.head_dim, &L.k_norm));
      }
    }
    L.is_moe = c.layer_is_moe[l];
    if (!L.is_moe) {
      SHOAL_RETURN_IF_ERROR(ld.Ffn(p + (llama4 ? "feed_forward." : "mlp."), names, H, c.intermediate_size, &L.dense_mlp));
      continue;
    }
    const std::string m = p + names.moe_prefix + ".";
    SHOAL_RETURN_IF_ERROR(ld.Mat(m + (llama4 ? "router.weight" : "gate.weight"), c.num_experts, H, &L.router));
    if (c.router_grouped_sigmoid) {
      SHOAL_RETURN_IF_ERROR(ld.Vec(m + "gate.e_score_correction_bias", c.num_experts, &L.router_bias));
    }
    SHOAL_RETURN_IF_ERROR(LoadLayerExperts(*ck, ld, c, names, l, experts, &L, &w));
    if (c.shared_expert_intermediate_size > 0) {
      SHOAL_RETURN_IF_ERROR(ld.Ffn(m + (c.mla ? "shared_experts." : "shared_expert."), names, H,
                                   c.shared_expert_intermediate_size, &L.shared_expert));
      if (c.shared_expert_gated) {
        SHOAL_RETURN_IF_ERROR(ld.Mat(m + "shared_expert_gate.weight", 1, H, &L.shared_expert_gate));
      }
    }
  }
  w.checkpoint = std::move(ck);
  return w;
}

StatusOr<ModelWeights> LoadExpertWeights(const ModelConfig& c, const std::string& dir, const ExpertFilter& experts,
                                         std::optional<DType> dtype) {
  const Names names = NamesFor(c.arch);
  SHOAL_ASSIGN_OR_RETURN(auto ck, Checkpoint::Open(dir, MakeFilter(c, names, experts, /*experts_only=*/true)));
  ModelWeights w;
  Loader ld(*ck, c, &w);
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[l]) continue;
    w.layers[l].is_moe = true;
    w.layers[l].experts.resize(c.num_experts);
    bool wanted = false;
    for (int e = 0; e < c.num_experts && !wanted; ++e) wanted = !experts || experts(l, e);
    // A layer gaining nothing: its tensors were not opened (Llama 4's fused ones hold every expert).
    if (!wanted) continue;
    SHOAL_RETURN_IF_ERROR(LoadLayerExperts(*ck, ld, c, names, l, experts, &w.layers[l], &w));
  }
  if (dtype) CastMatrices(&w, *dtype);
  uint8_t sink = 0;
  for (const LayerWeights& L : w.layers) {
    for (const FfnWeights& f : L.experts) sink ^= TouchPages(f.gate) ^ TouchPages(f.up) ^ TouchPages(f.down);
  }
  [[maybe_unused]] volatile uint8_t keep = sink;  // the reads must happen
  w.checkpoint = std::move(ck);
  return w;
}

void AdoptExperts(ModelWeights* w, ModelWeights gained) {
  for (size_t l = 0; l < gained.layers.size() && l < w->layers.size(); ++l) {
    std::vector<FfnWeights>& from = gained.layers[l].experts;
    std::vector<FfnWeights>& to = w->layers[l].experts;
    for (size_t e = 0; e < from.size() && e < to.size(); ++e) {
      if (from[e].present()) to[e] = from[e];
    }
  }
  for (auto& b : gained.owned) w->owned.push_back(std::move(b));
  if (gained.checkpoint) w->more_checkpoints.push_back(std::move(gained.checkpoint));
  for (auto& ck : gained.more_checkpoints) w->more_checkpoints.push_back(std::move(ck));
}

void ReleaseExpert(ModelWeights* w, int layer, int expert) {
  FfnWeights& f = w->layers.at(layer).experts.at(expert);
  if (!f.present()) return;
  // Pages first (an owned buffer may hold several matrices: Llama 4's copies), then owned buffers.
  std::vector<const void*> starts;
  for (const kernels::Matrix* m : {&f.gate, &f.up, &f.down}) {
    ReleasePages(*m);
    starts.push_back(m->data);
    if (m->block_scale != nullptr) starts.push_back(m->block_scale);
  }
  std::erase_if(w->owned, [&](const std::unique_ptr<uint8_t[]>& b) {
    return std::find(starts.begin(), starts.end(), static_cast<const void*>(b.get())) != starts.end();
  });
  f = FfnWeights{};
}

ModelWeights MakeSyntheticWeights(const ModelConfig& c, DType dtype, uint64_t seed) {
  ModelWeights w;
  std::mt19937_64 rng(seed);
  // FP8: the decoder layers' projections and experts in e4m3 with one scale per block (DeepSeek's
  // layout, c.fp8_block_* or 128 × 128); embeddings, routers and lm_head in bf16.
  const DType base = dtype == DType::kF8E4M3 ? DType::kBF16 : dtype;
  auto fp8 = [&](int64_t rows, int64_t cols) {
    const int64_t br = c.fp8_block_rows > 0 ? c.fp8_block_rows : 128, bc = c.fp8_block_cols > 0 ? c.fp8_block_cols : 128;
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    auto buf = std::make_unique<uint8_t[]>(static_cast<size_t>(rows * cols) + static_cast<size_t>(sr * sc) * 4);
    uint64_t s = rng();
    for (int64_t i = 0; i < rows * cols; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      // Sign, an exponent of 4..8 and any mantissa: magnitudes 1/8 .. 3.75, never NaN.
      const uint64_t r = s >> 40;
      buf[i] = static_cast<uint8_t>(((r & 1) << 7) | ((4 + (r >> 1) % 5) << 3) | ((r >> 4) & 7));
    }
    auto* scales = reinterpret_cast<float*>(buf.get() + rows * cols);
    for (int64_t i = 0; i < sr * sc; ++i) scales[i] = 0.85f / std::sqrt(static_cast<float>(cols));
    kernels::Matrix m{DType::kF8E4M3, buf.get(), rows, cols, scales, 0, sc, static_cast<int>(br), static_cast<int>(bc)};
    w.owned.push_back(std::move(buf));
    return m;
  };
  auto mat = [&](int64_t rows, int64_t cols, bool quantisable = false) {
    if (quantisable && dtype == DType::kF8E4M3) return fp8(rows, cols);
    const DType dtype = base;
    const size_t n = static_cast<size_t>(rows * cols);
    auto buf = std::make_unique<uint8_t[]>(n * DTypeSize(dtype));
    const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
    // A cheap generator: the benchmark needs many GB quickly, not statistical quality.
    uint64_t s = rng();
    for (size_t i = 0; i < n; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const float u = (static_cast<float>(s >> 40) / 16777216.0f - 0.5f) * 3.4f * scale;
      if (dtype == DType::kF32) {
        std::memcpy(buf.get() + 4 * i, &u, 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(u) : F32ToF16(u);
        std::memcpy(buf.get() + 2 * i, &h, 2);
      }
    }
    kernels::Matrix m{dtype, buf.get(), rows, cols};
    w.owned.push_back(std::move(buf));
    return m;
  };
  auto ffn = [&](int64_t inter) {
    return FfnWeights{mat(inter, c.hidden_size, true), mat(inter, c.hidden_size, true), mat(c.hidden_size, inter, true)};
  };
  const int64_t H = c.hidden_size;
  w.embed = mat(c.vocab_size, H);
  w.lm_head = c.tie_word_embeddings ? w.embed : mat(c.vocab_size, H);
  w.final_norm.assign(H, 1.0f);
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    L.input_norm.assign(H, 1.0f);
    L.post_attn_norm.assign(H, 1.0f);
    if (c.mla) {
      const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
      if (c.q_lora_rank > 0) {
        L.q_a = mat(c.q_lora_rank, H, true);
        L.q_a_norm.assign(c.q_lora_rank, 1.0f);
        L.q_b = mat(c.num_heads * qk, c.q_lora_rank, true);
      } else {
        L.q = mat(c.num_heads * qk, H, true);
      }
      L.kv_a = mat(c.kv_lora_rank + c.qk_rope_head_dim, H, true);
      L.kv_a_norm.assign(c.kv_lora_rank, 1.0f);
      L.kv_b = mat(c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, true);
      L.o = mat(H, c.num_heads * c.v_head_dim, true);
    } else {
      L.q = mat(c.q_dim(), H, true);
      L.k = mat(c.kv_dim(), H, true);
      L.v = mat(c.kv_dim(), H, true);
      L.o = mat(H, c.q_dim(), true);
    }
    if (c.qkv_bias) {
      L.q_bias.assign(c.q_dim(), 0.0f);
      L.k_bias.assign(c.kv_dim(), 0.0f);
      L.v_bias.assign(c.kv_dim(), 0.0f);
    }
    if (c.o_bias) L.o_bias.assign(H, 0.0f);
    if (c.qk_norm) {
      L.q_norm.assign(c.head_dim, 1.0f);
      L.k_norm.assign(c.head_dim, 1.0f);
    }
    L.is_moe = c.layer_is_moe[l];
    if (!L.is_moe) {
      L.dense_mlp = ffn(c.intermediate_size);
      continue;
    }
    L.router = mat(c.num_experts, H);
    if (c.router_grouped_sigmoid) L.router_bias.assign(c.num_experts, 0.0f);
    for (int e = 0; e < c.num_experts; ++e) L.experts.push_back(ffn(c.moe_intermediate_size));
    if (c.shared_expert_intermediate_size > 0) {
      L.shared_expert = ffn(c.shared_expert_intermediate_size);
      if (c.shared_expert_gated) L.shared_expert_gate = mat(1, H);
    }
  }
  return w;
}

}  // namespace shoal
