// Subcommands of the `shoal` binary. Each registers its options on the CLI11 app and returns the
// callback's exit code through *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace shoal::cli {

void AddGenerateCommand(CLI::App& app, int* exit_code);
void AddWorkerCommand(CLI::App& app, int* exit_code);
void AddBenchCommand(CLI::App& app, int* exit_code);

}  // namespace shoal::cli
