// Calibrating the planner from shoal's own measurements: the JSON that the GPU benchmarks write
// (bench/gpu_decode_bench --json, bench/gpu_kernels_bench --json) turned into the efficiencies the
// cost model multiplies peak rates by (planner.h Calibration), for the hardware preset they ran on.
//
//   gpu_decode_bench: hbm_eff = best decode run's achieved bandwidth (ratio × copy bandwidth, bytes of
//                     weights and KV read per second) / the preset's peak HBM bandwidth — the whole
//                     decode step, its per-layer overheads included (so layer_overhead_us is then 0).
//   gpu_kernels_bench: hbm_eff from the best decode-size expert GEMM (weight bytes / s) when no decode
//                     run gave one; flops_eff = best prefill expert GEMM's TFLOP/s / the preset's dense
//                     bf16 peak.
//   GET /v1/expert_load (saved): the routing counts of a served model; the planner then computes the
//                     busiest GPU's expert load for each layout it weighs (balanced expert ranges over
//                     its GPU count) instead of its assumed expert_imbalance. The group with the most
//                     tokens is taken; a bare {"layers", "experts", "tokens"} works too.
//   shoal bench a2a --json: net_eff = the best MPI_Alltoallv size's bytes leaving each rank for other
//                     hosts per second / the preset's per-GPU NIC bandwidth. Only a run across hosts
//                     measures the network (one host is shared memory: refused), and it stands for
//                     the GPUs' fabric when the hosts are those nodes with one rank per NIC (e.g. 8
//                     per 8-NIC node): host-memory MPI over the same InfiniBand. NVLink is not
//                     calibrated from it.
// A run whose own checks failed ("ok"/"verified" false) is refused: a wrong kernel's speed calibrates
// nothing.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/expert_load.h"
#include "common/status.h"
#include "plan/hardware.h"
#include "plan/planner.h"

namespace shoal::plan {

struct CalibrationSource {
  std::string path, device;
  enum class Kind { kDecodeRun, kKernels, kFabric } kind = Kind::kDecodeRun;
  std::optional<double> hbm_eff, flops_eff, net_eff;  // what the file measures (nothing is applied yet)
  std::shared_ptr<const comm::ExpertLoad> expert_load;  // a saved GET /v1/expert_load
  std::vector<std::string> notes;            // "hbm_eff = 0.78 (decode, 2451 GB/s, batch 32)"
};

// Parses one benchmark JSON (`text`, named `path` in errors) for the preset `hw` the run is taken to
// represent. Nothing is applied: a file that fails any check changes nothing.
StatusOr<CalibrationSource> CalibrateFromBenchJson(const std::string& text, const std::string& path,
                                                   const HardwareSpec& hw);
// The same from a file.
StatusOr<CalibrationSource> CalibrateFromBenchFile(const std::string& path, const HardwareSpec& hw);

// Applies sources to *calib whatever their order: hbm_eff from a whole decode run wins over one from a
// GEMM benchmark (the best of each kind is used); flops_eff from the kernel benchmark. A whole decode
// run's bandwidth already contains the per-layer overheads, so then layer_overhead_us becomes 0 (the
// planner would otherwise count them twice); net_eff from the best all-to-all run across hosts.
// Returns what it applied, one line each.
std::vector<std::string> ApplyCalibration(const std::vector<CalibrationSource>& sources, Calibration* calib);

}  // namespace shoal::plan
