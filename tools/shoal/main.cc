// shoal: one binary, one subcommand per job. `shoal --help` lists them.
#include <CLI/CLI.hpp>

#include "tools/shoal/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"shoal: serve mixture-of-experts models across a cluster"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "shoal 0.1.0");
  int exit_code = 0;
  shoal::cli::AddGenerateCommand(app, &exit_code);
  shoal::cli::AddWorkerCommand(app, &exit_code);
  shoal::cli::AddBenchCommand(app, &exit_code);
  shoal::cli::AddServeCommands(app, &exit_code);
  shoal::cli::AddPlanCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
