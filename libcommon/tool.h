// What every tool's main() shares: the common flags (-v, -q, --log-file),
// and the one place where an error is printed and mapped to an exit status.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace ck {

struct CommonOptions {
  int verbose = 0;
  int quiet = 0;
  std::string log_file;
};

// Adds -v/-q/--log-file to app.
void add_common_options(CLI::App& app, CommonOptions& o);

// Parses argv, applies the logging options, runs body.  Returns the exit
// status: CLI11 usage errors give 2, ck::Error its own status, other
// exceptions 1.  The error message is printed here and only here.
int run_tool(const char* tool, CLI::App& app, CommonOptions& o, int argc, char** argv,
             const std::function<int()>& body);

}  // namespace ck
