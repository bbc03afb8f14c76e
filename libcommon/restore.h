// ck-restore: recreate a dumped process tree and resume it.
#pragma once
#include <string>
#include <vector>

namespace ck {

struct RestoreOptions {
  std::string dir;        // image set; empty: a stream on stdin (or --from)
  std::string from;       // --from NAME: the image NAME of the store service
  std::string socket;     // --socket: the store service's (store_socket_path)
  bool detach = false;    // -d: do not wait for the root task
  std::string pidfile;
  bool shell_job = false;
  bool pidns = false;     // restore into a new pid namespace (image pids inside it)
  std::string cgroup_root = "/";     // restore the image's cgroups under this one
  std::string cgroup_mode = "strict";  // strict | overwrite | ignore (see ck-cgdump(1))
  bool cgroup_skip_missing = false;  // a setting the kernel lacks: warn, not fail
  std::string netns;      // --netns PATH: restore into this network namespace
  bool unlock_on_failure = false;  // a failed restore lifts the network lock (default: kept for a retry)
  std::string cgroup_v1 = "warn";    // a v1 membership that differs from ck-restore's own: warn | refuse
  bool lazy = false;      // --lazy: anonymous memory served by ck-uffd-serve as the tree touches it
  bool progress = false;  // --progress: passed to ck-uffd-serve
  std::vector<std::string> inherit_fds;  // "NAME=FD": FD replaces the image's external resource NAME
};

// Returns ck-restore's exit status: the root task's, or 0 with detach.
int restore_tree(const RestoreOptions& o);

}  // namespace ck
