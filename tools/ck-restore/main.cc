// ck-restore: recreate a dumped process tree and resume it.
#include "restore.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-restore: recreate a dumped process tree (same pids, memory, files, registers) and resume it"};
  ck::CommonOptions common;
  ck::RestoreOptions o;
  ck::add_common_options(app, common);
  app.add_option("-D,--images-dir", o.dir, "image set to restore (default: a stream on stdin)");
  app.add_flag("-d,--detach", o.detach, "do not wait for the root task; exit 0 once it runs");
  app.add_option("--pidfile", o.pidfile, "write the root task's pid to this file");
  return ck::run_tool("ck-restore", app, common, argc, argv, [&] { return ck::restore_tree(o); });
}
