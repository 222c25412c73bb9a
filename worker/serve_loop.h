// A worker rank serving a coordinator: connect, say Hello, then take Submit/Cancel frames between
// steps and stream every sampled token back, until the coordinator says Shutdown or goes away.
//
// Every rank of the group runs this loop. Each pass, the ranks agree (one small all-reduce) on
// whether any of them has work and whether any must stop; when one has work, all step — a rank with
// none joins with an empty batch. An idle rank waits for input at most idle_poll_ms before agreeing,
// so an idle group costs a few small all-reduces a second, and the coordinator sends Wake to the
// other ranks of an idle group with each Submit so a new request does not wait for that poll.
// A reader thread turns frames into an inbox; a heartbeat thread reports progress every
// heartbeat_ms, independent of how long a step takes.
//
// Rebalancing (worker/expert_rebalance.h): a Rebalance frame starts loading the experts this rank
// gains; the same agreement carries each rank's pending placement generation (as max of it and of its
// negation: all ranks equal when they match) and whether any rank is still loading or failed it, so
// the whole group switches — or drops it — before the same step.
//
// Attention TP (tp_group of T > 1 ranks): the coordinator sends a replica's requests to its tp_rank 0
// only; each pass, that rank hands the Submit and Cancel frames it took to the replica's other ranks
// (one broadcast over the TP group, before the group's agreement), so all T run the same scheduler on
// the same requests and step together; only tp_rank 0 reports tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/group.h"
#include "common/dtype.h"
#include "common/status.h"
#include "grammar/token_constraint.h"
#include "worker/step_engine.h"

namespace shoal {

struct ServeLoopOptions {
  std::string coordinator_host = "127.0.0.1";
  int coordinator_port = 0;
  std::string group = "g0";
  std::string model_name;
  int64_t connect_timeout_ms = 120000;
  int64_t idle_poll_ms = 50;
  std::vector<int> local_experts;  // for Hello (what /v1/cluster shows)
  comm::Group* tp_group = nullptr;  // this rank's attention-TP replica (not owned); null: none
  int replica = 0;                  // which replica of the group it is
  // The model's tokens as bytes, for requests whose output is constrained to a JSON schema (forced tool
  // calls); null: such requests fail with an error that says why.
  std::shared_ptr<const grammar::TokenVocabulary> vocabulary;
  // Where experts gained by a rebalance are loaded from, and in which dtype they are kept (engine.dtype
  // on the CPU; empty: as stored). An empty model_dir refuses rebalances that gain experts.
  std::string model_dir;
  std::optional<DType> weight_dtype;
};

// Returns OK after a Shutdown from the coordinator; Unavailable when the coordinator connection or the
// group was lost (every rank returns, none hangs).
Status RunServeLoop(StepEngine& engine, const ServeLoopOptions& opts);

}  // namespace shoal
