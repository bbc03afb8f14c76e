#include "pagemap_scan.h"
#include "track.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "fd.h"
#include "log.h"
#include "proc.h"
#include "ptrace.h"
#include "vma.h"

CK_LOG_MODULE("track");

namespace ck {
namespace {
// Newer than this machine's headers (include/uapi/linux/userfaultfd.h, fs.h).
constexpr uint64_t kFeatureWpUnpopulated = 1ull << 13;
constexpr uint64_t kFeatureWpAsync = 1ull << 15;
using ck_page_region = pagemap::PageRegion;
using ck_pm_scan_arg = pagemap::ScanArg;
using pagemap::kPageIsFile;
using pagemap::kPageIsPfnZero;
using pagemap::kPageIsPresent;
using pagemap::kPageIsSwapped;
using pagemap::kPageIsWritten;
constexpr uint64_t kPmScanWpMatching = pagemap::kScanWpMatching;
constexpr uint64_t kPmScanCheckWpasync = pagemap::kScanCheckWpasync;
constexpr unsigned long kPagemapScan = pagemap::kIoctl;
constexpr int kHolderUffd = 3, kHolderPidfd = 4;
constexpr char kHolderComm[] = "ck-track-hold";

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd(int pidfd, int fd) { return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool is_holder(pid_t h) {
  if (h <= 0) return false;
  try {
    return read_stat(h).comm == kHolderComm;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

bool vma_trackable(const pb::Vma& v) {
  return vma_has_private_pages(v) && !vma_is_shmem_object(v) && !(v.flags() & MAP_SHARED);
}

bool vma_has_uw(const pb::Vma& v) {
  const std::string& f = v.vmflags();
  for (size_t i = 0; i + 1 < f.size(); i += 3)
    if (f[i] == 'u' && f[i + 1] == 'w' && (i + 2 == f.size() || f[i + 2] == ' ')) return true;
  return false;
}

uint64_t proc_start_time(pid_t pid) {
  try {
    Stat st = read_stat(pid);
    if (st.f.size() > 3 && st.f[3] == "Z") return 0;
    return st.u(22);
  } catch (const Error&) {
    return 0;
  }
}

std::vector<TrackedVma> to_tracked(const std::vector<pb::Vma>& vmas) {
  std::vector<TrackedVma> out;
  for (const auto& v : vmas) {
    if (!vma_trackable(v)) continue;
    TrackedVma t;
    t.start = v.start(), t.end = v.end(), t.pgoff = v.pgoff(), t.dev = v.dev(), t.ino = v.ino();
    t.prot = v.prot(), t.flags = v.flags();
    t.uw = vma_has_uw(v);
    out.push_back(t);
  }
  return out;
}

bool arm_range(int uffd, int pagemap_fd, uint64_t start, uint64_t end) {
  struct uffdio_register reg;
  std::memset(&reg, 0, sizeof reg);
  reg.range.start = start;
  reg.range.len = end - start;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return false;
  // With an output vector (the regions it fills are thrown away): the walk
  // without one was seen to leave pages unprotected.
  ck_page_region regs[256];
  ck_pm_scan_arg a;
  std::memset(&a, 0, sizeof a);
  a.size = sizeof a;
  a.flags = kPmScanWpMatching | kPmScanCheckWpasync;
  a.start = start;
  a.end = end;
  a.vec = reinterpret_cast<uintptr_t>(regs);
  a.vec_len = sizeof regs / sizeof regs[0];
  a.category_mask = kPageIsWritten;
  a.return_mask = kPageIsWritten;
  while (a.start < end) {
    if (::ioctl(pagemap_fd, kPagemapScan, &a) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (a.walk_end <= a.start) break;
    a.start = a.walk_end;
  }
  return true;
}

int open_tracking(pid_t pid, double* freeze_ms) {
  uint64_t insn = find_syscall_insn(pid);
  ScopedFd pidfd(pidfd_open(pid));
  if (!pidfd.valid()) throw_errno(strf("unable to open a pidfd for pid %d", pid));

  auto t0 = std::chrono::steady_clock::now();
  std::vector<pid_t> stopped;
  struct Release {
    std::vector<pid_t>* tids;
    ~Release() {
      for (pid_t t : *tids) detach_thread(t);
    }
  } release{&stopped};
  for (pid_t t : list_tids(pid)) {
    if (ptrace(PTRACE_SEIZE, t, 0, 0) != 0) {
      if (errno == ESRCH) continue;  // exited meanwhile
      throw_errno(strf("unable to seize thread %d", t));
    }
    stopped.push_back(t);
    if (ptrace(PTRACE_INTERRUPT, t, 0, 0) != 0 && errno != ESRCH) throw_errno(strf("unable to interrupt thread %d", t));
  }
  std::vector<pid_t> live;
  for (pid_t t : stopped)
    if (wait_interrupt_stop(t)) live.push_back(t);
  stopped = live;
  if (stopped.empty()) fail(strf("pid %d has exited", pid));
  double t_seized = ms_since(t0);

  ScopedFd uffd;
  {
    RemoteSyscalls rs(stopped.front(), insn);
    long rfd = rs.check("userfaultfd", SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    uffd.reset(pidfd_getfd(pidfd.get(), static_cast<int>(rfd)));
    int err = errno;
    rs.syscall(SYS_close, static_cast<uint64_t>(rfd));
    if (!uffd.valid()) throw_errno(strf("unable to take the userfaultfd out of pid %d", pid), err);
  }
  // The threads run again from here: registering and write-protecting need
  // not stop them (see track.h).
  for (pid_t t : stopped) detach_thread(t);
  stopped.clear();
  double stopped_ms = ms_since(t0);
  struct uffdio_api api;
  std::memset(&api, 0, sizeof api);
  api.api = UFFD_API;
  api.features = kFeatureWpAsync | kFeatureWpUnpopulated;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0)
    throw_errno("unable to enable userfaultfd WP_ASYNC write tracking (Linux 6.7 or later)");
  if (freeze_ms) *freeze_ms = stopped_ms;
  LOG_DEBUG("pid %d: seized at %.3f ms, uffd taken and threads resumed at %.3f ms", pid, t_seized, stopped_ms);
  return uffd.extract();
}

namespace {
// One PAGEMAP_SCAN walk over [start, end) for written pages; with protect,
// each page found is write-protected again in the same step.  fn(lo, hi,
// categories) for every region.  Returns 0 or the errno of a failed call.
template <class Fn>
int scan_written_pages(int pagemap_fd, uint64_t start, uint64_t end, bool protect, Fn fn) {
  ck_page_region regs[512];
  ck_pm_scan_arg a;
  std::memset(&a, 0, sizeof a);
  a.size = sizeof a;
  a.flags = kPmScanCheckWpasync | (protect ? kPmScanWpMatching : 0);
  a.start = start;
  a.end = end;
  a.vec = reinterpret_cast<uintptr_t>(regs);
  a.vec_len = sizeof regs / sizeof regs[0];
  a.category_mask = kPageIsWritten;
  a.return_mask = kPageIsWritten | kPageIsPresent | kPageIsSwapped | kPageIsFile | kPageIsPfnZero;
  while (a.start < end) {
    int n = ::ioctl(pagemap_fd, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    for (int i = 0; i < n; ++i) fn(regs[i].start, regs[i].end, regs[i].categories);
    if (a.walk_end <= a.start) break;
    a.start = a.walk_end;
  }
  return 0;
}
}  // namespace

bool written_ranges(int pagemap_fd, pid_t pid, uint64_t start, uint64_t end, Ranges* own, Ranges* other) {
  int err = scan_written_pages(pagemap_fd, start, end, false, [&](uint64_t lo, uint64_t hi, uint64_t c) {
    bool mine = (c & kPageIsPresent) ? !(c & (kPageIsFile | kPageIsPfnZero)) : (c & kPageIsSwapped) != 0;
    Ranges* out = mine ? own : other;
    if (!out->empty() && out->back().second == lo)
      out->back().second = hi;
    else
      out->push_back({lo, hi});
  });
  if (err == EPERM) return false;
  if (err == ESRCH) fail(strf("pid %d vanished during the dump", pid));
  if (err) throw_errno(strf("unable to scan written pages of pid %d", pid), err);
  return true;
}

void clear_written(int pagemap_fd, pid_t pid, const Ranges& ranges) {
  for (const auto& [lo, hi] : ranges) {
    int err = scan_written_pages(pagemap_fd, lo, hi, true, [](uint64_t, uint64_t, uint64_t) {});
    // A mapping changed since (EPERM, ENOENT-like errors): the next round
    // sees a layout that does not match and copies it whole.
    if (err == ESRCH) fail(strf("pid %d vanished during the dump", pid));
    if (err && err != EPERM && err != EINVAL && err != ENOENT)
      throw_errno(strf("unable to protect written pages of pid %d again", pid), err);
  }
}

pid_t spawn_holder(pid_t target, int uffd) {
  ScopedFd own(uffd);
  ScopedFd pidfd(pidfd_open(target));
  if (!pidfd.valid()) throw_errno(strf("unable to open a pidfd for pid %d", target));
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
  ScopedFd rd(p[0]), wr(p[1]);
  pid_t a = ::fork();
  if (a < 0) throw_errno("unable to fork");
  if (a == 0) {
    ::setsid();
    pid_t b = ::fork();
    if (b != 0) {
      ssize_t n = ::write(wr.get(), &b, sizeof b);
      _exit(n == sizeof b ? 0 : 1);
    }
    // The holder: only async-signal-safe calls from here on.
    if (::dup2(own.get(), 100) < 0 || ::dup2(pidfd.get(), 101) < 0) _exit(1);
    if (::dup2(100, kHolderUffd) < 0 || ::dup2(101, kHolderPidfd) < 0) _exit(1);
    ::syscall(SYS_close_range, kHolderPidfd + 1, ~0U, 0);
    int nul = ::open("/dev/null", O_RDWR);
    if (nul >= 0) {
      ::dup2(nul, 0), ::dup2(nul, 1), ::dup2(nul, 2);
      if (nul > kHolderPidfd) ::close(nul);
    }
    ::fcntl(kHolderUffd, F_SETFD, 0);
    if (::chdir("/") != 0) _exit(1);
    ::prctl(PR_SET_NAME, kHolderComm, 0, 0, 0);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGTERM, SIG_DFL);
    struct pollfd pf = {kHolderPidfd, POLLIN, 0};
    for (;;) {
      int r = ::poll(&pf, 1, -1);
      if (r > 0 || (r < 0 && errno != EINTR)) _exit(0);  // the target exited
    }
  }
  wr.reset();
  pid_t holder = 0;
  ssize_t n = read_full(rd.get(), &holder, sizeof holder);
  int st;
  while (::waitpid(a, &st, 0) < 0 && errno == EINTR) {
  }
  if (n != sizeof holder || holder <= 0) fail(strf("unable to start the tracking holder for pid %d", target));
  LOG_DEBUG("pid %d: tracking holder is pid %d", target, holder);
  return holder;
}

int take_from_holder(pid_t holder) {
  if (!is_holder(holder)) {
    errno = ESRCH;
    return -1;
  }
  return take_fd(holder, kHolderUffd).extract();
}

void stop_holder(pid_t holder) {
  if (!is_holder(holder)) return;
  ScopedFd pidfd(pidfd_open(holder));
  ::kill(holder, SIGTERM);
  // Its uffd (and the registration of every range with it) goes only when
  // it has exited: a new uffd would find the ranges busy until then.
  if (pidfd.valid()) {
    struct pollfd pf = {pidfd.get(), POLLIN, 0};
    while (::poll(&pf, 1, 2000) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace ck
