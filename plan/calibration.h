// Calibrating the planner from shoal's own measurements: the JSON that the GPU benchmarks write
// (bench/gpu_decode_bench --json, bench/gpu_kernels_bench --json) turned into the efficiencies the
// cost model multiplies peak rates by (planner.h Calibration), for the hardware preset they ran on.
//
//   gpu_decode_bench: hbm_eff = best decode run's achieved bandwidth (ratio × copy bandwidth, bytes of
//                     weights and KV read per second) / the preset's peak HBM bandwidth — the whole
//                     decode step, overheads included, which is what the planner's decode time models.
//   gpu_kernels_bench: hbm_eff from the best decode-size expert GEMM (weight bytes / s) when no decode
//                     run gave one; flops_eff = best prefill expert GEMM's TFLOP/s / the preset's dense
//                     bf16 peak.
// A run whose own checks failed ("ok"/"verified" false) is refused: a wrong kernel's speed calibrates
// nothing. Network efficiencies are not calibrated from these files (shoal bench a2a measures the CPU
// MPI exchange, not a GPU fabric); set them with --net-eff / --nvlink-eff.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "plan/hardware.h"
#include "plan/planner.h"

namespace shoal::plan {

struct CalibrationSource {
  std::string path, device;
  std::vector<std::string> applied;  // "hbm_eff = 0.78 (decode batch 32, 2451 GB/s)"
};

// Parses one benchmark JSON (`text`, named `path` in errors) and sets the efficiencies it measures in
// *calib (leaving the others). `hw` is the preset the run is taken to represent.
StatusOr<CalibrationSource> CalibrateFromBenchJson(const std::string& text, const std::string& path,
                                                   const HardwareSpec& hw, Calibration* calib);
// The same from a file.
StatusOr<CalibrationSource> CalibrateFromBenchFile(const std::string& path, const HardwareSpec& hw, Calibration* calib);

}  // namespace shoal::plan
