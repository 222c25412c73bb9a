// Shared by the multi-process tests (ctest label mpi): each test binary runs under
// `mpirun -np N`; main() (mpi_test_main.cc) initialises MPI, and World() is the group of all ranks.
// Rank 0 prints gtest's usual output; other ranks print only their failures, tagged with the rank.
// The exit code is non-zero on every rank if any rank failed.
#pragma once

#include <mpi.h>

#include "comm/mpi/mpi_group.h"

namespace shoal::testing {

// The group of all ranks, created once after MPI_Init.
comm::MpiGroup& World();

// A fresh group over all ranks: for tests that break a group on purpose (timeouts).
std::unique_ptr<comm::MpiGroup> NewWorldGroup();

// Deadline for the happy paths: long enough for 4 oversubscribed ranks on 2 cores, short enough
// that a bug fails the test rather than the ctest timeout.
inline Deadline TestDeadline() { return Deadline::AfterMs(60000); }

}  // namespace shoal::testing
