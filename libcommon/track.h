// Write tracking between pre-dump rounds: userfaultfd WP_ASYNC armed inside
// the target, read back with PAGEMAP_SCAN.  See man/ck-memread.1 (TRACKING).
//
// Arming (ck-memread --track) seizes every thread of a process briefly,
// makes it create a userfaultfd (a remote syscall), takes the fd out with
// pidfd_getfd and closes the target's copy, so the target's fd table never
// shows it.  The uffd is then set up from outside (UFFDIO_API with
// WP_ASYNC|WP_UNPOPULATED, UFFDIO_REGISTER MODE_WP on every private VMA
// that carries pages) and every page is write-protected with one
// PAGEMAP_SCAN(PM_SCAN_WP_MATCHING) per VMA, before the threads run again.
//
// The uffd must stay open between rounds (closing it ends the tracking), and
// rounds are separate processes, so a small holder process per tracked task
// keeps it: "ck-track-hold", a daemon (own session, stdio on /dev/null) with
// the uffd on fd 3 and a pidfd of the target on fd 4; it exits when the
// target exits or on SIGTERM (--untrack).  A later round takes the uffd from
// the holder with pidfd_getfd.
//
// State, per tracked tree, in STATE_DIR/ROOTPID/ (STATE_DIR: --state-dir,
// else $CK_TRACK_DIR, else /run/ck/track):
//   round            the last round written (the --track round is 1)
//   PID              one per tracked process: its start time, its holder,
//                    and the layout of the last round (with "uw" set on the
//                    VMAs registered for write protection)
//
// A round copies, per VMA: only the pages written since the last round when
// the VMA is the same as last round and was registered then and now (the
// "uw" VmFlag); everything present otherwise (new, moved, resized,
// re-protected VMAs, a new process, a fork child, an exec'd process), after
// registering and write-protecting it, so no write is ever missed.  Pages
// of tracked VMAs that hold nothing of their own any more (MADV_DONTNEED)
// are named in every round too (MemReader::scan_gone).  Shared memory
// objects are copied whole every round.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace ck {

// The state directory: opt if set, else $CK_TRACK_DIR, else /run/ck/track.
std::string track_state_dir(const std::string& opt);

// A VMA as tracking compares it between rounds.
struct TrackedVma {
  uint64_t start = 0, end = 0, pgoff = 0, dev = 0, ino = 0;
  uint32_t prot = 0, flags = 0;
  bool uw = false;  // registered for write protection
};

struct TrackedProc {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat field 22
  pid_t holder = 0;         // holder process (0: none)
  std::vector<TrackedVma> vmas;
};

// What a round decided for one VMA.
enum class VmaMode : uint8_t {
  kFull,   // copy every present page (after arming it when possible)
  kDirty,  // copy only the pages written since the last round
};

// Whether ck tracks writes to v (a private mapping whose pages ck-memread
// copies; shared objects are copied whole every round instead).
bool vma_trackable(const pb::Vma& v);

// Has "uw" in its VmFlags.
bool vma_has_uw(const pb::Vma& v);

uint64_t proc_start_time(pid_t pid);  // 0 if gone

// Seizes every thread of pid, creates a uffd inside it, takes it out,
// closes the target's copy, enables WP_ASYNC and registers + write-protects
// every trackable VMA, then lets the threads go.  Returns the uffd and how
// long the threads were stopped.  already_stopped: the caller is the tracer
// and every thread is in a ptrace stop (then nothing is seized).
int arm_tracking(pid_t pid, double* freeze_ms, bool already_stopped = false);

// Registers [start, end) of uffd's mm for WP and write-protects every page
// in it (pagemap_fd: /proc/PID/pagemap).  False when the range cannot be
// tracked (errno tells why; ESRCH: the uffd's mm is gone, e.g. after exec).
bool arm_range(int uffd, int pagemap_fd, uint64_t start, uint64_t end);

// Starts the holder daemon for uffd (taken over: closed here).  Returns its pid.
pid_t spawn_holder(pid_t target, int uffd);
// The holder's uffd (pidfd_getfd), or -1 with errno set.
int take_from_holder(pid_t holder);
// SIGTERM to the holder if it still is one (comm ck-track-hold).
void stop_holder(pid_t holder);

// The state of one tracked tree.
class TrackState {
 public:
  TrackState(const std::string& state_dir, pid_t root);
  bool exists() const;  // a --track round was run for root
  uint32_t round() const { return round_; }
  void load();
  // Tracked processes by pid (loaded).
  std::map<pid_t, TrackedProc>& procs() { return procs_; }
  // Writes round and every process file; removes files of pids not in procs.
  void save(uint32_t round);
  void remove_all();  // stops every holder, removes the directory
  const std::string& dir() const { return dir_; }

 private:
  std::string base_, dir_;
  pid_t root_;
  uint32_t round_ = 0;
  std::map<pid_t, TrackedProc> procs_;
};

std::vector<TrackedVma> to_tracked(const std::vector<pb::Vma>& vmas);

}  // namespace ck
