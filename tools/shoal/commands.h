// Subcommands of the `shoal` binary. Each registers its options on the CLI11 app and returns the
// callback's exit code through *exit_code.
#pragma once

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace shoal::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddWorkerCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);

// For commands that run an MPI group: when `st` failed and a group was left broken (a peer stalled
// or failed mid-collective), MPI_Finalize could wait forever for that peer, so this prints the error
// and ends the whole job with MPI_Abort. Returns (doing nothing) otherwise.
void AbortIfGroupBroken(const Status& st, const char* command);

}  // namespace shoal::cli
