#include "plan/calibration.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace shoal::plan {
namespace {

std::string Fmt1(const char* f, double a) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

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

// `shoal bench a2a --json`: the network's achieved share of the NIC, from MPI_Alltoallv (the raw side:
// the fabric, not shoal's CPU exchange) at its best size.
Status FromAllToAll(const nlohmann::json& j, const std::string& path, const HardwareSpec& hw, CalibrationSource* src) {
  src->kind = CalibrationSource::Kind::kFabric;
  if (!j.value("ok", false)) return InvalidArgument(path + ": the benchmark's own checks failed (\"ok\": false)");
  const int ranks = j.at("ranks").get<int>(), hosts = j.at("hosts").get<int>();
  const int per_host = j.at("max_ranks_per_host").get<int>();
  if (hosts < 2) {
    return InvalidArgument(path + ": all " + std::to_string(ranks) +
                           " ranks ran on one host, which measures shared memory, not the network: run it across "
                           "hosts (one rank per NIC) to calibrate net_eff");
  }
  if (per_host != j.at("min_ranks_per_host").get<int>() || ranks != hosts * per_host) {
    return InvalidArgument(path + ": hosts ran different numbers of ranks; run the same number on every host");
  }
  src->device = std::to_string(hosts) + " hosts x " + std::to_string(per_host) + " ranks (" +
                j.value("backend", std::string("mpi")) + ")";
  // Per rank and second, the bytes addressed to ranks on other hosts: (ranks - per_host) of its ranks
  // peers get an equal share of a uniform all-to-all.
  const double off_host = double(ranks - per_host) / ranks;
  double best = 0;
  std::string at;
  for (const auto& r : j.at("results")) {
    const double us = r.at("raw_us").get<double>();
    if (!(us > 0)) continue;
    const double bps = r.at("bytes").get<double>() * off_host / (us * 1e-6);
    if (bps > best) {
      best = bps;
      at = "hidden " + std::to_string(r.at("hidden").get<int64_t>()) + ", top-" + std::to_string(r.at("topk").get<int>()) +
           ", " + std::to_string(r.at("tokens").get<int64_t>()) + " tokens/rank";
    }
  }
  if (best <= 0) return InvalidArgument(path + ": no all-to-all size with a time");
  const double eff = best / hw.net_bw;
  SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "net_eff", path));
  src->net_eff = eff;
  src->notes.push_back(Fmt("net_eff = %.3f (MPI_Alltoallv, %.3g GB/s leaving each rank", eff, best / 1e9) + ", " + at +
                       ", " + src->device + ")");
  return Status::Ok();
}

}  // namespace

StatusOr<CalibrationSource> CalibrateFromBenchJson(const std::string& text, const std::string& path,
                                                   const HardwareSpec& hw) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(path + ": not a JSON object");
  CalibrationSource src;
  src.path = path;
  try {
    src.device = j.contains("device") ? j.at("device").get<std::string>() : "unknown device";
    if (j.contains("groups") || j.contains("tokens")) {  // a saved GET /v1/expert_load, or one load
      const nlohmann::json* best = &j;
      if (j.contains("groups")) {
        best = nullptr;
        uint64_t most = 0;
        for (const auto& [name, g] : j.at("groups").items()) {
          auto load = comm::ExpertLoadFromJson(nlohmann::ordered_json(g));
          if (!load.ok()) return load.status().WithContext(path + ": groups." + name);
          if (best == nullptr || load->Total() > most) best = &g, most = load->Total();
        }
        if (best == nullptr) return InvalidArgument(path + ": no group in the expert load");
      }
      auto load = comm::ExpertLoadFromJson(nlohmann::ordered_json(*best));
      if (!load.ok()) return load.status().WithContext(path);
      if (load->Total() == 0) return InvalidArgument(path + ": the expert load holds no routed tokens");
      src.expert_load = std::make_shared<const comm::ExpertLoad>(std::move(*load));
      src.notes.push_back(Fmt1("expert load: %.0f routed tokens", static_cast<double>(src.expert_load->Total())) +
                          Fmt1(", imbalance %.3f at 8 GPUs", src.expert_load->BalancedImbalance(8)));
      return src;
    }
    if (j.value("tool", std::string()) == "shoal bench a2a") {
      SHOAL_RETURN_IF_ERROR(FromAllToAll(j, path, hw, &src));
    } else if (j.contains("runs")) {  // gpu_decode_bench
      src.kind = CalibrationSource::Kind::kDecodeRun;
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
      src.hbm_eff = eff;
      src.notes.push_back(Fmt("hbm_eff = %.3f (whole decode step, %.0f GB/s", eff, best) + ", batch " +
                          std::to_string(best_batch) + ")");
    } else if (j.contains("results")) {  // gpu_kernels_bench
      src.kind = CalibrationSource::Kind::kKernels;
      if (!j.value("verified", false)) {
        return InvalidArgument(path + ": the benchmark's output checks failed (\"verified\": false)");
      }
      double gemv = 0, prefill = 0;
      for (const auto& r : j.at("results")) {
        const std::string name = r.at("name").get<std::string>();
        // Rows not measured (an unsupported combination, a failed section) carry a status instead;
        // bf16-output variants are not what the engine runs (its expert GEMMs write f32).
        if (!r.contains("measured")) continue;
        if (name.size() >= 8 && name.compare(name.size() - 8, 8, "_bf16out") == 0) continue;
        const double v = r.at("measured").get<double>();
        if (name.rfind("expert_gemm_decode_", 0) == 0) gemv = std::max(gemv, v);
        if (name.rfind("expert_gemm_prefill_", 0) == 0) prefill = std::max(prefill, v);
      }
      if (gemv > 0) {
        const double eff = gemv * 1e9 / hw.hbm_bw;
        SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "hbm_eff", path));
        src.hbm_eff = eff;
        src.notes.push_back(Fmt("hbm_eff = %.3f (decode expert GEMM, %.0f GB/s)", eff, gemv));
      }
      if (prefill > 0) {
        const double eff = prefill * 1e12 / hw.bf16_flops;
        SHOAL_RETURN_IF_ERROR(CheckFraction(eff, "flops_eff", path));
        src.flops_eff = eff;
        src.notes.push_back(Fmt("flops_eff = %.3f (prefill expert GEMM, %.0f TFLOP/s)", eff, prefill));
      }
    } else {
      return InvalidArgument(path + ": not a gpu_decode_bench, gpu_kernels_bench or shoal bench a2a JSON");
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  if (!src.hbm_eff && !src.flops_eff && !src.net_eff) return InvalidArgument(path + ": no measurement the planner can use");
  return src;
}

StatusOr<CalibrationSource> CalibrateFromBenchFile(const std::string& path, const HardwareSpec& hw) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (size_t{1} << 24)) return OutOfRange(path + ": larger than 16 MiB");
  return CalibrateFromBenchJson(ss.str(), path, hw);
}

std::vector<std::string> ApplyCalibration(const std::vector<CalibrationSource>& sources, Calibration* calib) {
  std::optional<double> decode_hbm, gemm_hbm, flops, net;
  const CalibrationSource *decode_src = nullptr, *gemm_src = nullptr, *flops_src = nullptr, *net_src = nullptr;
  for (const CalibrationSource& s : sources) {
    if (s.hbm_eff && s.kind == CalibrationSource::Kind::kDecodeRun && (!decode_hbm || *s.hbm_eff > *decode_hbm)) {
      decode_hbm = s.hbm_eff, decode_src = &s;
    }
    if (s.hbm_eff && s.kind == CalibrationSource::Kind::kKernels && (!gemm_hbm || *s.hbm_eff > *gemm_hbm)) {
      gemm_hbm = s.hbm_eff, gemm_src = &s;
    }
    if (s.flops_eff && (!flops || *s.flops_eff > *flops)) flops = s.flops_eff, flops_src = &s;
    if (s.net_eff && (!net || *s.net_eff > *net)) net = s.net_eff, net_src = &s;
  }
  std::vector<std::string> applied;
  if (decode_hbm) {
    calib->hbm_eff = *decode_hbm;
    calib->layer_overhead_us = 0;
    applied.push_back(Fmt1("hbm_eff = %.3f from a whole decode run in ", *decode_hbm) + decode_src->path +
                      "; layer_overhead_us = 0 (already in that measurement)");
  } else if (gemm_hbm) {
    calib->hbm_eff = *gemm_hbm;
    applied.push_back(Fmt1("hbm_eff = %.3f from the decode expert GEMM in ", *gemm_hbm) + gemm_src->path);
  }
  if (flops) {
    calib->flops_eff = *flops;
    applied.push_back(Fmt1("flops_eff = %.3f from the prefill expert GEMM in ", *flops) + flops_src->path);
  }
  if (net) {
    calib->net_eff = *net;
    applied.push_back(Fmt1("net_eff = %.3f from the all-to-all across hosts in ", *net) + net_src->path);
  }
  for (const CalibrationSource& s : sources) {  // the last expert load given wins
    if (!s.expert_load) continue;
    calib->measured_load = s.expert_load;
    applied.push_back("expert imbalance measured per layout from the routing counts in " + s.path);
  }
  return applied;
}

}  // namespace shoal::plan
