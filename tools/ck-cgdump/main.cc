// ck-cgdump: the cgroup v2 side of a tree, as stream frames.  See man/ck-cgdump.1.
#include <unistd.h>

#include "cgroup.h"
#include "error.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{
      "ck-cgdump: dump the cgroup v2 hierarchy of a process tree.\n"
      "Without --cgroup: reads a stream on stdin, forwards it and appends the cgroups of every task in it\n"
      "(their subtrees and the ancestors up to the root). With --cgroup PATH: writes a stream of its own\n"
      "holding that subtree and every task in it."};
  ck::CommonOptions co;
  ck::CgdumpOptions o;
  std::string mode = "strict";
  app.add_option("--cgroup", o.cgroup, "dump this cgroup subtree alone (a cgroup path: /a/b)");
  app.add_option("--cgroup-fs", o.fs_root,
                 "the cgroup2 mount (default $CK_CGROUP_ROOT, else /sys/fs/cgroup/unified or /sys/fs/cgroup)");
  // Test entry: what ck-restore does with the cgroup frames, alone.
  auto* rf = app.add_option("--restore-from", o.restore_from, "restore the cgroups of a stream (FILE or -)")
                 ->group("");
  app.add_option("--cgroup-root", o.restore.cgroup_root, "with --restore-from: restore under this cgroup")->group("");
  app.add_option("--cgroup-mode", mode, "with --restore-from: strict, overwrite or ignore")->group("");
  app.add_flag("--skip-missing", o.restore.skip_missing, "with --restore-from: warn about settings this kernel lacks")
      ->group("");
  app.add_flag("--place", o.place, "with --restore-from: move the recorded live tasks into their cgroups")->group("");
  ck::add_common_options(app, co);
  return ck::run_tool("ck-cgdump", app, co, argc, argv, [&] {
    o.restore.mode = ck::parse_cgroup_mode(mode);
    if (!rf->count() && !o.cgroup.empty() && o.restore.cgroup_root != "/")
      ck::usage_error("--cgroup-root goes with --restore-from");
    if (rf->count() && !o.cgroup.empty()) ck::usage_error("--cgroup and --restore-from exclude each other");
    return ck::run_cgdump(o, STDIN_FILENO, STDOUT_FILENO);
  });
}
