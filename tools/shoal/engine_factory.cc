#include "tools/shoal/engine_factory.h"

#include <cstdlib>

#include "worker/engine.h"
#ifdef SHOAL_WITH_CUDA
#include "comm/nccl/nccl_group.h"
#include "kernels/cuda/cuda_check.h"
#include "worker/cuda/cuda_engine.h"
#endif

namespace shoal::cli {

namespace {

#ifdef SHOAL_WITH_CUDA
// The rank's index among the ranks on its node, from the launcher's environment.
int LocalRank() {
  // MPI_LOCALRANKID: MPICH / Intel MPI's launcher (before SLURM_LOCALID, which inside an allocation
  // may be the outer step's, the same on every rank).
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::atoi(v);
  }
  return 0;
}

// The GPU a rank uses: the one named, or — a launcher that gives each rank its own GPU (srun
// --gpus-per-task, CUDA_VISIBLE_DEVICES per rank) leaves fewer visible devices than local ranks — the
// local rank wrapped around the visible devices.
int CudaIndex(const DeviceSpec& device) {
  if (device.index >= 0) return device.index;
  int index = LocalRank();
  const int visible = cuda::CudaDeviceCount();
  if (visible > 0) index %= visible;
  return index;
}
#endif

constexpr const char* kNoCuda = "--device cuda: this shoal was built without CUDA (configure with nvcc present, SHOAL_CUDA=ON)";

}  // namespace

StatusOr<std::string> NewDataPlaneId() {
#ifdef SHOAL_WITH_CUDA
  return comm::NcclGroup::MakeUniqueId();
#else
  return Unimplemented(kNoCuda);
#endif
}

StatusOr<std::unique_ptr<comm::Group>> JoinDataPlane(const DeviceSpec& device, const std::string& id, int rank,
                                                     int size, Deadline deadline) {
  if (!device.cuda) return InvalidArgument("a data plane shared through the coordinator is NCCL's: it needs --device cuda");
#ifdef SHOAL_WITH_CUDA
  SHOAL_ASSIGN_OR_RETURN(auto nccl, comm::NcclGroup::CreateFromId(id, rank, size, CudaIndex(device), deadline));
  return std::unique_ptr<comm::Group>(std::move(nccl));
#else
  (void)id, (void)rank, (void)size, (void)deadline;
  return Unimplemented(kNoCuda);
#endif
}

StatusOr<std::unique_ptr<StepEngine>> MakeStepEngine(const DeviceSpec& device, ModelConfig model, ModelWeights weights,
                                                     const EngineConfig& cfg, comm::Group* group,
                                                     const Placement* placement,
                                                     std::unique_ptr<comm::Group> data_plane, comm::Group* tp_group) {
  if (!device.cuda) {
    SHOAL_ASSIGN_OR_RETURN(std::unique_ptr<Engine> e,
                           Engine::Create(std::move(model), std::move(weights), cfg, group, placement, tp_group));
    return std::unique_ptr<StepEngine>(std::move(e));
  }
  if (tp_group != nullptr && tp_group->size() > 1) {
    return Unimplemented("parallel.attention_tp " + std::to_string(tp_group->size()) +
                         ": the GPU engine does not split attention across GPUs yet (the CPU engine does); use "
                         "attention_tp 1 with --device cuda");
  }
#ifdef SHOAL_WITH_CUDA
  const int index = CudaIndex(device);
  if (data_plane == nullptr && group != nullptr && group->size() > 1) {
    // The expert exchange moves device buffers: an NCCL communicator over the same ranks, its unique
    // id bootstrapped over `group` (MPI).
    const Deadline deadline = Deadline::AfterMs(cfg.startup_timeout_s > 0 ? cfg.startup_timeout_s * 1000 : 600000);
    SHOAL_ASSIGN_OR_RETURN(auto nccl, comm::NcclGroup::Create(*group, index, deadline));
    data_plane = std::move(nccl);
  }
  SHOAL_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaEngine> e,
                         cuda::CudaEngine::Create(std::move(model), weights, cfg, index, std::move(data_plane), placement));
  return std::unique_ptr<StepEngine>(std::move(e));
#else
  (void)data_plane;
  return Unimplemented(kNoCuda);
#endif
}

}  // namespace shoal::cli
