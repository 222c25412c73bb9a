// `shoal plan`'s output: the table (headed by its assumptions), JSON, the sweep, and the shoal config
// and sbatch line for a planned layout. The arithmetic is in planner.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "plan/planner.h"

namespace shoal::plan {

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
  if (b >= 0.1 * (1 << 30) || b == 0) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1 << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1 << 20));
  }
  return buf;
}

// 0.42B, 37.0B, 1.0T, 12.3M: parameter counts from a tiny test model to a frontier one.
std::string Count(double n) {
  char buf[32];
  if (n >= 1e12) std::snprintf(buf, sizeof buf, "%.1fT", n / 1e12);
  else if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.1fB", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  else std::snprintf(buf, sizeof buf, "%.0fK", n / 1e3);
  return buf;
}

// The published checks (docs/plan.md): the planner was +4 % (SGLang, 96 H100) and +27 % (DeepSeek,
// EP144 on H800) above measured decode throughput, so measured / planned spans about this band.
constexpr double kBandLow = 1 / 1.27, kBandHigh = 1 / 1.04;

struct Assumption {
  std::string what;
  bool implemented;  // does shoal's own GPU engine do this today?
  std::string note;
};

// Every assumption behind the figures, and whether shoal serves that way today: where it does not,
// the figures are what a system that does would reach (vLLM, SGLang, DeepSeek's), not shoal.
// attn_tp: the planned layout's (the request's may be 0, auto).
std::vector<Assumption> Assumptions(const PlanRequest& r, int attn_tp) {
  const bool mla = r.model.attn.kind == AttentionSpec::Kind::kMla;
  char buf[160];
  std::vector<Assumption> a;
  a.push_back({"weights " + r.weight_dtype + " (" + r.weight_dtype_source + ")", r.weight_dtype == "bf16",
               r.weight_dtype == "fp8" ? "shoal's GPU engine computes in bf16 (FP8 runs on CPU only so far)" : ""});
  a.push_back({"KV cache " + r.kv_dtype + (mla ? ", MLA latent" : ""), r.kv_dtype == "bf16" && !mla,
               mla ? "MLA runs on shoal's CPU engine only so far"
                   : (r.kv_dtype == "fp8" ? "shoal keeps the KV cache in bf16" : "")});
  std::snprintf(buf, sizeof buf, "two-micro-batch overlap of compute and all-to-all (%.0f%% of the shorter hidden)",
                100 * r.calib.overlap_eff);
  a.push_back({r.overlap ? buf : "no compute/all-to-all overlap", !r.overlap,
               r.overlap ? "shoal runs them in sequence: --no-overlap plans that" : ""});
  if (r.calib.measured_load) {
    std::snprintf(buf, sizeof buf, "expert load from measured routing (%llu tokens): the busiest GPU's share over the mean "
                  "computed per layout, balanced expert ranges", static_cast<unsigned long long>(r.calib.measured_load->Total()));
    a.push_back({buf, false, "serving places experts in balanced ranges too: no rebalancing while serving yet"});
  } else {
    std::snprintf(buf, sizeof buf, "expert load %.2f x the mean on the busiest GPU (after balancing)",
                  r.calib.expert_imbalance);
    a.push_back({buf, false, "shoal places experts by a fixed rule and has no load balancer yet: expect more on skewed traffic"});
  }
  if (r.mtp_draft_tokens > 0) {
    a.push_back({"MTP with " + std::to_string(r.mtp_draft_tokens) + " draft token(s)", false,
                 "shoal has no speculative decoding yet"});
  }
  if (attn_tp > 1) {
    a.push_back({"attention TP" + std::to_string(attn_tp) +
                     (r.model.attn.kind == AttentionSpec::Kind::kMla ? " (the MLA latent cache on each of the TP GPUs)" : ""),
                 false, "shoal's CPU engine splits attention (parallel.attention_tp); its GPU engine does not yet"});
  }
  return a;
}

std::string AssumptionLines(const PlanRequest& r, int attn_tp) {
  std::string out;
  for (const Assumption& a : Assumptions(r, attn_tp)) {
    out += std::string(a.implemented ? "  assumes  " : "  WARNING  ") + a.what +
           (a.implemented ? "" : (a.note.empty() ? "" : ": " + a.note)) + "\n";
  }
  return out;
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
  j["workload"] = {{"weight_dtype", r.weight_dtype}, {"weight_dtype_source", r.weight_dtype_source}, {"kv_dtype", r.kv_dtype},   {"input_len", r.input_len},
                   {"output_len", r.output_len},     {"decode_context", DecodeContext(r)},
                   {"ttft_ms", r.ttft_ms},           {"tpot_ms", r.tpot_ms},     {"overlap", r.overlap},
                   {"mtp_draft_tokens", r.mtp_draft_tokens}, {"mtp_accept", r.mtp_accept}};
  j["calibration"] = {{"hbm_eff", c.hbm_eff},         {"flops_eff", c.flops_eff},
                      {"net_eff", c.net_eff},         {"nvlink_eff", c.nvlink_eff},
                      {"expert_imbalance", ExpertImbalance(r, (p.chosen.fits ? p.chosen : p.smallest).num_gpus)},
                      {"expert_imbalance_measured", c.measured_load != nullptr}, {"layer_overhead_us", c.layer_overhead_us},
                      {"a2a_latency_us", c.a2a_latency_us},     {"hbm_usable", c.hbm_usable},
                      {"overlap_eff", c.overlap_eff}};
  j["smallest"] = LayoutJson(p.smallest);
  j["chosen"] = LayoutJson(p.chosen);
  if (p.decode_gpus_for_load > 0) j["decode_gpus_for_load"] = p.decode_gpus_for_load;
  if (p.prefill_gpus_for_load > 0) j["prefill_gpus_for_load"] = p.prefill_gpus_for_load;
  if (r.target_input_tps > 0) {
    j["prefill_utilization"] = p.prefill_utilization;
    j["ttft_queued_ms"] = std::isfinite(p.ttft_queued_ms) ? nlohmann::json(p.ttft_queued_ms) : nlohmann::json(nullptr);
  }
  j["assumptions"] = nlohmann::json::array();
  for (const Assumption& a : Assumptions(r, (p.chosen.fits ? p.chosen : p.smallest).attn_tp)) {
    j["assumptions"].push_back({{"what", a.what}, {"shoal_implements", a.implemented}, {"note", a.note}});
  }
  j["published_checks_band"] = {kBandLow, kBandHigh};
  return j;
}

std::string FormatPlan(const PlanResult& p) {
  const PlanRequest& r = p.request;
  std::ostringstream o;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "== %s on %s  (%s params, %s active; weights %s, KV %s %s; in %d / out %d tokens, decode ctx %.0f)\n",
                r.model.name.c_str(), r.hw.name.c_str(), Count(p.params.total).c_str(), Count(p.params.active()).c_str(),
                r.weight_dtype.c_str(), r.kv_dtype.c_str(),
                r.model.attn.kind == AttentionSpec::Kind::kMla ? "(MLA latent)" : "(GQA)", r.input_len, r.output_len,
                DecodeContext(r));
  o << buf;
  const LayoutPlan& planned = p.chosen.fits ? p.chosen : p.smallest;
  o << AssumptionLines(r, planned.attn_tp);
  std::snprintf(buf, sizeof buf,
                "  accuracy the published checks (docs/plan.md) measured %.2f-%.2f x these decode figures\n", kBandLow,
                kBandHigh);
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
    if (l.attn_tp > 1) {
      // What makes attention TP necessary: the same GPUs with data-parallel attention.
      PlanRequest dp = r;
      dp.attn_tp = 1;
      auto one = EvaluateLayout(dp, l.num_gpus);
      if (one.ok() && !one->fits) o << "  why TP" << l.attn_tp << " with data-parallel attention: " << one->why << "\n";
    }
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
                  "  decode   batch %d/GPU%s (limit: %s%s)\n           step %.1f ms: GPU work %.1f [dense %.1f, experts %.1f, "
                  "attn %.1f, overhead %.1f], a2a %.1f [IB %.1f, NVLink %.1f], %s\n"
                  "           %.0f tok/s/GPU, %.0f tok/s/node, bound by %s\n",
                  d.batch, mtp, l.decode_limit.c_str(), l.tpot_met ? "" : ", TPOT SLO NOT MET even at batch 1", d.step_ms,
                  d.compute_ms, d.dense_ms, d.experts_ms, d.attention_ms, d.overhead_ms, d.comm_ms, d.net_ms,
                  d.nvlink_ms, combine, d.tokens_per_s, d.tokens_per_s * l.num_gpus / l.nodes, d.bound.c_str());
    o << buf;
    const StepBreakdown& f = l.prefill;
    std::snprintf(buf, sizeof buf,
                  "  prefill  %d tokens/GPU per step, %.1f ms (TTFT ~%.0f ms before queueing%s), %.0f tok/s/GPU, "
                  "bound by %s\n",
                  f.batch, f.step_ms, l.ttft_ms, l.ttft_met ? "" : ", TTFT SLO NOT MET", f.tokens_per_s, f.bound.c_str());
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
  if (r.target_input_tps > 0) {
    if (std::isfinite(p.ttft_queued_ms)) {
      std::snprintf(buf, sizeof buf, "  queue    prefill %.0f%% busy at that load: TTFT ~%.0f ms with queueing (M/D/1)\n",
                    100 * p.prefill_utilization, p.ttft_queued_ms);
    } else {
      std::snprintf(buf, sizeof buf, "  queue    prefill saturated at that load: TTFT grows without bound\n");
    }
    o << buf;
  }
  return o.str();
}


std::string FormatSweep(const PlanResult& p, const std::vector<SweepRow>& rows) {
  const PlanRequest& r = p.request;
  std::ostringstream o;
  char buf[256];
  const bool load = r.target_output_tps > 0 || r.target_input_tps > 0;
  o << "sweep (attn TP" << p.smallest.attn_tp << "; * = the fewest GPUs " << (load ? "for the load " : "")
    << "that meet the SLOs)\n";
  std::snprintf(buf, sizeof buf, "  %5s %5s %9s %9s %9s %12s %13s %10s  %s\n", "GPUs", "nodes", "batch/GPU", "TPOT ms",
                "TTFT ms", "tok/s/GPU", "tok/s total", load ? "GPUs@load" : "", "SLOs");
  o << buf;
  for (const SweepRow& s : rows) {
    const LayoutPlan& l = s.layout;
    if (!l.fits) {
      std::snprintf(buf, sizeof buf, "  %5d %5d  does not fit: %s\n", l.num_gpus, l.nodes, l.why.c_str());
      o << buf;
      continue;
    }
    std::snprintf(buf, sizeof buf, "%c %5d %5d %9d %9.1f %9.0f %12.0f %13.0f %10s  %s\n", s.cheapest ? '*' : ' ',
                  l.num_gpus, l.nodes, l.decode.batch, l.decode.tpot_ms, s.ttft_queued_ms, l.decode.tokens_per_s,
                  l.decode.tokens_per_s * l.num_gpus, load ? std::to_string(s.gpus_for_load).c_str() : "",
                  s.meets_slos ? "met" : "missed");
    o << buf;
  }
  return o.str();
}

nlohmann::json SweepToJson(const std::vector<SweepRow>& rows) {
  nlohmann::json a = nlohmann::json::array();
  for (const SweepRow& s : rows) {
    nlohmann::json j = LayoutJson(s.layout);
    j["gpus_for_load"] = s.gpus_for_load;
    j["ttft_queued_ms"] = std::isfinite(s.ttft_queued_ms) ? nlohmann::json(s.ttft_queued_ms) : nlohmann::json(nullptr);
    j["meets_slos"] = s.meets_slos;
    j["cheapest"] = s.cheapest;
    a.push_back(std::move(j));
  }
  return a;
}

std::string LayoutConfigYaml(const PlanResult& p, const LayoutPlan& l, const std::string& model_path) {
  const PlanRequest& r = p.request;
  std::ostringstream o;
  o << "# Written by `shoal plan`: " << r.model.name << " on " << l.num_gpus << " " << r.hw.name << " GPUs ("
    << l.nodes << " node(s), EP" << l.num_gpus << "), one rank per GPU; planned decode batch " << l.decode.batch
    << "/GPU, " << static_cast<long long>(l.decode.tokens_per_s * l.num_gpus) << " output tok/s.\n";
  for (const Assumption& a : Assumptions(r, l.attn_tp)) {
    if (!a.implemented && !a.note.empty()) o << "# Planned assuming " << a.what << ": " << a.note << ".\n";
  }
  o << "# Run: " << SbatchCommand(p, l, "THIS_FILE.yaml") << "\n";
  if (!model_path.empty()) o << "model:\n  path: " << model_path << "\n";
  // One scheduler per attention replica: its T GPUs share the replica's sequences.
  o << "engine:\n  device: cuda\n  max_num_seqs: " << std::max(1, l.decode.batch) * std::max(1, l.attn_tp)
    << "\n  max_step_tokens: " << std::max(r.prefill_chunk, r.input_len)
    << "\n  max_model_len: " << r.input_len + r.output_len << "\n";
  char frac[32];
  std::snprintf(frac, sizeof frac, "%.2f", r.calib.hbm_usable);
  o << "kv_cache:\n  block_size: 16\n  memory_fraction: " << frac << "\n";
  o << "server:\n  host: 127.0.0.1     # 0.0.0.0 and server.api_keys to serve other machines\n  port: 8000\n";
  o << "cluster:\n  groups: 1\n  ranks_per_group: " << l.num_gpus << "\n";
  o << "parallel:\n  collective_timeout_ms: 120000\n  startup_timeout_s: 1800\n  attention_tp: " << std::max(1, l.attn_tp)
    << "\n";
  return o.str();
}

std::string SbatchCommand(const PlanResult& p, const LayoutPlan& l, const std::string& config_file) {
  (void)p;
  // --ntasks, not nodes × tasks per node: a count that is not a whole number of nodes stays exact.
  return "sbatch --nodes=" + std::to_string(l.nodes) + " --ntasks=" + std::to_string(l.num_gpus) +
         " --gpus-per-task=1 deploy/slurm/shoal.sbatch " + config_file;
}

}  // namespace shoal::plan
