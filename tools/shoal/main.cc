// shoal: one binary, one subcommand per job. `shoal --help` lists them.
#include <CLI/CLI.hpp>

#include <vector>

#include "tools/shoal/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"shoal: serve mixture-of-experts models across a cluster"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "shoal 0.1.0");
  // Every option's default in --help (subcommands inherit this); options whose default comes from the
  // config file say so in their own text or default string.
  app.option_defaults()->always_capture_default();
  int exit_code = 0;
  shoal::cli::AddGenerateCommand(app, &exit_code);
  shoal::cli::AddWorkerCommand(app, &exit_code);
  shoal::cli::AddBenchCommand(app, &exit_code);
  shoal::cli::AddServeCommands(app, &exit_code);
  shoal::cli::AddPlanCommand(app, &exit_code);
  // An option without a default of its own (a path, a key) says so, rather than showing nothing.
  std::vector<CLI::App*> pending = {&app};
  while (!pending.empty()) {
    CLI::App* cmd = pending.back();
    pending.pop_back();
    for (CLI::Option* opt : cmd->get_options()) {
      if (opt->get_expected_min() > 0 && opt->get_default_str().empty()) opt->default_str("none");
    }
    for (CLI::App* sub : cmd->get_subcommands({})) pending.push_back(sub);
  }
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
