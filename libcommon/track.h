// Write tracking between pre-dump rounds, the kernel side: userfaultfd
// WP_ASYNC armed inside the target, read back with PAGEMAP_SCAN.  Which
// pages a round copies, and the state kept between rounds, belong to the
// round module (round.h).  See man/ck-memread.1 (ROUNDS).
//
// open_tracking() seizes every thread of a process briefly, makes it create
// a userfaultfd (a remote syscall), takes the fd out with pidfd_getfd and
// closes the target's copy, so the target's fd table never shows it, and
// enables WP_ASYNC|WP_UNPOPULATED on it.  arm_range() then registers a
// range for write protection (UFFDIO_REGISTER MODE_WP) and write-protects
// every page in it with PAGEMAP_SCAN(PM_SCAN_WP_MATCHING); the threads run
// meanwhile, as every page of an armed range is copied after it was
// protected.  From then on a write to a page marks it "written" (the kernel
// drops the protection, no fault reaches anyone) until the next scan that
// protects it again.
//
// The uffd must stay open between rounds (closing it ends the tracking), and
// rounds are separate processes, so a small holder process per tracked task
// keeps it: "ck-track-hold", a daemon (own session, stdio on /dev/null) with
// the uffd on fd 3 and a pidfd of the target on fd 4; it exits when the
// target exits or on SIGTERM.  A later round takes the uffd from the holder
// with pidfd_getfd.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ck.pb.h"

namespace ck {

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

// Whether ck tracks writes to v (a private mapping whose pages ck-memread
// copies; shared objects are copied whole every round instead).
bool vma_trackable(const pb::Vma& v);

// Has "uw" in its VmFlags.
bool vma_has_uw(const pb::Vma& v);

uint64_t proc_start_time(pid_t pid);  // 0 if gone

// Seizes every thread of pid, creates a uffd inside it, takes it out,
// closes the target's copy and enables WP_ASYNC on it, then lets the
// threads go.  Nothing is registered yet (arm_range).  Returns the uffd and
// how long the threads were stopped.
int open_tracking(pid_t pid, double* freeze_ms);

// Registers [start, end) of uffd's mm for WP and write-protects every page
// in it (pagemap_fd: /proc/PID/pagemap).  False when the range cannot be
// tracked (errno tells why; ESRCH: the uffd's mm is gone, e.g. after exec).
bool arm_range(int uffd, int pagemap_fd, uint64_t start, uint64_t end);

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;  // [start, end), sorted, disjoint

// The pages of [start, end) written since they were last protected, added
// to *own when they hold data of their own now and to *other when not
// (given back with MADV_DONTNEED since, then perhaps read: nothing, the
// zero page, or the file's page again).  Nothing is protected again: the
// round persists what it found before clear_written.  False when the range
// is not registered for tracking (EPERM: a mapping made or changed since it
// was armed); throws on other errors.
bool written_ranges(int pagemap_fd, pid_t pid, uint64_t start, uint64_t end, Ranges* own, Ranges* other);
// Protects again the written pages inside each of ranges, and only those:
// a page written outside them since written_ranges stays "written" for the
// next round.
void clear_written(int pagemap_fd, pid_t pid, const Ranges& ranges);

// Starts the holder daemon for uffd (taken over: closed here).  Returns its pid.
pid_t spawn_holder(pid_t target, int uffd);
// The holder's uffd (pidfd_getfd), or -1 with errno set.
int take_from_holder(pid_t holder);
// SIGTERM to the holder if it still is one (comm ck-track-hold), and waits
// (up to 2 s) until it is gone, and with it the registration of its uffd.
void stop_holder(pid_t holder);

std::vector<TrackedVma> to_tracked(const std::vector<pb::Vma>& vmas);

}  // namespace ck
