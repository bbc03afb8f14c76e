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

void mkdirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i < path.size() && path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("unable to create '" + p + "'");
  }
}

void write_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + strf(".%d.tmp", static_cast<int>(getpid()));
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) throw_errno("unable to create '" + tmp + "'");
  write_full(fd.get(), text.data(), text.size());
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("unable to rename '" + tmp + "'");
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

std::string track_state_dir(const std::string& opt) {
  if (!opt.empty()) return opt;
  const char* e = std::getenv("CK_TRACK_DIR");
  if (e && *e) return e;
  return "/run/ck/track";
}

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

int arm_tracking(pid_t pid, double* freeze_ms, bool already_stopped) {
  uint64_t insn = find_syscall_insn(pid);
  std::string pm = strf("/proc/%d/pagemap", pid);
  ScopedFd pagemap(::open(pm.c_str(), O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) throw_errno("unable to open '" + pm + "'");
  ScopedFd pidfd(pidfd_open(pid));
  if (!pidfd.valid()) throw_errno(strf("unable to open a pidfd for pid %d", pid));

  auto t0 = std::chrono::steady_clock::now();
  std::vector<pid_t> stopped;
  struct Release {
    std::vector<pid_t>* tids;
    bool own;
    ~Release() {
      if (own)
        for (pid_t t : *tids) detach_thread(t);
    }
  } release{&stopped, !already_stopped};
  std::vector<pid_t> tids = list_tids(pid);
  if (already_stopped) {
    stopped = tids;
  } else {
    std::vector<pid_t> seized;
    for (pid_t t : tids) {
      if (ptrace(PTRACE_SEIZE, t, 0, 0) != 0) {
        if (errno == ESRCH) continue;  // exited meanwhile
        throw_errno(strf("unable to seize thread %d", t));
      }
      stopped.push_back(t);
      if (ptrace(PTRACE_INTERRUPT, t, 0, 0) != 0 && errno != ESRCH)
        throw_errno(strf("unable to interrupt thread %d", t));
    }
    std::vector<pid_t> live;
    for (pid_t t : stopped)
      if (wait_interrupt_stop(t)) live.push_back(t);
    stopped = live;
  }
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
  struct uffdio_api api;
  std::memset(&api, 0, sizeof api);
  api.api = UFFD_API;
  api.features = kFeatureWpAsync | kFeatureWpUnpopulated;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0)
    throw_errno("unable to enable userfaultfd WP_ASYNC write tracking (Linux 6.7 or later)");
  double t_uffd = ms_since(t0);
  // The threads run again from here: registering and write-protecting need
  // not stop them, as every page is copied after it was protected, and a
  // mapping that changes meanwhile is seen (no "uw") and copied whole by
  // the next round.
  if (!already_stopped) {
    for (pid_t t : stopped) detach_thread(t);
    stopped.clear();
  }
  double stopped_ms = ms_since(t0);
  // /proc/PID/maps, not smaps: smaps walks every page table (milliseconds
  // for a big process) and only the ranges are needed here.
  std::vector<pb::Vma> vmas = parse_maps(read_file(strf("/proc/%d/maps", pid)), strf("/proc/%d/maps", pid));
  double t_maps = ms_since(t0);
  size_t armed = 0, refused = 0;
  for (const auto& v : vmas) {
    if (!vma_trackable(v)) continue;
    if (arm_range(uffd.get(), pagemap.get(), v.start(), v.end())) {
      ++armed;
    } else {
      ++refused;
      LOG_DEBUG("pid %d: vma %s not tracked (%s): copied whole every round", pid, format_vma(v).c_str(),
                std::strerror(errno));
    }
  }
  double ms = ms_since(t0);
  if (freeze_ms) *freeze_ms = stopped_ms;
  LOG_DEBUG("pid %d: seized at %.3f ms, uffd taken and threads resumed at %.3f, maps at %.3f, armed at %.3f", pid,
            t_seized, t_uffd, t_maps, ms);
  LOG_INFO("pid %d: write tracking armed on %zu vmas (%zu refused) in %.3f ms, threads stopped %.3f ms", pid, armed,
           refused, ms, stopped_ms);
  return uffd.extract();
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
  if (is_holder(holder)) ::kill(holder, SIGTERM);
}

// ---- state --------------------------------------------------------------------

TrackState::TrackState(const std::string& state_dir, pid_t root)
    : base_(state_dir), dir_(state_dir + strf("/%d", root)), root_(root) {}

bool TrackState::exists() const {
  struct stat st;
  return ::stat((dir_ + "/round").c_str(), &st) == 0;
}

void TrackState::load() {
  procs_.clear();
  std::string r;
  try {
    r = read_file(dir_ + "/round");
  } catch (const Error&) {
    fail(strf("pid %d is not tracked (no '%s/round'; run ck-memread --track -t %d first)", root_, dir_.c_str(), root_));
  }
  unsigned round = 0;
  if (std::sscanf(r.c_str(), "%u", &round) != 1) bad_input(strf("'%s/round' does not parse", dir_.c_str()));
  round_ = round;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) throw_errno("unable to open '" + dir_ + "'");
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) names.push_back(n);
  }
  ::closedir(d);
  for (const auto& n : names) {
    std::string path = dir_ + "/" + n;
    std::string text = read_file(path);
    TrackedProc p;
    size_t at = 0;
    bool head = false;
    while (at < text.size()) {
      size_t nl = text.find('\n', at);
      if (nl == std::string::npos) nl = text.size();
      std::string line = text.substr(at, nl - at);
      at = nl + 1;
      int pid = 0, holder = 0;
      unsigned long long st = 0;
      TrackedVma v;
      unsigned long long s, e, pg, dv, in;
      unsigned prot, fl, uw;
      if (std::sscanf(line.c_str(), "pid %d start %llu holder %d", &pid, &st, &holder) == 3) {
        p.pid = pid, p.start_time = st, p.holder = holder;
        head = true;
      } else if (std::sscanf(line.c_str(), "vma %llx %llx %x %x %llx %llx %llu %u", &s, &e, &prot, &fl, &pg, &dv, &in,
                             &uw) == 8) {
        v.start = s, v.end = e, v.prot = prot, v.flags = fl, v.pgoff = pg, v.dev = dv, v.ino = in, v.uw = uw != 0;
        p.vmas.push_back(v);
      } else if (line != "ck-track 1" && !line.empty()) {
        bad_input(strf("tracking state '%s' does not parse", path.c_str()));
      }
    }
    if (!head || std::to_string(p.pid) != n) bad_input(strf("tracking state '%s' does not parse", path.c_str()));
    procs_[p.pid] = p;
  }
}

void TrackState::save(uint32_t round) {
  mkdirs(dir_);
  round_ = round;
  for (auto& [pid, p] : procs_) {
    std::string t = "ck-track 1\n";
    t += strf("pid %d start %" PRIu64 " holder %d\n", p.pid, p.start_time, p.holder);
    for (const auto& v : p.vmas)
      t += strf("vma %" PRIx64 " %" PRIx64 " %x %x %" PRIx64 " %" PRIx64 " %" PRIu64 " %u\n", v.start, v.end, v.prot,
                v.flags, v.pgoff, v.dev, v.ino, v.uw ? 1u : 0u);
    write_atomic(strf("%s/%d", dir_.c_str(), pid), t);
  }
  DIR* d = ::opendir(dir_.c_str());
  if (d) {
    std::vector<std::string> stale;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos) continue;
      if (!procs_.count(std::atoi(n.c_str()))) stale.push_back(n);
    }
    ::closedir(d);
    for (const auto& n : stale) ::unlink((dir_ + "/" + n).c_str());
  }
  write_atomic(dir_ + "/round", strf("%u\n", round));
}

void TrackState::remove_all() {
  for (auto& [pid, p] : procs_) stop_holder(p.holder);
  DIR* d = ::opendir(dir_.c_str());
  if (d) {
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
    ::closedir(d);
    for (const auto& n : names) ::unlink((dir_ + "/" + n).c_str());
    ::rmdir(dir_.c_str());
  }
  procs_.clear();
}

}  // namespace ck
