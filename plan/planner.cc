// The planner's arithmetic. See planner.h for the model; docs/plan.md for the assumptions, sources
// and the validation against published deployments.
#include "plan/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace shoal::plan {

namespace {

int DtypeBytes(const std::string& d) { return d == "fp8" ? 1 : 2; }

double ExpFlops(const PlanRequest& r) {
  return (r.weight_dtype == "fp8" ? r.hw.fp8_flops : r.hw.bf16_flops) * r.calib.flops_eff;
}
// Attention cores run in BF16 (FlashMLA / FlashAttention-3 BF16) whatever the KV dtype.
double AttnFlops(const PlanRequest& r) { return r.hw.bf16_flops * r.calib.flops_eff; }
double Bw(const PlanRequest& r) { return r.hw.hbm_bw * r.calib.hbm_eff; }

double DecodeContext(const PlanRequest& r) {
  return r.decode_context > 0 ? r.decode_context : r.input_len + r.output_len / 2.0;
}

// How many GPUs of an attention group share one sequence's KV (GQA splits heads; MLA's latent is
// shared by all heads, so TP replicates it).
int KvSplit(const PlanRequest& r) {
  if (r.model.attn.kind == AttentionSpec::Kind::kMla) return 1;
  return std::min(r.attn_tp, r.model.attn.num_kv_heads);
}

int ExpertSlots(const ModelSpec& m, int n) { return m.num_experts > 0 ? (m.num_experts + n - 1) / n : 0; }

MemoryPlan Memory(const PlanRequest& r, int n) {
  const ParamCounts p = CountParams(r.model);
  MemoryPlan mp;
  const int wb = DtypeBytes(r.weight_dtype);
  // With MTP, the draft module as DeepSeek-V3's: one more transformer layer of the model's MoE kind
  // (its own attention, KV and experts) plus a 2h x h projection; embedding and head are shared. One
  // module however many drafts: it runs once per draft.
  const bool mtp = r.mtp_draft_tokens > 0;
  const bool moe = r.model.num_moe_layers > 0;
  const double h = r.model.hidden_size;
  const double mtp_dense = !mtp ? 0
                                : p.attention_per_layer + 2 * h * h +
                                      (moe ? p.shared_per_moe_layer + p.router_per_moe_layer : p.dense_mlp_per_layer);
  mp.mtp_dense_bytes = mtp_dense * wb / r.attn_tp;
  mp.dense_weight_bytes = p.dense_total * wb / r.attn_tp + mp.mtp_dense_bytes;
  mp.expert_slots_per_layer = ExpertSlots(r.model, n);
  mp.mtp_expert_bytes = mtp && moe ? double(mp.expert_slots_per_layer) * p.expert * wb : 0;
  mp.expert_weight_bytes = double(mp.expert_slots_per_layer) * r.model.num_moe_layers * p.expert * wb + mp.mtp_expert_bytes;
  mp.usable_bytes = r.hw.hbm_bytes * r.calib.hbm_usable;
  mp.kv_bytes_per_token = KvElementsPerTokenPerLayer(r.model) * (r.model.num_layers + (mtp ? 1 : 0)) * DtypeBytes(r.kv_dtype);
  mp.kv_free_bytes = mp.usable_bytes - mp.weight_bytes();
  const double per_seq = mp.kv_bytes_per_token * KvContextPerLayer(r.model, DecodeContext(r)) * r.attn_tp / KvSplit(r);
  mp.max_sequences = mp.kv_free_bytes > 0 ? int(std::min(1e9, std::floor(mp.kv_free_bytes / per_seq))) : 0;
  return mp;
}

struct Term {
  double flop_s, byte_s;
  double t() const { return std::max(flop_s, byte_s); }
};

struct CommTimes {
  double net_bytes = 0, nvl_bytes = 0, net_s = 0, nvl_s = 0, total_s = 0;
};

// All-to-all (dispatch + combine) of `tokens` per GPU over every MoE layer.
CommTimes AllToAll(const PlanRequest& r, int n, double tokens, int micro_batches) {
  CommTimes c;
  if (n <= 1 || r.model.num_moe_layers == 0) return c;
  const double per_token = double(r.model.top_k) * r.model.hidden_size * (DtypeBytes(r.weight_dtype) + 2.0);
  const double total = r.model.num_moe_layers * tokens * r.calib.expert_imbalance * per_token;
  const int gpn = std::min(r.hw.gpus_per_node, n);
  c.net_bytes = total * double(n - gpn) / n;  // destinations on other nodes
  c.nvl_bytes = total * double(gpn - 1) / n;  // same node, other GPU
  c.net_s = c.net_bytes / (r.hw.net_bw * r.calib.net_eff);
  c.nvl_s = c.nvl_bytes / (r.hw.nvlink_bw * r.calib.nvlink_eff);
  c.total_s = std::max(c.net_s, c.nvl_s) + r.model.num_moe_layers * 2.0 * micro_batches * r.calib.a2a_latency_us * 1e-6;
  return c;
}

// TP all-reduces of the attention group (after attention and after the MLP, every layer), on NVLink.
double TpAllReduceSeconds(const PlanRequest& r, double tokens_per_group) {
  if (r.attn_tp <= 1) return 0;
  const double bytes = 2.0 * (r.attn_tp - 1) / r.attn_tp * tokens_per_group * r.model.hidden_size * 2.0;
  return r.model.num_layers * 2.0 * bytes / (r.hw.nvlink_bw * r.calib.nvlink_eff);
}

// `micro_batches` 1: nothing to overlap with, so compute and comm add up even when overlap is on.
void Finish(const PlanRequest& r, int micro_batches, const std::vector<Term>& terms, double overhead_s, double extra_s,
            const CommTimes& comm, double output_tokens, StepBreakdown* s) {
  double mem_bound = 0, flop_bound = 0;
  for (const Term& t : terms) (t.byte_s >= t.flop_s ? mem_bound : flop_bound) += t.t();
  s->overhead_ms = (overhead_s + extra_s) * 1e3;
  s->compute_ms = (terms[0].t() + terms[1].t() + terms[2].t() + overhead_s + extra_s) * 1e3;
  s->net_ms = comm.net_s * 1e3;
  s->nvlink_ms = comm.nvl_s * 1e3;
  s->comm_ms = comm.total_s * 1e3;
  s->net_bytes = comm.net_bytes;
  s->nvlink_bytes = comm.nvl_bytes;
  s->step_ms = r.overlap && micro_batches > 1 ? std::max(s->compute_ms, s->comm_ms) +
                               (1.0 - r.calib.overlap_eff) * std::min(s->compute_ms, s->comm_ms)
                         : s->compute_ms + s->comm_ms;
  s->output_tokens = output_tokens;
  s->tokens_per_s = s->step_ms > 0 ? output_tokens / (s->step_ms * 1e-3) : 0;
  if (s->comm_ms > s->compute_ms && ((r.overlap && micro_batches > 1) || s->comm_ms > 0.5 * s->step_ms)) {
    s->bound = comm.net_s >= comm.nvl_s ? "all-to-all (IB)" : "all-to-all (NVLink)";
  } else {
    s->bound = mem_bound >= flop_bound ? "HBM bandwidth" : "compute";
  }
}

}  // namespace

Status ValidateRequest(const PlanRequest& r) {
  SHOAL_RETURN_IF_ERROR(ValidateModelSpec(r.model, "model '" + r.model.name + "'"));
  SHOAL_RETURN_IF_ERROR(ValidateHardware(r.hw, "hardware"));
  if (r.weight_dtype != "bf16" && r.weight_dtype != "fp8")
    return InvalidArgument("--weight-dtype: '" + r.weight_dtype + "' (expected bf16 or fp8)");
  if (r.kv_dtype != "bf16" && r.kv_dtype != "fp8")
    return InvalidArgument("--kv-dtype: '" + r.kv_dtype + "' (expected bf16 or fp8)");
  if (r.num_gpus < 0) return InvalidArgument("--gpus: must be positive (or 0 to search)");
  if (r.attn_tp < 0) return InvalidArgument("--attn-tp: must be at least 1 (or 0 for auto)");
  if (r.attn_tp > 0 && r.num_gpus > 0 && r.num_gpus % r.attn_tp != 0)
    return InvalidArgument("--gpus " + std::to_string(r.num_gpus) + " is not a multiple of --attn-tp " +
                           std::to_string(r.attn_tp));
  if (r.input_len < 1 || r.output_len < 1) return InvalidArgument("--input-len/--output-len: must be at least 1");
  if (r.ttft_ms < 0 || r.tpot_ms < 0) return InvalidArgument("--ttft-ms/--tpot-ms: must not be negative");
  if (r.max_batch_per_gpu < 0) return InvalidArgument("--max-batch: must not be negative");
  if (r.prefill_chunk < 1) return InvalidArgument("--prefill-chunk: must be positive");
  const Calibration& c = r.calib;
  for (auto [v, name] : {std::pair{c.hbm_eff, "hbm_eff"}, {c.flops_eff, "flops_eff"}, {c.net_eff, "net_eff"},
                         {c.nvlink_eff, "nvlink_eff"}, {c.hbm_usable, "hbm_usable"}})
    if (!(v > 0 && v <= 1)) return InvalidArgument(std::string("calibration ") + name + ": must be in (0, 1]");
  if (r.mtp_draft_tokens < 0 || r.mtp_draft_tokens > 8) return InvalidArgument("--mtp: draft tokens must be in 0..8");
  if (!(r.mtp_accept >= 0 && r.mtp_accept <= 1)) return InvalidArgument("--mtp-accept: must be in [0, 1]");
  if (!(c.overlap_eff >= 0 && c.overlap_eff <= 1)) return InvalidArgument("calibration overlap_eff: must be in [0, 1]");
  if (!(c.expert_imbalance >= 1)) return InvalidArgument("calibration expert_imbalance: must be >= 1");
  if (c.layer_overhead_us < 0 || c.a2a_latency_us < 0)
    return InvalidArgument("calibration layer_overhead_us/a2a_latency_us: must not be negative");
  return Status::Ok();
}

namespace {

// Expected tokens a sequence emits per decode step: its own, plus each draft while all before it held.
double AcceptedPerStep(const PlanRequest& r) {
  double accepted = 1, p = 1;
  for (int k = 0; k < r.mtp_draft_tokens; ++k) accepted += (p *= r.mtp_accept);
  return accepted;
}

}  // namespace

StepBreakdown DecodeStep(const PlanRequest& req, int n, int b) {
  PlanRequest r = req;
  if (r.attn_tp == 0) r.attn_tp = 1;
  const ParamCounts p = CountParams(r.model);
  const MemoryPlan mem = Memory(r, n);
  const int mb = (r.overlap && n > 1 && b >= 2) ? 2 : 1;
  const double ctx = KvContextPerLayer(r.model, DecodeContext(r));  // chunked layers keep and read less
  // Tokens through the model: each sequence's own plus its drafts to verify. Drafting them runs the
  // MTP module (one more layer, Memory) once per draft at b tokens: `draft` adds that as a share of
  // the pass's per-token work (FLOPs, all-to-all); its reads (its weights and its layer's KV, once per
  // draft) are counted apart from the main pass's.
  const int d = r.mtp_draft_tokens;
  const double t = double(b) * (1 + d);
  const double draft = double(d) * b / (t * r.model.num_layers);
  StepBreakdown s;
  s.batch = b;
  s.tokens = t;

  const double dense_bytes = mb * (mem.dense_weight_bytes - mem.mtp_dense_bytes) + d * mem.mtp_dense_bytes;
  Term dense{(1 + draft) * 2.0 * p.dense_active * t / ExpFlops(r), dense_bytes / Bw(r)};
  // Distinct local experts touched: each of the t*n/mb tokens of a micro-batch routes to top_k of E
  // (a draft pass: b*n tokens).
  auto touched = [&](double tokens) {
    if (r.model.num_experts <= 0) return 0.0;
    return 1.0 - std::pow(1.0 - double(r.model.top_k) / r.model.num_experts, tokens);
  };
  const double expert_bytes = mb * (mem.expert_weight_bytes - mem.mtp_expert_bytes) * touched(t * n / mb) +
                              d * mem.mtp_expert_bytes * touched(double(b) * n);
  Term experts{(1 + draft) * 2.0 * p.routed_active * t * r.calib.expert_imbalance / ExpFlops(r), expert_bytes / Bw(r)};
  // The KV of a sequence is read once per step however many of its tokens attend to it; with MTP,
  // kv_bytes_per_token includes the module's layer, which each draft reads once more.
  const double kv_layers = r.model.num_layers + (d > 0 ? 1 : 0);
  const double kv_bytes = (r.model.num_layers + d) / kv_layers * double(b) * r.attn_tp / KvSplit(r) * ctx *
                          mem.kv_bytes_per_token;
  const double attn_flops = (1 + draft) * t * ctx * DecodeAttentionFlopsPerContextToken(r.model);
  Term attn{attn_flops / AttnFlops(r), kv_bytes / Bw(r)};
  s.dense_ms = dense.t() * 1e3;
  s.experts_ms = experts.t() * 1e3;
  s.attention_ms = attn.t() * 1e3;
  s.hbm_bytes = dense_bytes + expert_bytes + kv_bytes;
  s.flops = (1 + draft) * (2.0 * p.dense_active * t + 2.0 * p.routed_active * t) + attn_flops;
  const double overhead = (r.model.num_layers + r.mtp_draft_tokens) * mb * r.calib.layer_overhead_us * 1e-6;
  const CommTimes comm = AllToAll(r, n, (1 + draft) * t, mb);
  const double accepted = AcceptedPerStep(r);
  Finish(r, mb, {dense, experts, attn}, overhead, TpAllReduceSeconds(r, (1 + draft) * t * r.attn_tp), comm, b * accepted,
         &s);
  s.tpot_ms = s.step_ms / accepted;
  return s;
}

namespace {

StepBreakdown PrefillStep(const PlanRequest& r, int n, int prompts) {
  const ParamCounts p = CountParams(r.model);
  const MemoryPlan mem = Memory(r, n);
  const double tokens = double(prompts) * r.input_len;
  const int mb = (r.overlap && n > 1) ? 2 : 1;
  StepBreakdown s;
  s.batch = int(tokens);
  Term dense{2.0 * p.dense_active * tokens / ExpFlops(r), mb * mem.dense_weight_bytes / Bw(r)};
  Term experts{2.0 * p.routed_active * tokens * r.calib.expert_imbalance / ExpFlops(r),
               mb * mem.expert_weight_bytes / Bw(r)};
  // Causal attention: a prompt of L tokens has L^2/2 query-key pairs (chunked layers: L·chunk/2).
  const double pairs = prompts * PrefillPairsPerLayer(r.model, r.input_len);
  Term attn{pairs * PrefillAttentionFlopsPerPair(r.model) / AttnFlops(r),
            tokens * mem.kv_bytes_per_token / KvSplit(r) / Bw(r)};
  s.dense_ms = dense.t() * 1e3;
  s.experts_ms = experts.t() * 1e3;
  s.attention_ms = attn.t() * 1e3;
  s.flops = 2.0 * p.active() * tokens + pairs * PrefillAttentionFlopsPerPair(r.model);
  s.hbm_bytes = mb * mem.weight_bytes() + tokens * mem.kv_bytes_per_token;
  const double overhead = r.model.num_layers * mb * r.calib.layer_overhead_us * 1e-6;
  s.tokens = tokens;
  Finish(r, mb, {dense, experts, attn}, overhead, TpAllReduceSeconds(r, tokens), AllToAll(r, n, tokens, mb), tokens, &s);
  return s;
}

}  // namespace

StatusOr<LayoutPlan> EvaluateLayout(const PlanRequest& req, int n) {
  SHOAL_RETURN_IF_ERROR(ValidateRequest(req));
  PlanRequest r = req;
  if (r.attn_tp == 0) r.attn_tp = 1;
  if (n < 1) return InvalidArgument("layout: number of GPUs must be positive (got " + std::to_string(n) + ")");
  if (n % r.attn_tp != 0)
    return InvalidArgument("layout: " + std::to_string(n) + " GPUs is not a multiple of attn_tp " +
                           std::to_string(r.attn_tp));
  LayoutPlan lp;
  lp.num_gpus = n;
  lp.nodes = (n + r.hw.gpus_per_node - 1) / r.hw.gpus_per_node;
  lp.attn_tp = r.attn_tp;
  lp.memory = Memory(r, n);
  char buf[200];
  if (lp.memory.kv_free_bytes <= 0) {
    std::snprintf(buf, sizeof buf, "weights need %.1f GiB per GPU, more than the %.1f GiB usable",
                  lp.memory.weight_bytes() / (1 << 30), lp.memory.usable_bytes / (1 << 30));
    lp.why = buf;
    return lp;
  }
  if (lp.memory.max_sequences < 1) {
    std::snprintf(buf, sizeof buf, "%.1f GiB left for KV per GPU: not one sequence of %.0f tokens",
                  lp.memory.kv_free_bytes / (1 << 30), DecodeContext(r));
    lp.why = buf;
    return lp;
  }
  lp.fits = true;

  // Decode: the largest batch allowed by KV capacity, --max-batch and the TPOT SLO.
  int bmax = std::min(lp.memory.max_sequences, 1 << 16);
  lp.decode_limit = "KV capacity";
  if (r.max_batch_per_gpu > 0 && r.max_batch_per_gpu < bmax) {
    bmax = r.max_batch_per_gpu;
    lp.decode_limit = "max batch";
  }
  if (r.tpot_ms > 0 && DecodeStep(r, n, bmax).tpot_ms > r.tpot_ms) {
    lp.decode_limit = "TPOT SLO";
    int lo = 1, hi = bmax;  // step time grows with the batch: find the largest b within the SLO
    if (DecodeStep(r, n, 1).tpot_ms > r.tpot_ms) {
      hi = 1;
      lp.tpot_met = false;
    }
    while (lo < hi) {
      const int mid = lo + (hi - lo + 1) / 2;
      if (DecodeStep(r, n, mid).tpot_ms <= r.tpot_ms) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    bmax = lo;
  }
  lp.decode = DecodeStep(r, n, bmax);

  // Prefill: as many whole prompts per GPU as the chunk holds, fewer if the TTFT SLO demands it.
  int prompts = std::max(1, r.prefill_chunk / r.input_len);
  lp.prefill = PrefillStep(r, n, prompts);
  while (r.ttft_ms > 0 && lp.prefill.step_ms > r.ttft_ms && prompts > 1) {
    prompts = std::max(1, prompts / 2);
    lp.prefill = PrefillStep(r, n, prompts);
  }
  lp.ttft_ms = lp.prefill.step_ms;
  lp.ttft_met = r.ttft_ms <= 0 || lp.ttft_ms <= r.ttft_ms;
  return lp;
}

StatusOr<PlanResult> Plan(const PlanRequest& r) {
  SHOAL_RETURN_IF_ERROR(ValidateRequest(r));
  PlanResult out;
  out.request = r;
  out.params = CountParams(r.model);
  // Candidates: 1, 2, 4 GPUs, then whole nodes up to 8192 GPUs.
  std::vector<int> candidates;
  for (int n : {1, 2, 4})
    if (n < r.hw.gpus_per_node) candidates.push_back(n);
  for (int k = 1; k * r.hw.gpus_per_node <= 8192; ++k) candidates.push_back(k * r.hw.gpus_per_node);
  bool found = false;
  LayoutPlan first_fit;
  bool have_fit = false;
  // attn_tp 0 (auto): data-parallel attention where the replicated weights fit, else TP 2, 4, ... up
  // to a node (a model whose dense part alone exceeds one GPU needs its attention split).
  std::vector<int> tps = {r.attn_tp};
  if (r.attn_tp == 0) {
    tps.clear();
    for (int tp = 1; tp <= r.hw.gpus_per_node; tp *= 2) tps.push_back(tp);
  }
  for (int tp : tps) {
   PlanRequest rt = r;
   rt.attn_tp = tp;
   for (int n : candidates) {
    if (n % tp != 0) continue;
    SHOAL_ASSIGN_OR_RETURN(LayoutPlan lp, EvaluateLayout(rt, n));
    if (!lp.fits) continue;
    if (!have_fit) {
      first_fit = lp;
      have_fit = true;
    }
    if (lp.tpot_met && lp.ttft_met) {
      out.smallest = lp;
      found = true;
      break;
    }
   }
   if (found || have_fit) break;
  }
  if (!found) {
    if (!have_fit)
      return ResourceExhausted("model '" + r.model.name + "' does not fit on up to 8192 " + r.hw.name +
                               " GPUs with " + r.weight_dtype + " weights");
    out.smallest = first_fit;  // fits memory, misses an SLO at every size tried
  }
  if (r.num_gpus > 0) {
    PlanRequest rc = r;
    if (rc.attn_tp == 0) rc.attn_tp = out.smallest.attn_tp;
    SHOAL_ASSIGN_OR_RETURN(out.chosen, EvaluateLayout(rc, r.num_gpus));
  } else {
    out.chosen = out.smallest;
  }
  const LayoutPlan& c = out.chosen.fits ? out.chosen : out.smallest;
  auto units = [&](double target, double per_gpu) {
    if (target <= 0 || per_gpu <= 0) return 0;
    const double gpus = std::ceil(target / per_gpu);
    return int(std::ceil(gpus / c.num_gpus) * c.num_gpus);  // whole deployment units
  };
  out.decode_gpus_for_load = units(r.target_output_tps, c.decode.tokens_per_s);
  out.prefill_gpus_for_load = units(r.target_input_tps, c.prefill.tokens_per_s);
  return out;
}

namespace {

nlohmann::json StepJson(const StepBreakdown& s) {
  // batch_tokens: tokens per GPU per step, as before MTP existed (= batch without drafts).
  return {{"batch", s.batch},             {"batch_tokens", s.tokens},   {"output_tokens_per_step", s.output_tokens},
          {"tpot_ms", s.tpot_ms},         {"step_ms", s.step_ms},       {"tokens_per_s_per_gpu", s.tokens_per_s},
          {"bound", s.bound},             {"compute_ms", s.compute_ms}, {"dense_ms", s.dense_ms},
          {"experts_ms", s.experts_ms},   {"attention_ms", s.attention_ms}, {"overhead_ms", s.overhead_ms},
          {"comm_ms", s.comm_ms},         {"ib_ms", s.net_ms},          {"nvlink_ms", s.nvlink_ms},
          {"hbm_bytes", s.hbm_bytes},     {"flops", s.flops},           {"ib_bytes", s.net_bytes},
          {"nvlink_bytes", s.nvlink_bytes}};
}

nlohmann::json LayoutJson(const LayoutPlan& l) {
  nlohmann::json j = {{"gpus", l.num_gpus}, {"nodes", l.nodes}, {"ep", l.num_gpus}, {"attn_tp", l.attn_tp},
                      {"fits", l.fits}};
  if (!l.fits) j["why"] = l.why;
  j["memory"] = {{"dense_weight_bytes_per_gpu", l.memory.dense_weight_bytes},
                 {"expert_weight_bytes_per_gpu", l.memory.expert_weight_bytes},
                 {"expert_slots_per_layer_per_gpu", l.memory.expert_slots_per_layer},
                 {"weight_bytes_per_gpu", l.memory.weight_bytes()},
                 {"usable_bytes_per_gpu", l.memory.usable_bytes},
                 {"kv_bytes_per_token", l.memory.kv_bytes_per_token},
                 {"kv_free_bytes_per_gpu", l.memory.kv_free_bytes},
                 {"kv_capacity_tokens_per_gpu", l.memory.kv_free_bytes / l.memory.kv_bytes_per_token},
                 {"max_sequences_per_gpu", l.memory.max_sequences}};
  if (l.fits) {
    j["decode"] = StepJson(l.decode);
    j["decode"]["batch_limit"] = l.decode_limit;
    j["decode"]["tpot_met"] = l.tpot_met;
    j["decode"]["tokens_per_s_per_node"] = l.decode.tokens_per_s * l.num_gpus / l.nodes;
    j["prefill"] = StepJson(l.prefill);
    j["prefill"]["ttft_ms"] = l.ttft_ms;
    j["prefill"]["ttft_met"] = l.ttft_met;
  }
  return j;
}

std::string Gib(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1 << 30));
  return buf;
}

}  // namespace

nlohmann::json PlanToJson(const PlanResult& p) {
  const PlanRequest& r = p.request;
  const Calibration& c = r.calib;
  nlohmann::json j;
  j["model"] = {{"name", r.model.name},
                {"notes", r.model.notes},
                {"total_params", p.params.total},
                {"active_params", p.params.active()},
                {"routed_expert_params", p.params.routed_total},
                {"kv", r.model.attn.kind == AttentionSpec::Kind::kMla ? "MLA latent" : "GQA"}};
  j["hardware"] = {{"name", r.hw.name},          {"hbm_bytes", r.hw.hbm_bytes}, {"hbm_bw", r.hw.hbm_bw},
                   {"bf16_flops", r.hw.bf16_flops}, {"fp8_flops", r.hw.fp8_flops}, {"nvlink_bw", r.hw.nvlink_bw},
                   {"net_bw", r.hw.net_bw},      {"gpus_per_node", r.hw.gpus_per_node}};
  j["workload"] = {{"weight_dtype", r.weight_dtype}, {"kv_dtype", r.kv_dtype},   {"input_len", r.input_len},
                   {"output_len", r.output_len},     {"decode_context", DecodeContext(r)},
                   {"ttft_ms", r.ttft_ms},           {"tpot_ms", r.tpot_ms},     {"overlap", r.overlap},
                   {"mtp_draft_tokens", r.mtp_draft_tokens}, {"mtp_accept", r.mtp_accept}};
  j["calibration"] = {{"hbm_eff", c.hbm_eff},         {"flops_eff", c.flops_eff},
                      {"net_eff", c.net_eff},         {"nvlink_eff", c.nvlink_eff},
                      {"expert_imbalance", c.expert_imbalance}, {"layer_overhead_us", c.layer_overhead_us},
                      {"a2a_latency_us", c.a2a_latency_us},     {"hbm_usable", c.hbm_usable},
                      {"overlap_eff", c.overlap_eff}};
  j["smallest"] = LayoutJson(p.smallest);
  j["chosen"] = LayoutJson(p.chosen);
  if (p.decode_gpus_for_load > 0) j["decode_gpus_for_load"] = p.decode_gpus_for_load;
  if (p.prefill_gpus_for_load > 0) j["prefill_gpus_for_load"] = p.prefill_gpus_for_load;
  return j;
}

std::string FormatPlan(const PlanResult& p) {
  const PlanRequest& r = p.request;
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "== %s on %s  (%.1fB params, %.1fB active; weights %s, KV %s %s; in %d / out %d tokens, decode ctx %.0f)\n",
                r.model.name.c_str(), r.hw.name.c_str(), p.params.total / 1e9, p.params.active() / 1e9,
                r.weight_dtype.c_str(), r.kv_dtype.c_str(),
                r.model.attn.kind == AttentionSpec::Kind::kMla ? "(MLA latent)" : "(GQA)", r.input_len, r.output_len,
                DecodeContext(r));
  o << buf;
  auto row = [&](const char* label, const LayoutPlan& l) {
    std::snprintf(buf, sizeof buf, "%-9s %5d GPUs / %3d nodes (EP%d, attn TP%d)", label, l.num_gpus, l.nodes,
                  l.num_gpus, l.attn_tp);
    o << buf << "\n";
    if (!l.fits) {
      o << "          does not fit: " << l.why << "\n";
      return;
    }
    const MemoryPlan& m = l.memory;
    std::snprintf(buf, sizeof buf,
                  "  memory   weights %s/GPU (dense %s + %d expert slots x %d layers %s), KV %.1f KiB/token, "
                  "KV room %s = %.0fk tokens%s = %d seqs\n",
                  Gib(m.weight_bytes()).c_str(), Gib(m.dense_weight_bytes).c_str(), m.expert_slots_per_layer,
                  r.model.num_moe_layers + (m.mtp_expert_bytes > 0 ? 1 : 0), Gib(m.expert_weight_bytes).c_str(),
                  m.kv_bytes_per_token / 1024,
                  Gib(m.kv_free_bytes).c_str(), m.kv_free_bytes / m.kv_bytes_per_token / 1e3,
                  r.model.num_chunked_layers > 0
                      ? (" in every layer (" + std::to_string(r.model.num_chunked_layers) + " chunked layers keep <= " +
                         std::to_string(r.model.attention_chunk_size) + " per sequence)").c_str()
                      : "",
                  m.max_sequences);
    o << buf;
    const StepBreakdown& d = l.decode;
    char combine[96];
    if (r.overlap) {
      std::snprintf(combine, sizeof combine, "overlapped: %.0f%% of the shorter hidden", 100 * r.calib.overlap_eff);
    } else {
      std::snprintf(combine, sizeof combine, "in sequence");
    }
    char mtp[96] = "";
    if (r.mtp_draft_tokens > 0) {
      std::snprintf(mtp, sizeof mtp, " + %d MTP draft%s each, %.2f tokens out per step, TPOT %.1f ms", r.mtp_draft_tokens,
                    r.mtp_draft_tokens > 1 ? "s" : "", d.batch > 0 ? d.output_tokens / d.batch : 0.0, d.tpot_ms);
    }
    std::snprintf(buf, sizeof buf,
                  "  decode   batch %d/GPU%s (limit: %s%s)\n           step %.1f ms: compute %.1f [dense %.1f, experts %.1f, "
                  "attn %.1f, overhead %.1f], a2a %.1f [IB %.1f, NVLink %.1f], %s\n"
                  "           %.0f tok/s/GPU, %.0f tok/s/node, bound by %s\n",
                  d.batch, mtp, l.decode_limit.c_str(), l.tpot_met ? "" : ", TPOT SLO NOT MET even at batch 1", d.step_ms,
                  d.compute_ms, d.dense_ms, d.experts_ms, d.attention_ms, d.overhead_ms, d.comm_ms, d.net_ms,
                  d.nvlink_ms, combine, d.tokens_per_s, d.tokens_per_s * l.num_gpus / l.nodes, d.bound.c_str());
    o << buf;
    const StepBreakdown& f = l.prefill;
    std::snprintf(buf, sizeof buf,
                  "  prefill  %d tokens/GPU per step, %.1f ms (TTFT ~%.0f ms%s), %.0f tok/s/GPU, bound by %s\n",
                  f.batch, f.step_ms, l.ttft_ms, l.ttft_met ? "" : ", TTFT SLO NOT MET", f.tokens_per_s,
                  f.bound.c_str());
    o << buf;
  };
  row("smallest", p.smallest);
  if (p.chosen.num_gpus != p.smallest.num_gpus) row("chosen", p.chosen);
  if (p.decode_gpus_for_load > 0)
    o << "  load     decode needs " << p.decode_gpus_for_load << " GPUs for " << r.target_output_tps
      << " output tok/s\n";
  if (p.prefill_gpus_for_load > 0)
    o << "  load     prefill needs " << p.prefill_gpus_for_load << " GPUs for " << r.target_input_tps
      << " input tok/s\n";
  return o.str();
}

}  // namespace shoal::plan
