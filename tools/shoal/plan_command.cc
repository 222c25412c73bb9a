// `shoal plan`: size a cluster for a model before buying it. Evaluates the analytical model in
// plan/planner.h for one or more models on one hardware preset and prints a table per model (or
// JSON with --json). Nothing here touches a GPU.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "plan/calibration.h"
#include "plan/hardware.h"
#include "plan/model_preset.h"
#include "plan/planner.h"
#include "tools/shoal/commands.h"

namespace shoal::cli {

namespace {

struct PlanOptions {
  std::vector<std::string> presets;  // --preset: built-in model presets ('all' = every one)
  std::vector<std::string> models;   // --model: checkpoint directories or config.json files
  std::string hardware = "h100";
  std::string hardware_file;
  plan::PlanRequest req;
  bool json = false;
  bool list = false;
  bool sweep = false;
  std::string emit_config;   // --emit-config FILE
  std::string weight_dtype;  // --weight-dtype; empty: the model's (checkpoint or preset)
  std::vector<std::string> calibrate;     // benchmark JSON files (plan/calibration.h)
  bool hbm_eff_given = false, flops_eff_given = false, layer_overhead_given = false, net_eff_given = false;  // win over --calibrate
};

Status RunPlan(const PlanOptions& o) {
  plan::HardwareTable table = plan::BuiltinHardware();
  if (!o.hardware_file.empty()) SHOAL_RETURN_IF_ERROR(plan::ApplyHardwareFile(o.hardware_file, &table));
  if (o.list) {
    std::printf("models:");
    for (const auto& n : plan::ModelPresetNames()) std::printf(" %s", n.c_str());
    std::printf("\nhardware:");
    for (const auto& n : plan::HardwarePresetNames(table)) std::printf(" %s", n.c_str());
    std::printf("\n");
    return Status::Ok();
  }
  // --model means a checkpoint in every subcommand; presets have their own flag.
  const std::vector<std::string> preset_names = plan::ModelPresetNames();
  std::vector<std::string> models;
  for (const std::string& p : o.presets) {
    if (p == "all") {
      models.insert(models.end(), preset_names.begin(), preset_names.end());
    } else if (std::find(preset_names.begin(), preset_names.end(), p) == preset_names.end()) {
      return NotFound("--preset " + p + ": no such preset (--list shows them; a checkpoint goes to --model)");
    } else {
      models.push_back(p);
    }
  }
  for (const std::string& m : o.models) {
    std::error_code ec;
    if (!std::filesystem::exists(m, ec)) {
      const bool is_preset = std::find(preset_names.begin(), preset_names.end(), m) != preset_names.end() || m == "all";
      return NotFound("--model " + m + ": no such checkpoint directory or config.json" +
                      (is_preset ? " (a preset: use --preset " + m + ")" : ""));
    }
    models.push_back(m);
  }
  if (models.empty()) {
    return InvalidArgument("no model: pass --preset NAME (or 'all'; --list shows them) or --model DIR|config.json");
  }
  SHOAL_ASSIGN_OR_RETURN(plan::HardwareSpec hw, plan::FindHardware(table, o.hardware));
  plan::Calibration calib = o.req.calib;
  std::vector<plan::CalibrationSource> sources;
  for (const std::string& file : o.calibrate) {
    SHOAL_ASSIGN_OR_RETURN(plan::CalibrationSource src, plan::CalibrateFromBenchFile(file, hw));
    for (const std::string& n : src.notes) {
      std::fprintf(stderr, "shoal plan: %s measured %s (%s, taken as %s)\n", file.c_str(), n.c_str(), src.device.c_str(),
                   hw.name.c_str());
    }
    sources.push_back(std::move(src));
  }
  // On stderr: --json output stays one JSON document.
  for (const std::string& a : plan::ApplyCalibration(sources, &calib)) std::fprintf(stderr, "shoal plan: %s\n", a.c_str());
  // Explicit flags win over measurements.
  if (o.hbm_eff_given) calib.hbm_eff = o.req.calib.hbm_eff;
  if (o.flops_eff_given) calib.flops_eff = o.req.calib.flops_eff;
  if (o.layer_overhead_given) calib.layer_overhead_us = o.req.calib.layer_overhead_us;
  if (o.net_eff_given) calib.net_eff = o.req.calib.net_eff;
  if (!o.emit_config.empty() && models.size() != 1) {
    return InvalidArgument("--emit-config writes one model's config: give one --preset or --model");
  }
  nlohmann::json all = nlohmann::json::array();
  for (const auto& name : models) {
    plan::PlanRequest r = o.req;
    r.calib = calib;
    r.hw = hw;
    SHOAL_ASSIGN_OR_RETURN(r.model, plan::LoadModelSpec(name));
    r.weight_dtype = o.weight_dtype.empty() ? r.model.weight_dtype : o.weight_dtype;
    r.weight_dtype_source = o.weight_dtype.empty() ? r.model.weight_dtype_source : "--weight-dtype";
    auto result = plan::Plan(r);
    if (!result.ok()) return result.status().WithContext(name);
    std::vector<plan::SweepRow> rows;
    if (o.sweep) {
      SHOAL_ASSIGN_OR_RETURN(rows, plan::Sweep(r, *result));
    }
    if (o.json) {
      nlohmann::json j = plan::PlanToJson(*result);
      if (o.sweep) j["sweep"] = plan::SweepToJson(rows);
      all.push_back(std::move(j));
    } else {
      std::fputs(plan::FormatPlan(*result).c_str(), stdout);
      if (o.sweep) std::fputs(plan::FormatSweep(*result, rows).c_str(), stdout);
      std::fputs("\n", stdout);
    }
    if (!o.emit_config.empty()) {
      // The cheapest of the sweep when there is one, else the chosen layout.
      const plan::LayoutPlan* layout = result->chosen.fits ? &result->chosen : &result->smallest;
      for (const plan::SweepRow& row : rows) {
        if (row.cheapest) layout = &row.layout;
      }
      std::error_code ec;
      const bool checkpoint = std::filesystem::exists(name, ec);
      std::string model_path;
      if (checkpoint) {
        std::filesystem::path dir = std::filesystem::absolute(name);
        if (!std::filesystem::is_directory(dir, ec)) dir = dir.parent_path();
        model_path = dir.lexically_normal().string();
      }
      std::ofstream out(o.emit_config);
      out << plan::LayoutConfigYaml(*result, *layout, model_path);
      if (!out.good()) return IoError("--emit-config " + o.emit_config + ": cannot write");
      std::fprintf(o.json ? stderr : stdout, "config for %d GPUs written to %s%s; run it with:\n  %s%s\n",
                   layout->num_gpus, o.emit_config.c_str(), checkpoint ? "" : " (add model.path, or SHOAL_MODEL=DIR)",
                   checkpoint ? "" : "SHOAL_MODEL=/path/to/checkpoint ",
                   plan::SbatchCommand(*result, *layout, o.emit_config).c_str());
    }
  }
  if (o.json) std::printf("%s\n", (all.size() == 1 ? all[0] : all).dump(2).c_str());
  return Status::Ok();
}

}  // namespace

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto opts = std::make_shared<PlanOptions>();
  plan::PlanRequest& q = opts->req;
  plan::Calibration& c = q.calib;
  CLI::App* cmd = app.add_subcommand("plan", "Capacity planner: GPUs, memory and throughput for a MoE model");
  cmd->add_option("--preset", opts->presets, "Model preset (--list shows them); repeatable; 'all' = every preset")
      ->take_all();
  cmd->add_option("--model", opts->models, "Checkpoint directory or its config.json (as served); repeatable")->take_all();
  cmd->add_option("--hardware", opts->hardware, "Hardware preset (h100, h200, b200, h800, or one from --hardware-file)");
  cmd->add_option("--hardware-file", opts->hardware_file, "YAML overriding/adding presets (see configs/hardware.yaml)");
  cmd->add_option("--weight-dtype", opts->weight_dtype, "bf16 | fp8")
      ->check(CLI::IsMember({"bf16", "fp8"}))
      ->default_str("the checkpoint's (quantization_config) or the preset's release");
  cmd->add_option("--kv-dtype", q.kv_dtype, "bf16 | fp8")->check(CLI::IsMember({"bf16", "fp8"}));
  cmd->add_option("--gpus", q.num_gpus, "GPUs (= EP size) to evaluate; 0 = only the smallest that fits")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--attn-tp", q.attn_tp, "Attention TP size; 1 = data-parallel attention; 0 = auto")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--input-len", q.input_len, "Prompt tokens per request")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--output-len", q.output_len, "Generated tokens per request")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--decode-context", q.decode_context, "Average KV length per decoded token (0 = input + output/2)")
      ->check(CLI::Range(0.0, 1e8));
  cmd->add_option("--ttft-ms", q.ttft_ms, "TTFT SLO in ms (0 = none)")->check(CLI::Range(0.0, 1e7));
  cmd->add_option("--tpot-ms", q.tpot_ms, "TPOT SLO in ms (0 = none)")->check(CLI::Range(0.0, 1e7));
  q.max_batch_per_gpu = 256;  // what configs/gpu-h100.yaml runs with
  cmd->add_option("--max-num-seqs", q.max_batch_per_gpu,
                  "Live sequences per GPU, as the engine's engine.max_num_seqs caps them (configs/gpu-h100.yaml: 256; "
                  "0 = no cap)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--prefill-chunk", q.prefill_chunk, "Prompt tokens per GPU per prefill step")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_flag("--no-overlap", [&q](int64_t) { q.overlap = false; }, "One micro-batch: comm and compute do not overlap (their sum)");
  cmd->add_option("--mtp", q.mtp_draft_tokens, "Draft tokens per sequence per decode step (multi-token prediction; 0 = off)")
      ->check(CLI::Range(0, 8));
  cmd->add_option("--mtp-accept", q.mtp_accept, "Chance each draft is accepted (DeepSeek-V3: 0.85-0.9)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--target-output-tps", q.target_output_tps, "Load: total output tokens/s to serve")
      ->check(CLI::Range(0.0, 1e12));
  cmd->add_option("--target-input-tps", q.target_input_tps, "Load: total prompt tokens/s to serve")
      ->check(CLI::Range(0.0, 1e12));
  cmd->add_option("--hbm-eff", c.hbm_eff, "Achieved fraction of peak HBM bandwidth")->capture_default_str();
  cmd->add_option("--flops-eff", c.flops_eff, "Achieved fraction of peak dense FLOP/s")->capture_default_str();
  cmd->add_option("--net-eff", c.net_eff, "Achieved fraction of NIC bandwidth in all-to-all (a fabric measurement, e.g. all-to-all busbw / NIC peak)")
      ->capture_default_str();
  cmd->add_option("--nvlink-eff", c.nvlink_eff, "Achieved fraction of NVLink bandwidth in all-to-all")
      ->capture_default_str();
  cmd->add_option("--expert-imbalance", c.expert_imbalance, "Hottest GPU's expert load / mean")->capture_default_str();
  cmd->add_option("--layer-overhead-us", c.layer_overhead_us, "Fixed cost per layer per micro-batch")
      ->capture_default_str();
  cmd->add_option("--hbm-usable", c.hbm_usable, "Fraction of HBM for weights + KV")->capture_default_str();
  cmd->add_option("--overlap-eff", c.overlap_eff,
                  "With overlap: fraction of the shorter of compute and all-to-all hidden behind the longer (1 = max, 0 = sum)")
      ->capture_default_str();
  cmd->add_option("--calibrate", opts->calibrate,
                  "JSON of bench/gpu_decode_bench or bench/gpu_kernels_bench (--json) run on --hardware (sets hbm_eff/flops_eff), "
                  "or of shoal bench a2a --json run across its hosts (sets net_eff); repeatable; explicit "
                  "--hbm-eff/--flops-eff/--layer-overhead-us/--net-eff win");
  cmd->add_flag("--sweep", opts->sweep,
                "Also evaluate the smallest layout's GPU count doubled up to 4 times and mark the cheapest that meets "
                "the SLOs (with --target-*-tps: the fewest GPUs for that load)");
  cmd->add_option("--emit-config", opts->emit_config,
                  "Write shoal's YAML for the chosen layout (the cheapest of --sweep when given) here and print the "
                  "sbatch command that runs it");
  cmd->add_flag("--json", opts->json, "Print JSON instead of tables");
  cmd->add_flag("--list", opts->list, "List model and hardware presets");
  cmd->callback([opts, exit_code, cmd] {
    opts->hbm_eff_given = cmd->count("--hbm-eff") > 0;
    opts->flops_eff_given = cmd->count("--flops-eff") > 0;
    opts->layer_overhead_given = cmd->count("--layer-overhead-us") > 0;
    opts->net_eff_given = cmd->count("--net-eff") > 0;
    const Status st = RunPlan(*opts);
    if (!st.ok()) {
      std::fprintf(stderr, "shoal plan: error: %s\n", st.ToString().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace shoal::cli
