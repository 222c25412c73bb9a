// The capacity planner behind `shoal plan`: an analytical (roofline) model of MoE serving with
// expert parallelism, for sizing clusters without them.
//
// Layout: N GPUs in ceil(N / gpus_per_node) nodes; routed experts split over all N (EP = N, each GPU
// holds ceil(E / N) expert slots per MoE layer, spare slots holding redundant copies as DeepSeek's
// EPLB does); everything else (attention, dense MLP, shared experts, embeddings) is replicated on
// every GPU (data-parallel attention) or split over `attn_tp` GPUs.
//
// Decode step at b tokens per GPU (one per running sequence), average context C:
//   weights read   dense part + the distinct local experts hit by the b*N*top_k routings
//   KV read        b * C * kv bytes/token (MLA: the compressed latent); with MTP each sequence runs
//                  1 + d tokens per step (FLOPs and all-to-all grow with them, the KV is read once)
//   FLOPs          2 * active params * b (+ expert imbalance) and attention b * C * flops/ctx-token
//   all-to-all     b * top_k * hidden * (dispatch bytes + 2 combine bytes) per MoE layer, split into
//                  the part leaving the node (IB) and the part staying (NVLink)
//   compute time   sum over kernel classes (dense GEMMs, expert GEMMs, attention) of
//                  max(FLOPs / achieved FLOP/s, bytes / achieved HBM bandwidth), + per-layer overhead
//   step time      overlap (two micro-batches, DeepSeek/SGLang style): the longer of compute and comm
//                  plus the part of the shorter one that is not hidden, (1 - overlap_eff) of it, with
//                  the weights read once per micro-batch; otherwise compute + comm.
// The batch grows until KV capacity, the TPOT SLO or --max-batch stops it. Prefill is the same
// accounting over a chunk of prompt tokens (compute-bound in practice) with a TTFT check.
// All numbers are per GPU. Contract: pure functions, no I/O; bad inputs give InvalidArgument.
#pragma once

#include <memory>

#include "comm/expert_load.h"

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "plan/hardware.h"
#include "plan/model_preset.h"

namespace shoal::plan {

// Achieved fractions of the datasheet peaks and other empirical constants. One set of defaults for
// every model and machine; override with measured numbers (e.g. `shoal bench a2a` busbw / NIC peak).
struct Calibration {
  double hbm_eff = 0.80;        // achieved / peak HBM bandwidth (decode GEMV, FlashMLA ~ 0.8-0.9)
  double flops_eff = 0.60;      // achieved / peak dense tensor FLOP/s (grouped GEMM, attention)
  double net_eff = 0.78;        // achieved / peak NIC bandwidth in all-to-all (DeepEP LL: ~39 of 50 GB/s)
  double nvlink_eff = 0.80;     // achieved / peak NVLink bandwidth in all-to-all
  double expert_imbalance = 1.30;  // hottest GPU's expert load / mean, after load balancing
  // A measured routing distribution (`--calibrate` with a saved GET /v1/expert_load): the imbalance
  // is then computed for each layout's GPU count (balanced expert ranges), replacing expert_imbalance.
  std::shared_ptr<const comm::ExpertLoad> measured_load;
  double layer_overhead_us = 20;   // per layer per micro-batch: norms, routing, launches, sync
  double a2a_latency_us = 10;      // fixed cost per all-to-all phase (dispatch or combine)
  double hbm_usable = 0.90;        // fraction of HBM for weights + KV (rest: activations, graphs, fragmentation)
  // With two-micro-batch overlap, the fraction of the shorter of compute and comm that hides behind
  // the longer (1 = max(compute, comm); 0 = their sum). 0.74 reproduces SGLang's measured two-batch
  // overlap speedup in decode (x1.255 at 256 tokens/GPU, DeepSeek-V3 on 72 H100s; docs/plan.md).
  double overlap_eff = 0.74;
};

struct PlanRequest {
  ModelSpec model;
  HardwareSpec hw;
  std::string weight_dtype = "fp8";  // bf16 | fp8 (fp8 also sets FP8 GEMMs and FP8 dispatch)
  std::string weight_dtype_source = "--weight-dtype";  // said in the report's header
  std::string kv_dtype = "bf16";     // bf16 | fp8
  int num_gpus = 0;                  // 0: search the smallest that fits
  int attn_tp = 0;                   // GPUs sharing one attention instance (TP); 1 = data-parallel attention;
                                     // 0 = auto (1, else the smallest power of two that fits)
  int input_len = 2000;
  int output_len = 500;
  double decode_context = 0;         // average KV length per decoded token; 0: input + output/2
  double ttft_ms = 0;                // 0: no SLO
  double tpot_ms = 0;                // 0: no SLO
  int max_batch_per_gpu = 0;         // engine.max_num_seqs (a rank's live sequences); 0: unlimited
  int prefill_chunk = 16384;         // prompt tokens per GPU per prefill step (at least one prompt)
  bool overlap = true;               // two-micro-batch comm/compute overlap
  // Multi-token prediction (speculative decoding with draft tokens, as DeepSeek-V3's MTP module): each
  // step runs 1 + mtp_draft_tokens tokens per sequence through the model and emits on average
  // 1 + a + a^2 + ... + a^d of them, a = mtp_accept (the chance each next draft is accepted).
  int mtp_draft_tokens = 0;
  double mtp_accept = 0.85;          // DeepSeek-V3 report: 85-90 % for the second token
  double target_output_tps = 0;      // optional load: total output tokens/s to serve
  double target_input_tps = 0;       // optional load: total prompt tokens/s to serve
  Calibration calib;
};

struct MemoryPlan {
  double dense_weight_bytes = 0;   // per GPU
  double expert_weight_bytes = 0;  // per GPU
  int expert_slots_per_layer = 0;  // per GPU
  double usable_bytes = 0;
  double kv_bytes_per_token = 0;   // whole model (MTP layer included), one sequence token, before any TP split
  double mtp_dense_bytes = 0;      // the MTP module's share of dense_weight_bytes (0 without --mtp)
  double mtp_expert_bytes = 0;     // its share of expert_weight_bytes
  double kv_free_bytes = 0;        // per GPU
  int max_sequences = 0;           // per GPU at the decode context (0: does not fit)
  double weight_bytes() const { return dense_weight_bytes + expert_weight_bytes; }
};

struct StepBreakdown {
  int batch = 0;            // decode: sequences per GPU; prefill: prompt tokens per GPU (per step)
  double tokens = 0;        // tokens through the model per GPU per step (decode with MTP: batch x (1 + drafts))
  double output_tokens = 0; // tokens emitted per GPU per step (decode with MTP: the accepted ones)
  double tpot_ms = 0;       // decode: what a user sees per output token (step / accepted tokens per sequence)
  double dense_ms = 0, experts_ms = 0, attention_ms = 0, overhead_ms = 0, compute_ms = 0;
  double net_ms = 0, nvlink_ms = 0, comm_ms = 0, step_ms = 0;
  double hbm_bytes = 0, flops = 0, net_bytes = 0, nvlink_bytes = 0;
  double tokens_per_s = 0;  // per GPU
  std::string bound;        // the term that sets the step: "HBM bandwidth", "compute", "all-to-all (IB)", ...
};

struct LayoutPlan {
  int num_gpus = 0, nodes = 0, attn_tp = 1;
  bool fits = false;
  std::string why;          // when !fits
  MemoryPlan memory;
  StepBreakdown decode;
  std::string decode_limit;  // what stopped the batch: "KV capacity", "TPOT SLO", "max batch"
  bool tpot_met = true;
  StepBreakdown prefill;     // batch = prompt tokens per GPU per step
  double ttft_ms = 0;
  bool ttft_met = true;
};

struct PlanResult {
  PlanRequest request;
  ParamCounts params;
  LayoutPlan smallest;            // smallest layout that fits memory (and the SLOs if any can)
  LayoutPlan chosen;              // --gpus if given, else == smallest
  int decode_gpus_for_load = 0;   // GPUs to serve target_output_tps (0: no target)
  int prefill_gpus_for_load = 0;
  // TTFT with queueing at target_input_tps (M/D/1 over the prefill GPUs); without a target load, the
  // prefill step alone (no queue).
  double prefill_utilization = 0;
  double ttft_queued_ms = 0;
};

// One row of `shoal plan --sweep`: a GPU count (the smallest layout's, doubled up to 4 times).
struct SweepRow {
  LayoutPlan layout;
  int gpus_for_load = 0;     // with a target load: GPUs (whole deployments) serving it, prefill and decode
                             // on the same GPUs; else the layout's own
  double ttft_queued_ms = 0;
  bool meets_slos = false;   // fits, TPOT and (queued) TTFT within the SLOs
  bool cheapest = false;     // the fewest GPUs for the load among those that meet the SLOs
};

Status ValidateRequest(const PlanRequest& r);
// One layout, evaluated. Errors only for invalid requests; a layout that does not fit is fits=false.
StatusOr<LayoutPlan> EvaluateLayout(const PlanRequest& r, int num_gpus);
// The busiest GPU's expert load over the mean at n GPUs: from the measured routing (balanced expert
// ranges over n) when the calibration has one, else its expert_imbalance.
double ExpertImbalance(const PlanRequest& r, int n);
// Decode step at a given batch (exposed for tests).
StepBreakdown DecodeStep(const PlanRequest& r, int num_gpus, int batch);
StatusOr<PlanResult> Plan(const PlanRequest& r);
// The average KV length a decoded token sees: decode_context, or input + output / 2.
double DecodeContext(const PlanRequest& r);
// *ttft_ms: layout l's TTFT with the queueing target_input_tps causes when `gpus` GPUs serve it.
void QueuedTtft(const PlanRequest& r, const LayoutPlan& l, int gpus, double* utilization, double* ttft_ms);
// `--sweep`: the plan's smallest layout and up to four doublings, the cheapest that meets the SLOs marked.
StatusOr<std::vector<SweepRow>> Sweep(const PlanRequest& r, const PlanResult& p);

// Output (plan/plan_report.cc).
nlohmann::json PlanToJson(const PlanResult& p);
// The table, headed by every assumption and whether shoal implements it today (warnings if not), and
// the error band of the published checks.
std::string FormatPlan(const PlanResult& p);
std::string FormatSweep(const PlanResult& p, const std::vector<SweepRow>& rows);
nlohmann::json SweepToJson(const std::vector<SweepRow>& rows);
// `--emit-config`: shoal's YAML for layout `l` (model.path when model_path is not empty), and the
// sbatch command that runs it with deploy/slurm/shoal.sbatch.
std::string LayoutConfigYaml(const PlanResult& p, const LayoutPlan& l, const std::string& model_path);
std::string SbatchCommand(const PlanResult& p, const LayoutPlan& l, const std::string& config_file);

}  // namespace shoal::plan
