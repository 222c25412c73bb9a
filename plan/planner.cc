// The planner's arithmetic. See planner.h for the model; docs/plan.md for the assumptions, sources
// and the validation against published deployments.
#include "plan/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace shoal::plan {

double DecodeContext(const PlanRequest& r) {
  return r.decode_context > 0 ? r.decode_context : r.input_len + r.output_len / 2.0;
}

double ExpertImbalance(const PlanRequest& r, int n) {
  if (!r.calib.measured_load) return r.calib.expert_imbalance;
  return std::max(1.0, r.calib.measured_load->BalancedImbalance(std::max(1, n)));
}

namespace {

int DtypeBytes(const std::string& d) { return d == "fp8" ? 1 : 2; }

double ExpFlops(const PlanRequest& r) {
  return (r.weight_dtype == "fp8" ? r.hw.fp8_flops : r.hw.bf16_flops) * r.calib.flops_eff;
}
// Attention cores run in BF16 (FlashMLA / FlashAttention-3 BF16) whatever the KV dtype.
double AttnFlops(const PlanRequest& r) { return r.hw.bf16_flops * r.calib.flops_eff; }
double Bw(const PlanRequest& r) { return r.hw.hbm_bw * r.calib.hbm_eff; }

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
  const double total = r.model.num_moe_layers * tokens * ExpertImbalance(r, n) * per_token;
  const int gpn = std::min(r.hw.gpus_per_node, n);
  c.net_bytes = total * double(n - gpn) / n;  // destinations on other nodes
  c.nvl_bytes = total * double(gpn - 1) / n;  // same node, other GPU
  c.net_s = c.net_bytes / (r.hw.net_bw * r.calib.net_eff);
  c.nvl_s = c.nvl_bytes / (r.hw.nvlink_bw * r.calib.nvlink_eff);
  c.total_s = std::max(c.net_s, c.nvl_s) + r.model.num_moe_layers * 2.0 * micro_batches * r.calib.a2a_latency_us * 1e-6;
  return c;
}

// The TP collectives the engine runs per step (worker/engine.cc), on NVLink: every layer all-reduces
// its o_proj partial sums; a dense layer all-reduces its MLP's; a MoE layer brings each rank's 1/T of
// the tokens back to the replica by an all-gather (half an all-reduce's bytes), or by one all-reduce
// that also sums the shared expert's partial sums when it has one.
double TpAllReduceSeconds(const PlanRequest& r, double tokens_per_group) {
  if (r.attn_tp <= 1) return 0;
  const double all_reduce = 2.0 * (r.attn_tp - 1) / r.attn_tp * tokens_per_group * r.model.hidden_size * 2.0;
  const int moe = r.model.num_moe_layers, dense = r.model.num_layers - moe;
  const double moe_out = CountParams(r.model).shared_per_moe_layer > 0 ? all_reduce : all_reduce / 2;
  const double bytes = r.model.num_layers * all_reduce + dense * all_reduce + moe * moe_out;
  return bytes / (r.hw.nvlink_bw * r.calib.nvlink_eff);
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
  if (c.measured_load &&
      (c.measured_load->experts != r.model.num_experts || c.measured_load->layers != r.model.num_layers)) {
    return InvalidArgument("the measured expert load has " + std::to_string(c.measured_load->layers) + " layers of " +
                           std::to_string(c.measured_load->experts) + " experts, the model " +
                           std::to_string(r.model.num_layers) + " of " + std::to_string(r.model.num_experts) +
                           ": measure this model");
  }
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
  Term experts{(1 + draft) * 2.0 * p.routed_active * t * ExpertImbalance(r, n) / ExpFlops(r), expert_bytes / Bw(r)};
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
  Term experts{2.0 * p.routed_active * tokens * ExpertImbalance(r, n) / ExpFlops(r),
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
    lp.decode_limit = "engine.max_num_seqs";
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
  QueuedTtft(r, c, std::max(out.prefill_gpus_for_load, c.num_gpus), &out.prefill_utilization, &out.ttft_queued_ms);
  return out;
}

void QueuedTtft(const PlanRequest& r, const LayoutPlan& l, int gpus, double* utilization, double* ttft_ms) {
  *utilization = 0;
  *ttft_ms = l.ttft_ms;
  if (r.target_input_tps <= 0 || l.prefill.tokens_per_s <= 0 || gpus <= 0) return;
  // Prompts arrive at target_input_tps over `gpus`; a prefill step is the service time of an M/D/1
  // queue, whose mean wait is rho / (2 (1 - rho)) services.
  const double rho = r.target_input_tps / (l.prefill.tokens_per_s * gpus);
  *utilization = rho;
  *ttft_ms = rho < 1 ? l.ttft_ms * (1 + rho / (2 * (1 - rho))) : std::numeric_limits<double>::infinity();
}

StatusOr<std::vector<SweepRow>> Sweep(const PlanRequest& r, const PlanResult& p) {
  PlanRequest rt = r;
  rt.attn_tp = p.smallest.attn_tp;
  std::vector<SweepRow> rows;
  for (int n = p.smallest.num_gpus; n <= 8192 && rows.size() < 5; n *= 2) {
    SweepRow row;
    SHOAL_ASSIGN_OR_RETURN(row.layout, EvaluateLayout(rt, n));
    const LayoutPlan& l = row.layout;
    row.gpus_for_load = n;
    if (l.fits && (r.target_output_tps > 0 || r.target_input_tps > 0)) {
      // Prefill and decode share the GPUs: each needs its share of GPU time, in whole deployments of n.
      double gpus = 0;
      if (r.target_output_tps > 0 && l.decode.tokens_per_s > 0) gpus += r.target_output_tps / l.decode.tokens_per_s;
      if (r.target_input_tps > 0 && l.prefill.tokens_per_s > 0) gpus += r.target_input_tps / l.prefill.tokens_per_s;
      row.gpus_for_load = static_cast<int>(std::ceil(gpus / n) * n);
    }
    double rho = 0;
    QueuedTtft(r, l, row.gpus_for_load, &rho, &row.ttft_queued_ms);
    row.meets_slos = l.fits && l.tpot_met && (r.ttft_ms <= 0 || row.ttft_queued_ms <= r.ttft_ms);
    rows.push_back(std::move(row));
  }
  SweepRow* best = nullptr;
  for (SweepRow& row : rows) {
    if (row.meets_slos && (best == nullptr || row.gpus_for_load < best->gpus_for_load)) best = &row;
  }
  if (best != nullptr) best->cheapest = true;
  return rows;
}

}  // namespace shoal::plan
