// ck-restore: recreate a dumped process tree and resume it.
#include "restore.h"
#include "tool.h"

int main(int argc, char** argv) {
  CLI::App app{"ck-restore: recreate a dumped process tree (same pids, memory, files, registers) and resume it"};
  ck::CommonOptions common;
  ck::RestoreOptions o;
  ck::add_common_options(app, common);
  app.add_option("-D,--images-dir", o.dir, "image set to restore (default: a stream on stdin)");
  app.add_option("--from", o.from, "restore image NAME of the store service (ck-store serve)");
  app.add_option("--socket", o.socket, "with --from: the store service's socket (default: $CK_STORE_SOCKET, then /run/ck/store.sock)");
  app.add_flag("-d,--detach", o.detach, "do not wait for the root task; exit 0 once it runs");
  app.add_flag("--pidns", o.pidns, "restore into a new pid namespace, where the tasks have their dumped pids");
  app.add_flag("--shell-job", o.shell_job,
               "give the tree's terminal fds the caller's terminal; a job that was in the foreground is put there again");
  app.add_option("--pidfile", o.pidfile, "write the root task's pid (as seen from here) to this file");
  app.add_option("--cgroup-root", o.cgroup_root, "restore the image's cgroups under this cgroup (default /)");
  app.add_option("--cgroup-mode", o.cgroup_mode, "an existing cgroup: strict (reuse only if equal), overwrite, ignore")
      ->check(CLI::IsMember({"strict", "overwrite", "ignore"}));
  app.add_flag("--cgroup-skip-missing", o.cgroup_skip_missing, "a cgroup setting this kernel lacks: warn instead of failing");
  app.add_option("--netns", o.netns, "restore into this network namespace (a path such as /run/netns/NAME)");
  app.add_flag("--unlock-on-failure", o.unlock_on_failure,
               "if the restore fails, lift the image's network lock anyway (default: keep it for another try)");
  app.add_option("--cgroup-v1", o.cgroup_v1,
                 "a cgroup v1 membership of the image that differs from ck-restore's own: warn (default) or refuse")
      ->check(CLI::IsMember({"warn", "refuse"}));
  app.add_flag("--lazy", o.lazy,
               "post-copy: the tree runs before its anonymous memory is in; ck-uffd-serve (started here) serves it");
  app.add_flag("--progress", o.progress, "with --lazy: ck-uffd-serve reports the pages placed on stderr");
  app.add_option("--inherit-fd", o.inherit_fds,
                 "NAME=FD: fd FD of ck-restore replaces the external resource NAME of the image "
                 "(a pipe or FIFO accepted with ck-freeze --external, e.g. 'pipe:[1234]=0'); repeat for more")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  return ck::run_tool("ck-restore", app, common, argc, argv, [&] { return ck::restore_tree(o); });
}
