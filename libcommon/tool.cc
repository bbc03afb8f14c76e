#include "tool.h"

#include <fcntl.h>

#include <csignal>
#include <cstdio>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "stream.h"

namespace ck {

void add_common_options(CLI::App& app, CommonOptions& o) {
  // Subcommands made after this take the common flags too
  // ("ck-store put -v"): they inherit fallthrough from their parent.
  app.fallthrough();
  app.add_flag("-v,--verbose", o.verbose, "more messages (repeat for more); CK_LOG sets levels per module");
  app.add_flag("-q,--quiet", o.quiet, "errors only");
  app.add_option("--log-file", o.log_file, "write messages to this file instead of stderr");
}

int run_tool(const char* tool, CLI::App& app, CommonOptions& o, int argc, char** argv,
             const std::function<int()>& body) {
  // Started with stdin, stdout or stderr closed (as CI may do): give each a
  // /dev/null, as a shell would, so that no pipe or file opened later takes
  // 0..2 and is then mistaken for (or dup2'ed over by) a standard stream.
  for (int fd = 0; fd < 3; ++fd)
    if (::fcntl(fd, F_GETFD) < 0 && ::open("/dev/null", O_RDWR) < 0) return kFail;
  log::set_tool(tool);
  log::install_crash_handlers();  // a crash still writes every message logged before it
  ::signal(SIGPIPE, SIG_IGN);
  app.set_version_flag("--version", std::string(tool) + " " + kVersion);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    std::fprintf(stderr, "Try '%s --help' for more information.\n", tool);
    return kUsage;
  }
  log::configure("", o.verbose - o.quiet);
  if (!o.log_file.empty()) log::set_log_file(o.log_file);
  try {
    int rc = body();
    log::flush();
    return rc;
  } catch (const Error& e) {
    log::flush();
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return e.status();
  } catch (const std::exception& e) {
    log::flush();
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return kFail;
  }
}

}  // namespace ck
