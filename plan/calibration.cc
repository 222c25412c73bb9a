#include "plan/calibration.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace shoal::plan {
namespace {

std::string Fmt(const char* f, double a, double b) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}

// An efficiency must be a fraction of the peak; more than the peak means the preset is wrong for the
// card the run used (or the run is), so it is an error rather than a clamp.
Status CheckFraction(double v, const std::string& what, const std::string& path) {
  if (!(v > 0 && v <= 1.0)) {
    return InvalidArgument(path + ": " + what + " = " + std::to_string(v) +
                           " is not in (0, 1]: is the hardware preset the card this run used?");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<CalibrationSource> CalibrateFromBenchJson(const std::string& text, const std::string& path,
                                                   const HardwareSpec& hw, Calibration* calib) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(path + ": not a JSON object");
  CalibrationSource src;
  src.path = path;
  src.device = j.value("device", std::string("unknown device"));
  try {
    if (j.contains("runs")) {  // gpu_decode_bench
      if (!j.value("ok", false)) return InvalidArgument(path + ": the benchmark's own checks failed (\"ok\": false)");
      const double copy_gbs = j.at("copy_bandwidth_gbs").get<double>();
      double best = 0;
      int best_batch = 0;
      for (const auto& r : j.at("runs")) {
        const double gbs = r.at("ratio").get<double>() * copy_gbs;
        if (gbs > best) best = gbs, best_batch = r.at("batch").get<int>();
      }
      if (best <= 0) return InvalidArgument(path + ": no decode run with a bandwidth");
      const double eff = best * 1e9 / hw.hbm_bw;
      SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "hbm_eff", path));
      calib->hbm_eff = eff;
      src.applied.push_back(Fmt("hbm_eff = %.3f (decode, %.0f GB/s", eff, best * 1.0) + ", batch " +
                            std::to_string(best_batch) + ")");
    } else if (j.contains("results")) {  // gpu_kernels_bench
      if (!j.value("verified", false)) {
        return InvalidArgument(path + ": the benchmark's output checks failed (\"verified\": false)");
      }
      double gemv = 0, prefill = 0;
      for (const auto& r : j.at("results")) {
        const std::string name = r.at("name").get<std::string>();
        const double v = r.at("measured").get<double>();
        if (name.rfind("expert_gemm_decode_", 0) == 0) gemv = std::max(gemv, v);
        if (name.rfind("expert_gemm_prefill_", 0) == 0) prefill = std::max(prefill, v);
      }
      if (gemv > 0) {
        const double eff = gemv * 1e9 / hw.hbm_bw;
        SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "hbm_eff", path));
        calib->hbm_eff = eff;
        src.applied.push_back(Fmt("hbm_eff = %.3f (decode expert GEMM, %.0f GB/s)", eff, gemv));
      }
      if (prefill > 0) {
        const double eff = prefill * 1e12 / hw.bf16_flops;
        SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "flops_eff", path));
        calib->flops_eff = eff;
        src.applied.push_back(Fmt("flops_eff = %.3f (prefill expert GEMM, %.0f TFLOP/s)", eff, prefill));
      }
    } else {
      return InvalidArgument(path + ": not a gpu_decode_bench or gpu_kernels_bench JSON (no \"runs\" or \"results\")");
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  if (src.applied.empty()) return InvalidArgument(path + ": no measurement the planner can use");
  return src;
}

StatusOr<CalibrationSource> CalibrateFromBenchFile(const std::string& path, const HardwareSpec& hw,
                                                   Calibration* calib) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (size_t{1} << 24)) return OutOfRange(path + ": larger than 16 MiB");
  return CalibrateFromBenchJson(ss.str(), path, hw, calib);
}

}  // namespace shoal::plan
