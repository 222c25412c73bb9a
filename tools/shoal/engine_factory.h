// engine.device / `--device` (common/config.h ParseDevice) for `shoal generate` and `shoal worker`: the
// CPU engine, or the GPU engine when this binary was built with CUDA (SHOAL_CUDA) — behind the one
// StepEngine interface the scheduler and the serve loop drive.
#pragma once

#include <memory>
#include <string>

#include "comm/group.h"
#include "comm/placement.h"
#include "common/config.h"
#include "common/status.h"
#include "model/model_config.h"
#include "model/weights.h"
#include "worker/step_engine.h"

namespace shoal::cli {

// The engine for `device`. `group` (may be null: a group of one) and `placement` as Engine::Create.
// On a GPU, the engine exchanges expert rows over `data_plane` when one is given (JoinDataPlane);
// otherwise a group of more than one rank gets an NCCL data plane over the same ranks, its id
// bootstrapped over `group` (MPI). `tp_group`: this rank's tensor-parallel replica (CPU engine only;
// the weights are then its share).
StatusOr<std::unique_ptr<StepEngine>> MakeStepEngine(const DeviceSpec& device, ModelConfig model, ModelWeights weights,
                                                     const EngineConfig& cfg, comm::Group* group,
                                                     const Placement* placement,
                                                     std::unique_ptr<comm::Group> data_plane = nullptr,
                                                     comm::Group* tp_group = nullptr);

// For launches without MPI, whose ranks share the data plane's id through the coordinator
// (control/rendezvous_client.h). NewDataPlaneId is called on rank 0 only; JoinDataPlane on every
// rank, with the same id, selects this rank's GPU (`device`, as MakeStepEngine picks it) and waits
// for the other ranks until `deadline`. Unimplemented in a build without CUDA.
StatusOr<std::string> NewDataPlaneId();
StatusOr<std::unique_ptr<comm::Group>> JoinDataPlane(const DeviceSpec& device, const std::string& id, int rank,
                                                     int size, Deadline deadline);

}  // namespace shoal::cli
