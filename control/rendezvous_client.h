// The worker's side of the rendezvous for groups launched without MPI (control/wire.h): one short
// connection to the coordinator that posts (rank 0) or fetches (every other rank) the id the group's
// data plane is built from — NCCL's unique id, which NcclGroup::CreateFromId takes.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "control/wire.h"

namespace shoal::control {

// Connects to the coordinator (retrying for connect_timeout_ms: it may still be starting), sends
// `request` and waits up to wait_ms for the answer: the group's id, the same on every rank (rank 0
// gets back what it posted). A refusal is InvalidArgument with the coordinator's reason (bad
// token, wrong model, group size disagreeing with rank 0's, a group already serving); no answer in
// time is DeadlineExceeded.
StatusOr<std::string> ShareGroupId(const std::string& host, int port, const Rendezvous& request,
                                   int64_t connect_timeout_ms, int64_t wait_ms);

// A short fingerprint of an id (FNV-1a, 16 hex digits) for logs: ranks that print the same one
// share a data plane; the id itself (rank 0's bootstrap address) stays out of the logs.
std::string IdFingerprint(const std::string& id);

}  // namespace shoal::control
