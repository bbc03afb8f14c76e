// ck-freeze: freeze a process tree, stream its state into COMMAND, commit or
// roll back on COMMAND's status.
#include "freeze.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-freeze: stop a process tree, stream its state into COMMAND's stdin (or stdout), "
               "kill it if COMMAND succeeds, resume it otherwise"};
  ck::CommonOptions common;
  ck::FreezeOptions o;
  bool leave_running = false, leave_stopped = false;
  ck::add_common_options(app, common);
  app.add_option("-t,--tree", o.pid, "pid of the root of the tree")->required();
  auto* lr = app.add_flag("-R,--leave-running", leave_running, "after a successful dump, let the tree run on");
  app.add_flag("-S,--leave-stopped", leave_stopped, "after a successful dump, leave the tree stopped (SIGSTOP)")
      ->excludes(lr);
  app.add_option("--external", o.external,
                 "accept a pipe or FIFO that a process outside the tree holds too ('pipe:[INO]', 'fifo:PATH'); "
                 "ck-restore --inherit-fd hands it a replacement (repeat for more)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--timeout", o.timeout_s,
                 "seconds COMMAND may run while the tree is frozen; past them its process group is killed "
                 "and the tree resumes (0: no limit)")
      ->default_val(ck::FreezeOptions::kDefaultTimeout);
  app.add_option("command", o.command, "command that reads the stream on its stdin (needed unless -R or -S)")->expected(-1);
  app.positionals_at_end();
  return ck::run_tool("ck-freeze", app, common, argc, argv, [&] {
    if (leave_running) o.commit = ck::FreezeOptions::kLeaveRunning;
    if (leave_stopped) o.commit = ck::FreezeOptions::kLeaveStopped;
    return ck::freeze_tree(o);
  });
}
