// Hardware presets and their YAML overrides. Numbers are NVIDIA datasheet values (dense tensor
// FLOP/s, i.e. half the "with sparsity" figures); sources are listed in docs/plan.md.
#include "plan/hardware.h"

#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace shoal::plan {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

HardwareSpec Make(const char* name, const char* desc, double hbm_gib, double hbm_gbps, double bf16_tflops,
                  double fp8_tflops, double nvlink_gbps, double net_gbps, int gpus_per_node) {
  HardwareSpec h;
  h.name = name;
  h.description = desc;
  h.hbm_bytes = hbm_gib * kGiB;
  h.hbm_bw = hbm_gbps * 1e9;
  h.bf16_flops = bf16_tflops * 1e12;
  h.fp8_flops = fp8_tflops * 1e12;
  h.nvlink_bw = nvlink_gbps * 1e9;
  h.net_bw = net_gbps * 1e9;
  h.gpus_per_node = gpus_per_node;
  return h;
}

struct Field {
  const char* key;
  double HardwareSpec::*member;
  double scale;
};
const Field kFields[] = {
    {"hbm_gib", &HardwareSpec::hbm_bytes, kGiB},      {"hbm_gbps", &HardwareSpec::hbm_bw, 1e9},
    {"bf16_tflops", &HardwareSpec::bf16_flops, 1e12}, {"fp8_tflops", &HardwareSpec::fp8_flops, 1e12},
    {"nvlink_gbps", &HardwareSpec::nvlink_bw, 1e9},   {"net_gbps", &HardwareSpec::net_bw, 1e9},
};

}  // namespace

Status ValidateHardware(const HardwareSpec& hw, const std::string& source) {
  for (const Field& f : kFields)
    if (!(hw.*f.member > 0))
      return InvalidArgument(source + ": hardware '" + hw.name + "': " + f.key + " must be positive");
  if (hw.gpus_per_node <= 0)
    return InvalidArgument(source + ": hardware '" + hw.name + "': gpus_per_node must be positive");
  return Status::Ok();
}

HardwareTable BuiltinHardware() {
  HardwareTable t;
  // HBM in GiB as nvidia-smi reports it (81559 MiB on H100/H800 80GB, 143771 MiB on H200, 183359 MiB on B200).
  t["h100"] = Make("h100", "NVIDIA H100 SXM5 80GB, NVLink4, 8x ConnectX-7 400Gb/s", 79.6, 3350, 989, 1979, 450, 50, 8);
  t["h800"] = Make("h800", "NVIDIA H800 SXM5 80GB (NVLink cut to 400 GB/s bidir), 8x CX7 400Gb/s IB", 79.6, 3350,
                   989, 1979, 200, 50, 8);
  t["h200"] = Make("h200", "NVIDIA H200 SXM 141GB, NVLink4, 8x ConnectX-7 400Gb/s", 140.4, 4800, 989, 1979, 450, 50, 8);
  t["b200"] = Make("b200", "NVIDIA B200 (HGX/DGX B200) 180GB, NVLink5, 8x ConnectX-7 400Gb/s", 179.1, 8000, 2250,
                   4500, 900, 50, 8);
  return t;
}

std::vector<std::string> HardwarePresetNames(const HardwareTable& table) {
  std::vector<std::string> names;
  for (const auto& [k, v] : table) names.push_back(k);
  return names;
}

Status ApplyHardwareYaml(const std::string& yaml_text, const std::string& source, HardwareTable* table) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ": malformed YAML: " + e.what());
  }
  if (!root.IsMap() || !root["hardware"] || !root["hardware"].IsMap())
    return InvalidArgument(source + ": expected a top-level 'hardware:' map of presets");
  HardwareTable out = *table;
  for (const auto& entry : root["hardware"]) {
    std::string name;
    try {
      name = entry.first.as<std::string>();
    } catch (const YAML::Exception&) {
      return InvalidArgument(source + ": a hardware name is not a string");
    }
    const std::string where = source + ": hardware." + name;
    if (!entry.second.IsMap()) return InvalidArgument(where + ": expected a map of fields");
    const bool existing = out.count(name) > 0;
    HardwareSpec hw = existing ? out[name] : HardwareSpec{};
    hw.name = name;
    int set = 0;
    for (const auto& kv : entry.second) {
      std::string key = "?";
      try {
        key = kv.first.as<std::string>();
        const Field* field = nullptr;
        for (const Field& f : kFields)
          if (key == f.key) field = &f;
        if (field) {
          hw.*field->member = kv.second.as<double>() * field->scale;
          ++set;
        } else if (key == "gpus_per_node") {
          hw.gpus_per_node = kv.second.as<int>();
          ++set;
        } else if (key == "description") {
          hw.description = kv.second.as<std::string>();
        } else {
          return InvalidArgument(where + "." + key +
                                 ": unknown field (known: hbm_gib, hbm_gbps, bf16_tflops, fp8_tflops, "
                                 "nvlink_gbps, net_gbps, gpus_per_node, description)");
        }
      } catch (const YAML::Exception&) {
        return InvalidArgument(where + "." + key + ": not a number");
      }
    }
    if (!existing && set < 7)
      return InvalidArgument(where + ": a new hardware entry must set all of hbm_gib, hbm_gbps, bf16_tflops, "
                             "fp8_tflops, nvlink_gbps, net_gbps, gpus_per_node");
    SHOAL_RETURN_IF_ERROR(ValidateHardware(hw, source));
    out[name] = hw;
  }
  *table = std::move(out);
  return Status::Ok();
}

Status ApplyHardwareFile(const std::string& path, HardwareTable* table) {
  std::ifstream in(path);
  if (!in) return IoError(path + ": cannot open hardware file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ApplyHardwareYaml(ss.str(), path, table);
}

StatusOr<HardwareSpec> FindHardware(const HardwareTable& table, const std::string& name) {
  auto it = table.find(name);
  if (it != table.end()) return it->second;
  std::string list;
  for (const auto& [k, v] : table) list += (list.empty() ? "" : ", ") + k;
  return NotFound("unknown hardware preset '" + name + "' (known: " + list + ")");
}

}  // namespace shoal::plan
