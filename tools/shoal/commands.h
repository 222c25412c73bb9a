// Subcommands of the `shoal` binary. Each registers its options on the CLI11 app and returns the
// callback's exit code through *exit_code.
#pragma once

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace shoal::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddWorkerCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);
void AddBenchServeCommand(CLI::App& bench, int* exit_code);    // `shoal bench serve`, under `bench`
void AddBenchBalanceCommand(CLI::App& bench, int* exit_code);  // `shoal bench balance`, under `bench`
void AddServeCommands(CLI::App& app, int* exit_code);  // serve and up
void AddPlanCommand(CLI::App& app, int* exit_code);

// For commands that run an MPI group, called while MPI is still up. On error it prints the error
// at once (so every failing rank has printed before any rank leaves MPI_Finalize and mpirun tears
// the job down), and when a group was left broken (a peer stalled or failed mid-collective) —
// where MPI_Finalize could wait forever for that peer — it ends the whole job with MPI_Abort.
void FinishGroupCommand(const Status& st, const char* command);

}  // namespace shoal::cli
