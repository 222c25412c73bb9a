// Batch generation on one engine, for `shoal generate`, `shoal worker --batch` and the benchmarks: a
// fixed list of requests run to completion through the same continuous-batching Scheduler the serving
// path uses (steps of at most engine.max_step_tokens: decode tokens, then prompt chunks; queueing past
// engine.max_num_seqs; preemption when KV blocks run out).
//
// On a rank of an expert-parallel group every rank calls Generate with its own requests (possibly
// none); the ranks step together until no rank has work, agreeing before every step (one small
// all-reduce) on whether to go on — so a rank whose requests finish early, or fail, never leaves the
// others waiting in a collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/sampling_params.h"
#include "worker/step_engine.h"

namespace shoal {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;           // greedy unless set; the seed is per request
  std::vector<int32_t> stop_ids;     // generation ends after emitting one of these
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::string finish_reason;  // "length" or "stop"
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // every token sampled
  int64_t decode_tokens = 0;     // tokens produced by pure decode steps (no prompt chunk in the step)
  int64_t decode_steps = 0;
  double prefill_seconds = 0;    // steps that fed prompt chunks (and any decode tokens alongside)
  double decode_seconds = 0;     // pure decode steps
  double decode_weight_bytes = 0;  // Σ over decode steps of the weight bytes each read
  StepPhases phases;               // where this rank's step time went (engine.phase_seconds_total's growth)
};

// "attention 41% (12.0 ms), mlp …": the phases as shares of `step_seconds` (other = the rest).
std::string FormatPhases(const StepPhases& p, double step_seconds);

StatusOr<std::vector<GenerateResult>> Generate(StepEngine& engine, const std::vector<GenerateRequest>& requests,
                                               GenerateStats* stats);

}  // namespace shoal
