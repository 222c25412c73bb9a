// Rebalancing while serving, on one rank of an expert-parallel group.
//
// The coordinator sends every rank of a group a Rebalance frame (control/wire.h): the placement of
// every MoE layer, planned from the measured load (comm/placement_planner.h). Each rank then:
//   1. checks it against the model and the group (Begin; a frame it cannot serve is remembered as
//      failed, and the group drops it together);
//   2. loads the experts it gains — only those tensors, from the checkpoint, in the engine's dtype,
//      every page read once — on a thread of its own while it keeps serving;
//   3. switches when the whole group is ready: the serve loop's per-pass agreement (worker/serve_loop.h)
//      carries each rank's pending generation and whether it is still loading, so every rank switches
//      before the same step, never mid-step;
//   4. at the switch (Engine::SwitchPlacements) takes the loaded experts, runs every MoE layer under
//      its new placement from that step on and gives back the memory of the experts it lost.
// A request is never paused for the load; the switch costs one step boundary's bookkeeping. Greedy
// outputs do not change: every (token, expert) row is computed by the same kernel wherever it runs,
// and combined in expert order (comm/expert_exchange.h).
//
// Thread-safety: every method is called from the serve loop's thread; the loader thread touches only
// its own results until done() says it has finished.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "comm/placement.h"
#include "common/dtype.h"
#include "common/status.h"
#include "control/wire.h"
#include "model/weights.h"
#include "worker/step_engine.h"

namespace shoal {

// A Rebalance frame as placements: [num_layers], nullopt for dense layers. InvalidArgument naming the
// field for a frame that does not fit the model (layer count, expert ids, a MoE layer with no slots, a
// dense one with some) or the group (rank count, a rank left without experts in some layer).
StatusOr<std::vector<std::optional<Placement>>> PlacementsFromFrame(const control::Rebalance& frame,
                                                                    const ModelConfig& config, int group_size);

// The frame for `placements` ([num_layers], nullopt for dense layers), as the coordinator sends it.
control::Rebalance FrameFromPlacements(uint64_t generation, const std::vector<std::optional<Placement>>& placements,
                                       int group_size);

class ExpertRebalancer {
 public:
  // `engine` must outlive this. Gained experts come from the checkpoint in `model_dir`, kept in
  // `dtype` (as stored when empty: the engine.dtype the start-up load used).
  ExpertRebalancer(StepEngine& engine, std::string model_dir, std::optional<DType> dtype);
  ~ExpertRebalancer();  // waits for a load in flight
  ExpertRebalancer(const ExpertRebalancer&) = delete;
  ExpertRebalancer& operator=(const ExpertRebalancer&) = delete;

  // Starts on a frame: checks it and starts loading this rank's gained experts. A frame that does not
  // fit becomes pending already failed, so that the group drops it together. One arriving while
  // another is pending is ignored (reported as failed in the heartbeat); the coordinator sends the
  // next only once the group switched to or dropped the last.
  void Begin(const control::Rebalance& frame);

  // For the group's agreement: the pending generation (0: none), whether its load is still running,
  // whether it failed (then Abandon; otherwise Switch once no rank is loading).
  uint64_t pending() const { return pending_; }
  bool loading() const { return pending_ != 0 && !done_.load(std::memory_order_acquire); }
  bool failed() const;

  // The group's agreement, as the serve loop runs it once per pass: these values, max-reduced over
  // the ranks (with whatever else the pass agrees on), then Act on the result — which switches, or
  // drops the pending generation, when every rank holds the same one and none is still loading.
  // *changed says whether it did either. An error is Switch's.
  static constexpr size_t kAgreementValues = 4;
  std::array<int64_t, kAgreementValues> AgreementValues() const;
  Status Act(std::span<const int64_t> agreed, bool* changed);

  // After the group agreed that every rank loaded `pending()`: from the next step the engine serves
  // under it. An error here leaves this rank on the old placement while the others switched: the
  // caller must stop the group.
  Status Switch();
  // After the group agreed to drop `pending()` (some rank failed it): records it as failed.
  void Abandon();

  uint64_t generation() const { return generation_; }        // the placement served under (0: start-up)
  uint64_t last_failed() const { return last_failed_; }      // the last generation dropped (0: none)
  const std::string& last_error() const { return last_error_; }

 private:
  void Fail(uint64_t generation, std::string why);
  void Join();

  StepEngine& engine_;
  std::string model_dir_;
  std::optional<DType> dtype_;
  uint64_t generation_ = 0;
  uint64_t pending_ = 0;
  std::vector<std::optional<Placement>> target_;
  std::thread loader_;
  std::atomic<bool> done_{true};
  Status load_status_ = Status::Ok();  // written by the loader before done_
  ModelWeights loaded_;                // the same
  Status begin_status_ = Status::Ok(); // a frame refused by Begin
  uint64_t last_failed_ = 0;
  std::string last_error_;
};

}  // namespace shoal
