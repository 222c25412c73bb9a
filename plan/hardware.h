// Accelerator descriptions for the capacity planner: per-GPU HBM capacity and bandwidth, dense
// (no-sparsity) BF16/FP8 tensor FLOP/s, NVLink and scale-out (InfiniBand/RoCE) bandwidth per GPU,
// GPUs per node. Built-in presets are compiled in (so `shoal plan` works anywhere) and mirrored in
// configs/hardware.yaml; a YAML file overrides fields of a preset or adds a new one.
//
// YAML layout (units in the key names; bandwidths are per GPU, per direction):
//   hardware:
//     h100:
//       hbm_gib: 79.6        # usable device memory as the driver reports it
//       hbm_gbps: 3350       # GB/s (1e9 bytes/s)
//       bf16_tflops: 989     # dense
//       fp8_tflops: 1979     # dense
//       nvlink_gbps: 450     # GB/s per direction
//       net_gbps: 50         # scale-out NIC GB/s per direction (400 Gb/s = 50)
//       gpus_per_node: 8
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace shoal::plan {

struct HardwareSpec {
  std::string name;
  std::string description;
  double hbm_bytes = 0;      // bytes
  double hbm_bw = 0;         // bytes/s
  double bf16_flops = 0;     // FLOP/s, dense
  double fp8_flops = 0;      // FLOP/s, dense
  double nvlink_bw = 0;      // bytes/s per GPU per direction
  double net_bw = 0;         // bytes/s per GPU per direction (IB/RoCE)
  int gpus_per_node = 0;
};

// Every field positive; errors name `source` and the field.
Status ValidateHardware(const HardwareSpec& hw, const std::string& source);

using HardwareTable = std::map<std::string, HardwareSpec>;

// h100, h200, b200, h800 (see docs/plan.md for the datasheets).
HardwareTable BuiltinHardware();
std::vector<std::string> HardwarePresetNames(const HardwareTable& table);

// Applies YAML text to `table`: an entry naming an existing preset overrides only the fields it
// sets; a new name must set every field. Unknown keys are errors (a typo must not silently keep a
// preset value). `source` names the file in errors. On error `table` is left unchanged.
Status ApplyHardwareYaml(const std::string& yaml_text, const std::string& source, HardwareTable* table);
Status ApplyHardwareFile(const std::string& path, HardwareTable* table);

StatusOr<HardwareSpec> FindHardware(const HardwareTable& table, const std::string& name);

}  // namespace shoal::plan
