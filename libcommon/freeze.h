// ck-freeze: stop every thread of a process tree, record it, run a command
// while it stays frozen, then commit (kill / leave running / leave stopped)
// if the command succeeded, or resume the tree exactly as it was otherwise.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

namespace ck {
namespace pb {
class Creds;
}

struct FreezeOptions {
  pid_t pid = 0;
  enum Commit { kKill, kLeaveRunning, kLeaveStopped } commit = kKill;
  std::vector<std::string> command;  // empty: the stream goes to stdout (not with kKill)
  // Pipes and FIFOs held outside the tree too that the dump accepts
  // ("pipe:[1234]", "fifo:/run/x"), for ck-restore --inherit-fd.
  std::vector<std::string> external;
  // COMMAND must exit within this many seconds (0: no limit); past it, its
  // process group is killed and the tree resumes.  A stage stopped by a
  // signal or stuck on a dead peer would otherwise keep the tree frozen.
  unsigned timeout_s = kDefaultTimeout;
  static constexpr unsigned kDefaultTimeout = 600;
};

// Returns the exit status for ck-freeze: 0, or the command's status.
int freeze_tree(const FreezeOptions& o);

// Fills `c` from /proc/PID/status (all but securebits).
void fill_creds(pid_t pid, pb::Creds* c);

}  // namespace ck
