// ck-restore.  The restorer forks one helper per dumped process (clone3 with
// set_tid, so pids and tids are the dumped ones) in the dumped parent/child
// shape; each helper creates its threads, takes its fds from the restorer
// and reports ready.  The restorer then seizes every thread and rebuilds
// each address space from outside with remote syscalls run from a one-page
// trampoline placed where the image has nothing: unmap the helper's layout,
// move the vdso group to its dumped place, map every VMA, copy the pages in,
// set the mm fields, signals, timers and registers, and detach.  The kernel's
// own syscall-restart logic then runs on the dumped registers, so a task
// caught in nanosleep or read continues as after a signal.
#include "restore.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <linux/ptrace.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "cgroup.h"
#include "error.h"
#include "fd.h"
#include "files.h"
#include "freeze.h"
#include "image.h"
#include "log.h"
#include "proc.h"
#include "ptrace.h"
#include "stream.h"
#include "tty.h"

CK_LOG_MODULE("restore");

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#ifndef PR_SET_MM_MAP
#define PR_SET_MM_MAP 14
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#endif

namespace ck {
namespace {

constexpr uint64_t kPage = 4096;

// ---- where the frames come from: a stream or an image set -------------------

class Source {
 public:
  virtual ~Source() = default;
  virtual bool next(pb::Frame* f) = 0;
  virtual void read_payload(void* dst, size_t len) = 0;
  // The next `len` bytes of payload where they already are in memory (an
  // image's pages.img, mapped), consumed; nullptr when they must be read.
  virtual const char* payload_in_place(size_t len) { return nullptr; }
};

class StreamSource : public Source {
 public:
  explicit StreamSource(int fd) : r_(fd, "stdin") {}
  bool next(pb::Frame* f) override { return r_.next(f); }
  void read_payload(void* dst, size_t len) override { r_.read_payload(dst, len); }

 private:
  StreamReader r_;
};

class ImageSource : public Source {
 public:
  explicit ImageSource(const std::string& dir) : img_(ImageSet::open(dir)) {}
  bool next(pb::Frame* f) override {
    if (!img_.next(f)) return false;
    if (f->has_pages() && f->pages().has_payload()) off_ = img_.payload_offset();
    return true;
  }
  void read_payload(void* dst, size_t len) override {
    auto* p = static_cast<char*>(dst);
    while (len) {
      ssize_t n = ::pread(img_.pages_fd(), p, len, static_cast<off_t>(off_));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) bad_input("image pages.img is shorter than its index says");
      p += n, off_ += static_cast<uint64_t>(n), len -= static_cast<size_t>(n);
    }
  }
  const char* payload_in_place(size_t len) override {
    int fd = img_.pages_fd();  // a parent's, for a run from an older round
    Mapped& m = maps_[fd];
    if (!m.base) {
      struct stat st;
      if (::fstat(fd, &st) != 0) throw_errno("unable to stat pages.img");
      m.size = static_cast<uint64_t>(st.st_size);
      if (!m.size) return nullptr;
      void* b = ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0);
      if (b == MAP_FAILED) return nullptr;
      ::madvise(b, m.size, MADV_SEQUENTIAL);
      m.base = static_cast<const char*>(b);
    }
    if (off_ + len > m.size) bad_input("image pages.img is shorter than its index says");
    const char* p = m.base + off_;
    off_ += len;
    return p;
  }
  ~ImageSource() override {
    for (auto& [fd, m] : maps_)
      if (m.base) ::munmap(const_cast<char*>(m.base), m.size);
  }

 private:
  struct Mapped {
    const char* base = nullptr;
    uint64_t size = 0;
  };
  ImageSet img_;
  uint64_t off_ = 0;
  std::map<int, Mapped> maps_;
};

// ---- the plan --------------------------------------------------------------

struct Task {
  pb::Process proc;
  std::vector<pb::Thread> threads;  // leader first
  std::vector<pid_t> children;
  std::vector<pb::Vma> vmas;
  uint64_t tramp = 0;
  bool mm_seen = false;
};

struct ShmObject {
  char* base = nullptr;
  size_t size = 0;
  int fd = -1;
};

struct Restorer {
  std::map<pid_t, Task> tasks;
  pid_t root = 0;
  std::vector<pb::FileDesc> descs;
  std::vector<pb::Fd> fds;
  std::set<uint32_t> socket_descs;  // descs with socket state
  FileRestorer files;
  std::map<uint64_t, ShmObject> shm;
  std::vector<pb::Cgroup> cgroups;
  std::unique_ptr<CgroupRestorer> cg;  // rolled back (after the kills) on failure
  std::set<pid_t> created;   // pids we made (as this process sees them); killed on failure
  std::set<pid_t> seized;
  bool committed = false;
  bool winch = false;  // --shell-job: the terminal's size is not the dumped one
  // --pidns: the tree lives in a new pid namespace under an init of ours
  // (pid 1 there).  Image pids are the ones inside it; everything the
  // restorer does from outside (ptrace, /proc, prlimit, cgroups) takes the
  // outer pid that `outer` maps them to.
  // The restorer's own credentials (with securebits), which every helper
  // starts with, and the highest capability number of this kernel.
  pb::Creds own_creds;
  int last_cap = 0;
  bool pidns = false;
  pid_t init = 0;
  int go_w = -1;  // init waits on this: a byte once the tree runs, EOF if the restore failed
  std::map<pid_t, pid_t> outer_of;
  pid_t outer(pid_t inner) const {
    if (!pidns) return inner;
    auto it = outer_of.find(inner);
    if (it == outer_of.end()) fail(strf("internal: no outer pid known for pid %d", inner));
    return it->second;
  }

  ~Restorer() {
    if (go_w >= 0) ::close(go_w);
    if (committed) return;
    for (pid_t p : created) ::kill(p, SIGKILL);
    for (pid_t p : created) LOG_DEBUG("killed restored pid %d", p);
    // Reap what is ours so nothing is left behind as a zombie.
    for (pid_t p : created) waitpid(p, nullptr, __WALL | WNOHANG);
    if (cg) {
      for (pid_t p : created)  // dead tasks leave their cgroups before rmdir
        for (int i = 0; i < 200 && ::kill(p, 0) == 0; ++i) {
          waitpid(p, nullptr, __WALL | WNOHANG);
          usleep(5000);
        }
      cg->rollback();
    }
    for (auto& [id, s] : shm) {
      if (s.base) munmap(s.base, s.size);
      if (s.fd >= 0) ::close(s.fd);
    }
  }
};

// ---- task creation (runs in forked helpers) ---------------------------------

long clone3_raw(struct clone_args* a) { return ::syscall(SYS_clone3, a, sizeof *a); }

// A thread of a helper: waits in pause() until the restorer seizes it.  It
// runs on a stack of its own without touching it, so it is pure asm.
long clone3_thread(struct clone_args* a) {
  long ret;
  asm volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "2: mov $34, %%eax\n\t"  // pause
      "syscall\n\t"
      "jmp 2b\n\t"
      "1:\n\t"
      : "=a"(ret)
      : "a"(SYS_clone3), "D"(a), "S"(sizeof *a)
      : "rcx", "r11", "memory");
  return ret;
}

// Tells the restorer that `pid` (its image pid) is ready, with its pid as
// the restorer sees it: under a new pid namespace, /proc is the outer
// one's mount, so /proc/self names the outer pid.
void report_ready(pid_t pid, int report_fd) {
  char self[32] = "0";
  ssize_t n = readlink("/proc/self", self, sizeof self - 1);
  if (n > 0) self[n] = 0;
  dprintf(report_fd, "R%d %s\n", pid, self);
}

// A zombie of the image: a child that exits at once, with the status its
// parent will collect, and is not waited for until the tree runs.  Its
// SIGCHLD is dropped again when the parent is restored.
[[noreturn]] void zombie_exit(const Task& t, pid_t pid, int report_fd) {
  if (t.proc.pgid() != static_cast<uint32_t>(pid)) setpgid(0, static_cast<pid_t>(t.proc.pgid()));  // best effort
  prctl(PR_SET_NAME, t.proc.comm().c_str());
  report_ready(pid, report_fd);
  const int st = t.proc.exit_status();
  if (WIFSIGNALED(st)) {
    struct rlimit no_core = {0, 0};  // killed, but no core file of ours
    setrlimit(RLIMIT_CORE, &no_core);
    signal(WTERMSIG(st), SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, WTERMSIG(st));
    sigprocmask(SIG_UNBLOCK, &one, nullptr);
    raise(WTERMSIG(st));
  }
  _exit(WEXITSTATUS(st));  // (a signal that does not kill: checked by the restorer)
}

[[noreturn]] void helper(Restorer& R, pid_t pid, int report_fd) {
  Task& t = R.tasks[pid];
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // the restorer dies: so do we (reset at the end)
  // Dispositions the restorer set (SIGPIPE ignored) must not leak into the
  // task: start from all-default; the dumped handlers are set later.
  // Raw: glibc's signal() would leave SA_RESTART and a mask behind.
  struct {
    uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
  } dfl;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
  stack_t no_altstack = {nullptr, SS_DISABLE, 0};  // not the restorer's crash stack
  sigaltstack(&no_altstack, nullptr);
  // Everything blocked until the dumped mask is set last: signals queued
  // during the restore stay pending instead of running half-restored.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  int rc = 0;
  if (t.proc.sid() == static_cast<uint32_t>(pid)) setsid();
  if (t.proc.pgid() == static_cast<uint32_t>(pid)) setpgid(0, 0);
  if (t.proc.zombie()) zombie_exit(t, pid, report_fd);
  for (pid_t c : t.children) {
    struct clone_args a = {};
    pid_t want = c;
    a.set_tid = reinterpret_cast<uint64_t>(&want);
    a.set_tid_size = 1;
    a.exit_signal = SIGCHLD;
    long r = clone3_raw(&a);
    if (r == 0) helper(R, c, report_fd);
    if (r < 0) {
      dprintf(2, "ck-restore: unable to create pid %d (child of %d): %s\n", c, pid, strerror(errno));
      _exit(70);
    }
  }
  for (size_t i = 1; i < t.threads.size(); ++i) {
    struct clone_args a = {};
    pid_t want = static_cast<pid_t>(t.threads[i].tid());
    size_t ssz = 64 << 10;
    char* stack = static_cast<char*>(mmap(nullptr, ssz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    a.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
    a.stack = reinterpret_cast<uint64_t>(stack);
    a.stack_size = ssz;
    a.set_tid = reinterpret_cast<uint64_t>(&want);
    a.set_tid_size = 1;
    long r = clone3_thread(&a);
    if (r < 0) {
      dprintf(2, "ck-restore: unable to create thread %d of pid %d: %s\n", want, pid, strerror(static_cast<int>(-r)));
      _exit(71);
    }
  }
  try {
    R.files.install(pid, {report_fd});
  } catch (const std::exception& e) {
    dprintf(report_fd, "E%d %s\n", pid, e.what());
    _exit(72);
  }
  report_ready(pid, report_fd);
  ::close(report_fd);
  (void)rc;
  for (;;) pause();
}

// ---- address space ----------------------------------------------------------

struct MapLine {
  uint64_t start, end;
  std::string name;
};

std::vector<MapLine> read_maps(pid_t pid) {
  std::vector<MapLine> out;
  std::istringstream in(read_file(strf("/proc/%d/maps", pid)));
  std::string line;
  while (std::getline(in, line)) {
    MapLine m;
    m.start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    m.end = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    size_t slash = line.find_first_of("/[");
    if (slash != std::string::npos) m.name = line.substr(slash);
    out.push_back(m);
  }
  return out;
}

bool overlaps(uint64_t s, uint64_t e, uint64_t s2, uint64_t e2) { return s < e2 && s2 < e; }

bool is_vdso_group(const std::string& n) { return n == "[vdso]" || n == "[vvar]" || n == "[vvar_vclock]"; }

// Memory-side state of one process while it is rebuilt.
struct MmBuilder {
  Restorer& R;
  Task& t;
  pid_t pid;   // in the image (and inside the task's pid namespace)
  pid_t opid;  // as the restorer sees it
  std::unique_ptr<RemoteSyscalls> rs;
  uint64_t scratch = 0;  // tramp + 1024: strings and structs for syscalls
  std::vector<std::pair<uint64_t, uint64_t>> written_private;
  // Anonymous memory is filled with UFFDIO_COPY through a userfaultfd of
  // the task's: each page is allocated with its contents, never zeroed
  // first (process_vm_writev faults in a zero page, then copies).
  ScopedFd uffd;
  std::vector<std::pair<uint64_t, uint64_t>> registered;  // sorted ranges

  uint64_t put(const void* data, size_t len) {
    if (len > 3000) fail("internal: scratch too small");
    write_mem(opid, scratch, data, len);
    return scratch;
  }
  uint64_t put_str(const std::string& s) { return put(s.c_str(), s.size() + 1); }

  void start() {
    pid_t tid = R.outer(static_cast<pid_t>(t.threads[0].tid()));
    std::vector<MapLine> cur = read_maps(opid);
    // A page free in both the image and the helper's own layout.
    uint64_t tramp = 0;
    for (uint64_t cand = 0x10000; cand < (1ull << 46) && !tramp; cand += 0x100000) {
      bool busy = false;
      for (auto& v : t.vmas) busy |= overlaps(cand, cand + kPage, v.start(), v.end());
      for (auto& m : cur) busy |= overlaps(cand, cand + kPage, m.start, m.end);
      if (!busy) tramp = cand;
    }
    if (!tramp) fail(strf("no room for the restorer's trampoline in pid %d", pid));
    {
      RemoteSyscalls boot(tid, find_syscall_insn(opid));
      long r = boot.check("mmap", SYS_mmap, tramp, kPage, PROT_READ | PROT_WRITE | PROT_EXEC,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
      if (static_cast<uint64_t>(r) != tramp) fail(strf("trampoline landed at %#lx, not %#lx", r, (long)tramp));
      const unsigned char code[] = {0x0f, 0x05, 0xcc};
      write_mem(opid, tramp, code, sizeof code);
    }
    t.tramp = tramp;
    scratch = tramp + 1024;
    rs = std::make_unique<RemoteSyscalls>(tid, tramp);
    // The helper's rseq area is about to go: unregister it first.
    struct ptrace_rseq_configuration rc = {};
    if (ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid, sizeof rc, &rc) > 0 &&
        rc.rseq_abi_pointer)
      rs->check("rseq", SYS_rseq, rc.rseq_abi_pointer, rc.rseq_abi_size, 1 /* UNREGISTER */, rc.signature);
    for (auto& m : cur) {
      if (m.start == tramp || is_vdso_group(m.name) || m.name == "[vsyscall]") continue;
      rs->check("munmap", SYS_munmap, m.start, m.end - m.start);
    }
    move_vdso(cur);
    for (auto& v : t.vmas) map_vma(v);
    open_uffd();
  }

  void open_uffd() {
    std::vector<std::pair<uint64_t, uint64_t>> want;
    for (auto& v : t.vmas)
      if (v.kind() == pb::VMA_ANON || v.kind() == pb::VMA_HEAP || v.kind() == pb::VMA_STACK)
        want.emplace_back(v.start(), v.end());
    if (want.empty()) return;
    std::sort(want.begin(), want.end());
    long tfd = rs->syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (tfd < 0) {
      LOG_DEBUG("pid %d: no userfaultfd (%s): pages go through process_vm_writev", pid, strerror(static_cast<int>(-tfd)));
      return;
    }
    ScopedFd fd = ck::take_fd(opid, static_cast<int>(tfd));
    int err = errno;
    rs->check("close", SYS_close, tfd);
    if (!fd.valid()) throw_errno(strf("unable to take the userfaultfd of pid %d", pid), err);
    uffd = std::move(fd);
    struct uffdio_api api = {UFFD_API, 0, 0};
    if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) throw_errno("userfaultfd: UFFDIO_API");
    for (auto& [a, b] : want) {
      struct uffdio_register reg = {{a, b - a}, UFFDIO_REGISTER_MODE_MISSING, 0};
      if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0)
        throw_errno(strf("pid %d: unable to register %#lx-%#lx with userfaultfd", pid, (unsigned long)a, (unsigned long)b));
      registered.emplace_back(a, b);
    }
  }

  void close_uffd() {
    if (uffd.get() < 0) return;
    for (auto& [a, b] : registered) {
      struct uffdio_range r = {a, b - a};
      if (::ioctl(uffd.get(), UFFDIO_UNREGISTER, &r) != 0)
        throw_errno(strf("pid %d: unable to unregister %#lx-%#lx from userfaultfd", pid, (unsigned long)a, (unsigned long)b));
    }
    registered.clear();
    uffd.reset();
  }

  // Writes `len` bytes at `addr` of the task: UFFDIO_COPY where the range
  // is registered anonymous memory, process_vm_writev elsewhere.
  void put_pages(uint64_t addr, const char* src, uint64_t len) {
    while (len) {
      auto it = std::upper_bound(registered.begin(), registered.end(), std::make_pair(addr, ~uint64_t{0}));
      uint64_t n = len;
      bool reg = false;
      if (it != registered.begin() && addr < std::prev(it)->second) {
        reg = true;
        n = std::min(len, std::prev(it)->second - addr);
      } else if (it != registered.end()) {
        n = std::min(len, it->first > addr ? it->first - addr : len);
      }
      if (reg)
        uffd_copy(addr, src, n);
      else
        write_mem(opid, addr, src, n);
      addr += n, src += n, len -= n;
    }
  }

  void uffd_copy(uint64_t addr, const char* src, uint64_t len) {
    while (len) {
      struct uffdio_copy c = {addr, reinterpret_cast<uint64_t>(src), len, 0, 0};
      int r = ::ioctl(uffd.get(), UFFDIO_COPY, &c);
      if (c.copy > 0) {
        addr += static_cast<uint64_t>(c.copy), src += c.copy, len -= static_cast<uint64_t>(c.copy);
        continue;
      }
      if (r != 0 && errno == EAGAIN) continue;
      if (r != 0 && errno == EEXIST) {  // already there (written before): overwrite
        write_mem(opid, addr, src, kPage);
        addr += kPage, src += kPage, len -= kPage;
        continue;
      }
      throw_errno(strf("unable to fill %#lx of pid %d (UFFDIO_COPY)", (unsigned long)addr, pid));
    }
  }

  void move_vdso(const std::vector<MapLine>& cur) {
    std::map<std::string, std::pair<uint64_t, uint64_t>> from, to;
    for (auto& m : cur)
      if (is_vdso_group(m.name)) from[m.name] = {m.start, m.end};
    for (auto& v : t.vmas)
      if (is_vdso_group(v.path())) to[v.path()] = {v.start(), v.end()};
    if (to.empty()) {  // the image had none (vdso=0): drop ours
      for (auto& [n, r] : from) rs->check("munmap", SYS_munmap, r.first, r.second - r.first);
      return;
    }
    for (auto& [n, r] : to)
      if (!from.count(n) || from[n].second - from[n].first != r.second - r.first)
        fail(strf("pid %d: the vdso of this kernel does not match the image's (%s)", pid, n.c_str()));
    bool clash = false;
    for (auto& [n, r] : from)
      for (auto& [n2, r2] : to) clash |= overlaps(r.first, r.second, r2.first, r2.second) && from[n] != to[n];
    auto move_all = [&](std::map<std::string, std::pair<uint64_t, uint64_t>>& src, uint64_t delta_base,
                        bool to_final) {
      for (auto& [n, r] : src) {
        uint64_t len = r.second - r.first;
        uint64_t dst = to_final ? to[n].first : r.first - from.begin()->second.first + delta_base;
        if (dst == r.first) continue;
        rs->check("mremap", SYS_mremap, r.first, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        r = {dst, dst + len};
      }
    };
    if (clash) {  // park the group somewhere free first
      uint64_t park = t.tramp + 0x10000000;
      move_all(from, park, false);
    }
    move_all(from, 0, true);
  }

  void map_vma(const pb::Vma& v) {
    if (is_vdso_group(v.path()) || v.path() == "[vsyscall]") return;
    uint64_t len = v.end() - v.start();
    uint32_t prot = v.prot() | PROT_READ | PROT_WRITE;  // final prot set in finish()
    bool gd = v.vmflags().find("gd") != std::string::npos;
    switch (v.kind()) {
      case pb::VMA_ANON:
      case pb::VMA_HEAP:
      case pb::VMA_STACK: {
        uint32_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (gd ? MAP_GROWSDOWN : 0);
        rs->check("mmap", SYS_mmap, v.start(), len, prot, flags, static_cast<uint64_t>(-1), 0);
        break;
      }
      case pb::VMA_SHARED_ANON: {
        ShmObject& o = shm_object(v);
        long fd = take_fd(o.fd);
        rs->check("mmap", SYS_mmap, v.start(), len, prot, MAP_SHARED | MAP_FIXED, fd, v.pgoff());
        rs->check("close", SYS_close, fd);
        break;
      }
      case pb::VMA_FILE_PRIVATE:
      case pb::VMA_FILE_SHARED: {
        struct stat st;
        if (::stat(v.path().c_str(), &st) != 0)
          throw_errno(strf("unable to map '%s' at %#lx in pid %d", v.path().c_str(), (unsigned long)v.start(), pid));
        int64_t mtime = st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
        if ((v.ino() && st.st_ino != v.ino()) || (v.file_size() && static_cast<uint64_t>(st.st_size) != v.file_size()) ||
            (v.file_mtime_ns() && mtime != v.file_mtime_ns()))
          fail(strf("file '%s' mapped at %#lx in pid %d changed since the dump (inode, size or mtime)",
                    v.path().c_str(), (unsigned long)v.start(), pid));
        bool shared = v.kind() == pb::VMA_FILE_SHARED;
        int oflags = shared && (v.prot() & PROT_WRITE) ? O_RDWR : O_RDONLY;
        long fd = rs->check("open", SYS_open, put_str(v.path()), oflags);
        uint32_t p = shared ? v.prot() : prot;
        rs->check("mmap", SYS_mmap, v.start(), len, p, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.pgoff());
        rs->check("close", SYS_close, fd);
        break;
      }
      default:
        fail(strf("unable to restore mapping %#lx-%#lx '%s' of pid %d: kind %d not supported",
                  (unsigned long)v.start(), (unsigned long)v.end(), v.path().c_str(), pid, v.kind()));
    }
    advise(v);
    LOG_DEBUG("pid %d: mapped %#lx-%#lx %s", pid, (unsigned long)v.start(), (unsigned long)v.end(), v.path().c_str());
  }

  // VMA flags that madvise() sets (smaps VmFlags two-letter names).  Lost,
  // they change more than the flag: glibc marks thread stacks "nh", and
  // without it neighbouring mappings merge into one.
  void advise(const pb::Vma& v) {
    static const struct {
      const char* flag;
      int advice;
    } kAdvice[] = {{"nh", MADV_NOHUGEPAGE}, {"hg", MADV_HUGEPAGE},   {"dc", MADV_DONTFORK},
                   {"dd", MADV_DONTDUMP},   {"wf", MADV_WIPEONFORK}, {"mg", MADV_MERGEABLE}};
    std::istringstream in(v.vmflags());
    std::string f;
    while (in >> f)
      for (auto& a : kAdvice)
        if (f == a.flag) {
          long r = rs->syscall(SYS_madvise, v.start(), v.end() - v.start(), a.advice);
          if (r < 0)
            fail(strf("pid %d: unable to set '%s' on %#lx-%#lx (madvise): %s", pid, a.flag, (unsigned long)v.start(),
                      (unsigned long)v.end(), strerror(static_cast<int>(-r))));
        }
  }

  ShmObject& shm_object(const pb::Vma& v) {
    ShmObject& o = R.shm[v.shmid()];
    if (!o.base) {
      size_t size = 0;
      for (auto& [p, t2] : R.tasks)
        for (auto& w : t2.vmas)
          if (w.shmid() == v.shmid()) size = std::max<size_t>(size, w.pgoff() + (w.end() - w.start()));
      size = std::max<size_t>(size, v.pgoff() + (v.end() - v.start()));
      void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw_errno("unable to create shared memory");
      o.base = static_cast<char*>(m);
      o.size = size;
      std::string path = strf("/proc/self/map_files/%lx-%lx", (unsigned long)o.base, (unsigned long)(o.base + size));
      o.fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (o.fd < 0) throw_errno("unable to open '" + path + "'");
    }
    return o;
  }

  // Opens in the target the file behind fd `fd` of the restorer, through
  // /proc (the restorer's pid may not exist in the target's namespace).
  long take_fd(int fd) {
    return rs->check("open", SYS_open, put_str(strf("/proc/%d/fd/%d", getpid(), fd)), O_RDWR | O_CLOEXEC);
  }

  void finish() {
    close_uffd();
    const pb::Process& p = t.proc;
    for (auto& v : t.vmas) {
      if (is_vdso_group(v.path()) || v.path() == "[vsyscall]" || v.kind() == pb::VMA_FILE_SHARED) continue;
      if (v.prot() != (v.prot() | PROT_READ | PROT_WRITE))
        rs->check("mprotect", SYS_mprotect, v.start(), v.end() - v.start(), v.prot());
    }
    for (auto& v : t.vmas)  // mlock()ed: locked again, pages and all
      if ((" " + v.vmflags() + " ").find(" lo ") != std::string::npos)
        rs->check("mlock", SYS_mlock, v.start(), v.end() - v.start());
    // mm fields: brk, code/data/stack/arg/env bounds, auxv, exe.
    struct prctl_mm_map mm = {};
    mm.start_code = p.start_code();
    mm.end_code = p.end_code();
    mm.start_data = p.start_data();
    mm.end_data = p.end_data();
    mm.start_brk = p.start_brk();
    mm.brk = p.brk();
    mm.start_stack = p.start_stack();
    mm.arg_start = p.arg_start();
    mm.arg_end = p.arg_end();
    mm.env_start = p.env_start();
    mm.env_end = p.env_end();
    std::string auxv = p.auxv();
    uint64_t auxv_at = scratch + 2048;
    write_mem(opid, auxv_at, auxv.data(), std::min<size_t>(auxv.size(), 1024));
    mm.auxv = reinterpret_cast<__u64*>(auxv_at);
    mm.auxv_size = static_cast<__u32>(std::min<size_t>(auxv.size(), 1024));
    long exe = -1;
    if (!p.exe().empty() && p.exe().find(" (deleted)") == std::string::npos)
      exe = rs->check("open", SYS_open, put_str(p.exe()), O_RDONLY | O_CLOEXEC);
    mm.exe_fd = static_cast<__u32>(exe);
    uint64_t at = put(&mm, sizeof mm);
    long r = rs->syscall(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, at, sizeof mm, 0);
    if (exe >= 0) rs->syscall(SYS_close, exe);
    if (r < 0) throw_errno(strf("unable to set the mm fields of pid %d (prctl PR_SET_MM_MAP)", pid), static_cast<int>(-r));
    // Signal handlers.
    for (auto& a : p.sigactions()) {
      uint64_t ka[4] = {a.handler(), a.flags(), a.restorer(), a.mask()};
      rs->check("rt_sigaction", SYS_rt_sigaction, a.signo(), put(ka, sizeof ka), 0, 8);
    }
    for (auto& it : p.itimers()) {
      struct itimerval v = {{static_cast<time_t>(it.interval_us() / 1000000), static_cast<suseconds_t>(it.interval_us() % 1000000)},
                            {static_cast<time_t>(it.value_us() / 1000000), static_cast<suseconds_t>(it.value_us() % 1000000)}};
      if (!v.it_value.tv_sec && !v.it_value.tv_usec) v.it_value.tv_usec = 1;
      rs->check("setitimer", SYS_setitimer, it.which(), put(&v, sizeof v), 0);
    }
    if (p.posix_timers_size()) {
      rs->check("prctl", SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0);
      for (auto& pt : p.posix_timers()) {
        struct sigevent ev = {};
        ev.sigev_notify = pt.notify();
        ev.sigev_signo = pt.signo();
        ev.sigev_value.sival_ptr = reinterpret_cast<void*>(pt.sigval());
        ev._sigev_un._tid = pt.notify_tid();
        uint64_t evat = put(&ev, sizeof ev);
        int32_t id = pt.id();
        write_mem(opid, scratch + 512, &id, sizeof id);
        rs->check("timer_create", SYS_timer_create, pt.clock(), evat, scratch + 512);
        struct itimerspec its = {{static_cast<time_t>(pt.interval_ns() / 1000000000), static_cast<long>(pt.interval_ns() % 1000000000)},
                                 {static_cast<time_t>(pt.value_ns() / 1000000000), static_cast<long>(pt.value_ns() % 1000000000)}};
        rs->check("timer_settime", SYS_timer_settime, pt.id(), 0, put(&its, sizeof its), 0);
      }
      rs->check("prctl", SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
    }
    rs->check("umask", SYS_umask, p.umask());
    if (p.personality()) rs->check("personality", SYS_personality, p.personality());
    if (!p.cwd().empty()) rs->check("chdir", SYS_chdir, put_str(p.cwd()));
    if (p.pgid() != static_cast<uint32_t>(pid) && p.pgid() && R.tasks.count(static_cast<pid_t>(p.pgid())))
      rs->syscall(SYS_setpgid, 0, p.pgid());
    // Its zombie children were made to exit while the tree was created,
    // which queued a SIGCHLD the dumped task did not have: drop it (one
    // that was pending at dump time is queued again just below).
    bool zombie_children = false;
    for (pid_t c : t.children) zombie_children |= R.tasks[c].proc.zombie();
    if (zombie_children) {
      struct {
        uint64_t mask;
        struct timespec zero;
      } q = {1ull << (SIGCHLD - 1), {0, 0}};
      uint64_t at = put(&q, sizeof q);
      while (rs->syscall(SYS_rt_sigtimedwait, at, 0, at + offsetof(decltype(q), zero), 8) == SIGCHLD) {
      }
    }
    for (auto& si : p.shared_pending()) {
      siginfo_t info;
      std::memcpy(&info, si.raw().data(), std::min(sizeof info, si.raw().size()));
      rs->check("rt_sigqueueinfo", SYS_rt_sigqueueinfo, pid, info.si_signo, put(&info, sizeof info));
    }
    rs->check("prctl", SYS_prctl, PR_SET_PDEATHSIG, static_cast<uint64_t>(p.pdeath_sig()));
    for (auto& rl : p.rlimits()) {
      struct rlimit r2 = {rl.cur(), rl.max()};
      if (prlimit(opid, static_cast<__rlimit_resource>(rl.resource()), &r2, nullptr) != 0)
        LOG_WARN("pid %d: unable to set rlimit %u: %s", pid, rl.resource(), strerror(errno));
    }
    if (p.child_subreaper()) rs->check("prctl", SYS_prctl, PR_SET_CHILD_SUBREAPER, 1);
    bool same_creds = p.has_creds() && p.creds().SerializeAsString() == R.own_creds.SerializeAsString();
    // Per-thread state, each thread doing its own part.
    for (auto& th : t.threads) {
      pid_t tid = static_cast<pid_t>(th.tid());
      std::unique_ptr<RemoteSyscalls> own;
      RemoteSyscalls* r2 = rs.get();
      if (tid != static_cast<pid_t>(t.threads[0].tid())) {
        own = std::make_unique<RemoteSyscalls>(R.outer(tid), t.tramp);
        r2 = own.get();
      }
      {
        // Always set: a disabled one too, or the thread keeps the
        // restorer's own (its crash-handler stack, now unmapped).
        stack_t ss = {reinterpret_cast<void*>(th.altstack_sp()), th.altstack_flags() & ~SS_ONSTACK,
                      th.altstack_size()};
        if (ss.ss_flags & SS_DISABLE) ss = {nullptr, SS_DISABLE, 0};
        r2->check("sigaltstack", SYS_sigaltstack, put(&ss, sizeof ss), 0);
      }
      r2->check("set_tid_address", SYS_set_tid_address, th.clear_child_tid());
      if (th.robust_list()) r2->check("set_robust_list", SYS_set_robust_list, th.robust_list(), th.robust_len());
      if (th.rseq_abi()) r2->check("rseq", SYS_rseq, th.rseq_abi(), th.rseq_len(), 0, th.rseq_sig());
      for (auto& si : th.pending()) {
        siginfo_t info;
        std::memcpy(&info, si.raw().data(), std::min(sizeof info, si.raw().size()));
        r2->check("rt_tgsigqueueinfo", SYS_rt_tgsigqueueinfo, pid, tid, info.si_signo, put(&info, sizeof info));
      }
      // Only the thread itself may set its name (/proc/.../comm refuses
      // writers from another thread group).
      std::string comm = (th.comm().empty() ? p.comm() : th.comm()).substr(0, 15);
      r2->check("prctl", SYS_prctl, PR_SET_NAME, put_str(comm));
      // Credentials are per thread; they go last, once nothing left needs
      // the restorer's privileges inside the task.
      if (!same_creds) set_creds(*r2, p.creds());
      own.reset();
    }
    // setresuid and friends reset the dumpable flag; put the dumped one back.
    if (p.dumpable()) rs->check("prctl", SYS_prctl, PR_SET_DUMPABLE, static_cast<uint64_t>(p.dumpable()));
    // The trampoline goes last: one munmap of the page the syscall runs from.
    // It returns into the page being removed, but the registers are replaced
    // before the thread runs again.
    rs->syscall(SYS_munmap, t.tramp, kPage);
    rs.reset();
    for (auto& th : t.threads) {
      pid_t tid = R.outer(static_cast<pid_t>(th.tid()));
      user_regs_struct regs;
      std::memcpy(&regs, th.gpregs().data(), std::min(sizeof regs, th.gpregs().size()));
      restartable(regs);
      set_regs(tid, regs);
      if (!th.xsave().empty()) set_xsave(tid, th.xsave());
      set_sigmask(tid, th.blocked());
    }
  }

  // Gives the thread behind `r` the dumped credentials.  It starts as the
  // restorer (root, every capability); the order matters, since each step
  // needs privileges that a later one gives up:
  //   groups and gids; the bounding set; inheritable and ambient caps (these
  //   need the cap in the permitted and inheritable sets); securebits with
  //   NO_SETUID_FIXUP added so that the uid change keeps every capability;
  //   the uids; the dumped securebits (needs CAP_SETPCAP, still held); and
  //   last capset to the dumped sets, which only drops.
  void set_creds(RemoteSyscalls& r, const pb::Creds& c) {
    if (c.uid_size() != 4 || c.gid_size() != 4) bad_input(strf("pid %d: credentials in the image are incomplete", pid));
    std::vector<gid_t> groups(c.groups().begin(), c.groups().end());
    if (groups.size() > 700) bad_input(strf("pid %d: %zu supplementary groups", pid, groups.size()));
    r.check("setgroups", SYS_setgroups, groups.size(), groups.empty() ? 0 : put(groups.data(), groups.size() * sizeof(gid_t)));
    r.check("setresgid", SYS_setresgid, c.gid(0), c.gid(1), c.gid(2));
    r.syscall(SYS_setfsgid, c.gid(3));
    int last_cap = R.last_cap;
    for (int cap = 0; cap <= last_cap && cap < 64; ++cap)
      if (!(c.cap_bnd() >> cap & 1)) r.check("prctl(PR_CAPBSET_DROP)", SYS_prctl, PR_CAPBSET_DROP, cap);
    struct {
      uint32_t version = 0x20080522;  // _LINUX_CAPABILITY_VERSION_3
      int32_t pid = 0;
    } hdr;
    struct {
      uint32_t eff, prm, inh;
    } data[2];
    auto capset = [&](uint64_t eff, uint64_t prm, uint64_t inh) {
      for (int i = 0; i < 2; ++i)
        data[i] = {static_cast<uint32_t>(eff >> (32 * i)), static_cast<uint32_t>(prm >> (32 * i)),
                   static_cast<uint32_t>(inh >> (32 * i))};
      uint64_t h = put(&hdr, sizeof hdr);
      write_mem(opid, scratch + 64, data, sizeof data);
      r.check("capset", SYS_capset, h, scratch + 64);
    };
    // What the restorer holds, so the helper too (this machine may lack some).
    capset(R.own_creds.cap_prm(), R.own_creds.cap_prm(), c.cap_inh());
    r.check("prctl(PR_CAP_AMBIENT)", SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (int cap = 0; cap <= last_cap && cap < 64; ++cap)
      if (c.cap_amb() >> cap & 1)
        r.check("prctl(PR_CAP_AMBIENT_RAISE)", SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
    constexpr uint64_t kNoSetuidFixup = 1 << 2, kNoSetuidFixupLocked = 1 << 3;
    uint64_t bits = c.securebits();
    if (!(bits & kNoSetuidFixupLocked)) r.check("prctl(PR_SET_SECUREBITS)", SYS_prctl, PR_SET_SECUREBITS, bits | kNoSetuidFixup);
    r.check("setresuid", SYS_setresuid, c.uid(0), c.uid(1), c.uid(2));
    r.syscall(SYS_setfsuid, c.uid(3));
    if (r.check("prctl", SYS_prctl, PR_GET_SECUREBITS) != static_cast<long>(bits))
      r.check("prctl(PR_SET_SECUREBITS)", SYS_prctl, PR_SET_SECUREBITS, bits);
    capset(c.cap_eff(), c.cap_prm(), c.cap_inh());
    if (c.no_new_privs()) r.check("prctl(PR_SET_NO_NEW_PRIVS)", SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  }

  // A thread dumped inside a syscall that the kernel would resume through
  // restart_syscall (-ERESTART_RESTARTBLOCK: nanosleep, clock_nanosleep,
  // poll and futex with a timeout) has no restart block here.  Re-run the
  // syscall itself instead (-ERESTARTNOINTR), a sleep with what remained of
  // it: the kernel wrote the remaining time into `rem` when it stopped.
  static void restartable(user_regs_struct& r) {
    constexpr long kRestartBlock = -516, kRestartNoIntr = -513;
    if (static_cast<long>(r.orig_rax) < 0 || static_cast<long>(r.rax) != kRestartBlock) return;
    r.rax = static_cast<uint64_t>(kRestartNoIntr);
    if (r.orig_rax == SYS_nanosleep && r.rsi) r.rdi = r.rsi;
    if (r.orig_rax == SYS_clock_nanosleep && !(r.rsi & TIMER_ABSTIME) && r.r10) r.rdx = r.r10;
  }


  const pb::Vma* vma_at(uint64_t addr) const {
    for (auto& v : t.vmas)
      if (addr >= v.start() && addr < v.end()) return &v;
    return nullptr;
  }
};

// ---- the whole restore ------------------------------------------------------

// --pidns: pid 1 of the new namespace.  It makes the root task (the rest of
// the tree comes from there), then reaps whatever is orphaned inside and,
// when the root ends, ends with its status, which takes the namespace down.
[[noreturn]] void pidns_init(Restorer& R, int report_fd, int go_r) {
  ::close(R.go_w);
  struct clone_args a = {};
  pid_t want = R.root;
  a.set_tid = reinterpret_cast<uint64_t>(&want);
  a.set_tid_size = 1;
  a.exit_signal = SIGCHLD;
  long r = clone3_raw(&a);
  if (r == 0) helper(R, R.root, report_fd);
  if (r < 0) {
    dprintf(2, "ck-restore: unable to create pid %d in the new pid namespace: %s\n", R.root, strerror(errno));
    _exit(70);
  }
  // Hold nothing of the restorer's: its open files (pipe ends above all)
  // must not stay open in a process the tree does not know.
  ::syscall(SYS_close_range, 0, static_cast<unsigned>(go_r) - 1, 0);
  ::syscall(SYS_close_range, static_cast<unsigned>(go_r) + 1, ~0u, 0);
  prctl(PR_SET_NAME, "ck-init");
  // The restorer tells us when the tree runs; if it fails or dies first,
  // we end, and the namespace with us.
  char go = 0;
  ssize_t n;
  while ((n = ::read(go_r, &go, 1)) < 0 && errno == EINTR) {}
  if (n != 1) _exit(1);
  ::close(go_r);
  for (;;) {
    int st;
    pid_t p = ::wait(&st);
    if (p < 0 && errno == EINTR) continue;
    if (p < 0) _exit(0);
    if (p == R.root) _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
}

// --pidns: the outer tid of every thread, from the NSpid lines in /proc.
void map_threads(Restorer& R) {
  for (auto& [pid, t] : R.tasks) {
    pid_t o = R.outer(pid);
    for (pid_t tid : list_tids(o)) {
      std::istringstream in(read_status(o, tid)["NSpid"]);
      std::vector<pid_t> ids;
      pid_t x;
      while (in >> x) ids.push_back(x);
      if (ids.size() < 2) fail(strf("thread %d of pid %d has no pid in the new namespace", tid, o));
      R.outer_of[ids.back()] = tid;
    }
    for (auto& th : t.threads)
      if (!R.outer_of.count(static_cast<pid_t>(th.tid())))
        fail(strf("thread %u of pid %d is missing in the new pid namespace", th.tid(), pid));
  }
}

// True if nothing uses pid.  A zombie (say, the dumped task that ck-freeze
// just killed, whose parent has not reaped it yet) gets 5 s to go away.
bool pid_free(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    char st = task_state(pid);
    if (st != 0 && st != 'Z') return false;
    usleep(10000);
  }
  return false;
}

// A zombie must be one, with its dumped status, before its parent runs.
void check_zombie(Restorer& R, pid_t pid) {
  const pid_t o = R.outer(pid);
  for (int i = 0; i < 500 && task_state(o) != 'Z'; ++i) usleep(1000);
  Stat st = read_stat(o);
  const int want = R.tasks[pid].proc.exit_status();
  if (st.f[3] != "Z" || static_cast<int>(st.i(52)) != want)
    fail(strf("unable to recreate zombie pid %d: it is in state %s with exit status %#llx, not a zombie with %#x", pid,
              st.f[3].c_str(), static_cast<unsigned long long>(st.i(52)), want));
  const auto pgid = static_cast<pid_t>(R.tasks[pid].proc.pgid());
  // (a group from outside the tree is the restorer's, as for every task)
  if (R.tasks.count(pgid) && static_cast<pid_t>(st.u(5)) != R.outer(pgid))
    LOG_WARN("zombie pid %d: in process group %llu, not %d", pid, static_cast<unsigned long long>(st.u(5)), pgid);
}

void create_tasks(Restorer& R) {
  for (auto& [pid, t] : R.tasks) {
    if (t.proc.zombie()) {
      if (pid == R.root) bad_input(strf("the root pid %d is a zombie in the image", pid));
      if (!t.threads.empty() || t.mm_seen) bad_input(strf("zombie pid %d has threads or memory in the image", pid));
      if (!R.pidns && !pid_free(pid)) fail(strf("pid %d is in use: unable to restore zombie pid %d", pid, pid));
    } else if (t.threads.empty()) {
      bad_input(strf("image has no thread state for pid %d", pid));
    }
    for (auto& th : t.threads)
      if (!R.pidns && !pid_free(static_cast<pid_t>(th.tid())))
        fail(strf("pid %u is in use: unable to restore %s of pid %d", th.tid(),
                  th.tid() == static_cast<uint32_t>(pid) ? "process" : "thread", pid));
    auto pp = static_cast<pid_t>(t.proc.ppid());
    if (pid != R.root) {
      if (!R.tasks.count(pp)) bad_input(strf("pid %d: its parent %d is not in the image", pid, pp));
      R.tasks[pp].children.push_back(pid);
    }
  }
  R.files.open_all(R.descs, R.fds, 100);
  int rp[2];
  if (pipe2(rp, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
  int report_w = fcntl(rp[1], F_DUPFD, R.files.next_free());  // inheritable, above every target fd
  ::close(rp[1]);
  int go_r = -1;
  if (R.pidns) {
    int gp[2];
    if (pipe2(gp, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
    go_r = fcntl(gp[0], F_DUPFD, R.files.next_free());  // above every target fd too
    ::close(gp[0]);
    R.go_w = gp[1];
  }
  struct clone_args a = {};
  pid_t want = R.root;
  a.exit_signal = SIGCHLD;
  if (R.pidns) {
    a.flags = CLONE_NEWPID;  // our init, pid 1 inside
  } else {
    a.set_tid = reinterpret_cast<uint64_t>(&want);
    a.set_tid_size = 1;
  }
  long r = clone3_raw(&a);
  if (r == 0) {
    ::close(rp[0]);
    if (R.pidns) pidns_init(R, report_w, go_r);
    helper(R, R.root, report_w);
  }
  ::close(report_w);
  if (go_r >= 0) ::close(go_r);
  if (r < 0) throw_errno(strf(R.pidns ? "unable to create a pid namespace" : "unable to create pid %d", R.root));
  if (R.pidns) R.init = static_cast<pid_t>(r);
  R.created.insert(static_cast<pid_t>(r));
  R.files.close_all();
  // Every helper reports "R<pid>" when ready or "E<pid> why" on failure.
  FILE* in = fdopen(rp[0], "r");
  char line[512];
  size_t ready = 0;
  std::string error;
  // Read to EOF: a helper closes its end right after reporting, so EOF means
  // every helper is past its last step before the restorer seizes it.
  while (fgets(line, sizeof line, in)) {
    pid_t p = std::atoi(line + 1);
    if (line[0] == 'R') {
      pid_t o = static_cast<pid_t>(std::atoi(std::strchr(line, ' ') ? std::strchr(line, ' ') + 1 : "0"));
      if (R.pidns) {
        if (o <= 0) fail(strf("pid %d in the new pid namespace did not tell its outer pid", p));
        R.outer_of[p] = o;
        p = o;
      }
      R.created.insert(p);
      ++ready;
    } else {
      R.created.insert(p);
      if (error.empty()) error = line + 1;
      while (!error.empty() && error.back() == '\n') error.pop_back();
    }
  }
  fclose(in);
  if (!error.empty()) fail(error);
  if (ready < R.tasks.size()) fail("a restored task died while being created (see the messages above)");
  if (R.pidns) map_threads(R);
  for (auto& [pid, t] : R.tasks)
    if (t.proc.zombie()) check_zombie(R, pid);
  for (auto& [pid, t] : R.tasks)
    for (auto& th : t.threads) {
      pid_t tid = R.outer(static_cast<pid_t>(th.tid()));
      seize_thread(tid);
      R.seized.insert(tid);
      if (!wait_interrupt_stop(tid)) fail(strf("thread %d of pid %d died during restore", tid, pid));
    }
  LOG_INFO("created %zu processes", R.tasks.size());
}

}  // namespace

static int wait_for(pid_t child, int flags) {
  int st;
  while (waitpid(child, &st, flags) < 0)
    if (errno != EINTR) throw_errno(strf("unable to wait for pid %d", child));
  return st;
}

// --shell-job, before the tree runs: the root's job goes back to the
// foreground of the caller's terminal if it was in the foreground of its
// own at dump time (and the caller is in the foreground now), with the
// terminal settings it had.  A job dumped in the background stays there.
// Returns the process group given the terminal, 0 if none.
static pid_t shell_job_foreground(Restorer& R, ShellTerminal& term) {
  const pb::Process& p = R.tasks[R.root].proc;
  const pb::FileDesc* tty = nullptr;
  for (const auto& d : R.descs)
    if (d.tty() && (!tty || d.rdev() == p.tty_nr())) tty = &d;
  struct winsize now = {};
  if (tty && tty->winsize().size() == sizeof now && ::ioctl(term.fd(), TIOCGWINSZ, &now) == 0 &&
      std::memcmp(&now, tty->winsize().data(), sizeof now) != 0)
    R.winch = true;  // told after it runs, as a terminal that was resized would
  if (p.tty_nr() == 0 || p.tty_pgrp() <= 0 || static_cast<uint32_t>(p.tty_pgrp()) != p.pgid()) return 0;
  // Its group is recreated only if its leader is in the tree; else it is ours.
  const pid_t pgrp = R.tasks.count(static_cast<pid_t>(p.pgid())) ? R.outer(static_cast<pid_t>(p.pgid())) : ::getpgrp();
  term.give(pgrp, tty ? tty->termios() : std::string());
  return term.given() ? pgrp : 0;
}

// Waits for the root as a shell waits for a foreground job: if the job
// stops (^Z), the terminal comes back and ck-restore stops too, so the
// caller's shell sees a stopped job; continued, it hands the terminal (if
// it has it) and SIGCONT on.  ^C and ^\ are the job's to take.
static int wait_shell_job(pid_t child, pid_t job, ShellTerminal& term) {
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGQUIT, SIG_IGN);
  const bool own_group = job && job != ::getpgrp();
  for (;;) {
    int st = wait_for(child, own_group ? WUNTRACED : 0);
    if (!WIFSTOPPED(st)) {
      term.take_back();
      return st;
    }
    std::string termios, ws;
    if (!tty_state(term.fd(), &termios, &ws)) termios.clear();
    term.take_back();
    LOG_INFO("job %d stopped by signal %d", job, WSTOPSIG(st));
    ::raise(SIGTSTP);
    if (term.foreground()) term.give(job, termios);
    if (::kill(-job, SIGCONT) < 0) throw_errno(strf("unable to continue process group %d", job));
  }
}

int restore_tree(const RestoreOptions& o) {
  std::unique_ptr<Source> src;
  if (o.dir.empty())
    src = std::make_unique<StreamSource>(0);
  else
    src = std::make_unique<ImageSource>(o.dir);
  ShellTerminal term;  // declared before R: a failed restore kills the tree, then takes the terminal back
  Restorer R;
  R.pidns = o.pidns;
  if (o.shell_job) {
    // ck-restore sees the job stop only if the root is its own child, which
    // under --pidns it is not (ck-init's): ^Z would leave the terminal stuck.
    if (o.pidns) usage_error("--shell-job and --pidns together are not supported");
    if (!term.open()) fail("--shell-job: ck-restore has no terminal (none of fds 0, 1, 2 is one, and no /dev/tty)");
    R.files.use_terminal(term.path());
  }
  fill_creds(getpid(), &R.own_creds);
  R.own_creds.set_securebits(static_cast<uint32_t>(prctl(PR_GET_SECUREBITS)));
  R.last_cap = std::atoi(read_file("/proc/sys/kernel/cap_last_cap").c_str());
  pb::Frame f;
  bool created = false;
  std::unique_ptr<MmBuilder> mm;
  std::vector<char> buf(4 << 20);
  std::vector<std::unique_ptr<MmBuilder>> done;
  while (src->next(&f)) {
    switch (f.body_case()) {
      case pb::Frame::kHeader:
        R.root = static_cast<pid_t>(f.header().root_pid());
        break;
      case pb::Frame::kProcess: {
        pid_t p = static_cast<pid_t>(f.process().pid());
        R.tasks[p].proc = f.process();
        if (!R.root) R.root = p;
        break;
      }
      case pb::Frame::kThread:
        R.tasks[static_cast<pid_t>(f.thread().pid())].threads.push_back(f.thread());
        break;
      case pb::Frame::kFile:
        R.descs.push_back(f.file());
        break;
      case pb::Frame::kFd:
        R.fds.push_back(f.fd());
        break;
      case pb::Frame::kMm: {
        if (!created) {
          if (!R.tasks.count(R.root)) bad_input(strf("image has no process record for the root pid %d", R.root));
          create_tasks(R);
          created = true;
        }
        pid_t p = static_cast<pid_t>(f.mm().pid() ? f.mm().pid() : f.pid());
        if (!R.tasks.count(p)) bad_input(strf("memory layout for pid %d, which the image has no process for", p));
        Task& t = R.tasks[p];
        t.vmas.assign(f.mm().vmas().begin(), f.mm().vmas().end());
        t.mm_seen = true;
        if (mm) done.push_back(std::move(mm));
        mm = std::make_unique<MmBuilder>(MmBuilder{R, t, p, R.outer(p), nullptr, 0, {}, ScopedFd(), {}});
        with_context(strf("restoring memory of pid %d", p), [&] { mm->start(); });
        break;
      }
      case pb::Frame::kPages: {
        const pb::PageRun& run = f.pages();
        uint64_t len = uint64_t{run.npages()} * kPage;
        if (run.shmid()) {
          auto it = R.shm.find(run.shmid());
          if (it == R.shm.end() || run.addr() + len > it->second.size)
            bad_input(strf("page run for shared object %#lx outside it", (unsigned long)run.shmid()));
          if (run.has_payload()) src->read_payload(it->second.base + run.addr(), len);
          break;
        }
        if (!mm || static_cast<pid_t>(run.pid()) != mm->pid)
          bad_input(strf("page run for pid %u outside its memory layout", run.pid()));
        const pb::Vma* v = mm->vma_at(run.addr());
        for (uint64_t a = run.addr(); v && a < run.addr() + len;) {  // a run may span adjacent VMAs
          const pb::Vma* w = mm->vma_at(a);
          if (!w) v = nullptr;
          else a = w->end();
        }
        if (!v)
          bad_input(strf("page run %#lx+%u pages of pid %u is outside every mapping", (unsigned long)run.addr(),
                         run.npages(), run.pid()));
        if (!run.has_payload()) {
          if (v->kind() == pb::VMA_FILE_PRIVATE) {  // zeroed COW pages of a file mapping
            std::fill(buf.begin(), buf.end(), 0);
            for (uint64_t off = 0; off < len; off += buf.size())
              write_mem(mm->opid, run.addr() + off, buf.data(), std::min<uint64_t>(buf.size(), len - off));
          }
          break;
        }
        if (const char* in_place = src->payload_in_place(len)) {
          mm->put_pages(run.addr(), in_place, len);
          break;
        }
        for (uint64_t off = 0; off < len;) {
          size_t n = std::min<uint64_t>(buf.size(), len - off);
          src->read_payload(buf.data(), n);
          mm->put_pages(run.addr() + off, buf.data(), n);
          off += n;
        }
        break;
      }
      case pb::Frame::kCgroup:
        R.cgroups.push_back(f.cgroup());
        break;
      case pb::Frame::kSocket:
        R.socket_descs.insert(f.socket().desc());
        break;
      default:
        break;  // frames of later stages this restorer does not use
    }
  }
  if (!created) bad_input("image has no memory layout (was ck-memread in the pipeline?)");
  if (mm) done.push_back(std::move(mm));
  for (auto& [pid, t] : R.tasks)
    if (!t.mm_seen && !t.proc.zombie()) bad_input(strf("image has no memory layout for pid %d", pid));
  for (auto& b : done) with_context(strf("restoring pid %d", b->pid), [&] { b->finish(); });
  if (!R.cgroups.empty()) {  // every task into its cgroup before it runs
    CgroupRestoreOptions co;
    co.cgroup_root = o.cgroup_root;
    co.mode = parse_cgroup_mode(o.cgroup_mode);
    co.skip_missing = o.cgroup_skip_missing;
    R.cg = std::make_unique<CgroupRestorer>();
    with_context("restoring cgroups", [&] {
      R.cg->plan(R.cgroups, co);
      R.cg->create();
      for (auto& [pid, t] : R.tasks) {
        if (t.proc.zombie()) continue;  // it stays where its parent put it
        std::vector<pid_t> tids;
        for (auto& th : t.threads) tids.push_back(R.outer(static_cast<pid_t>(th.tid())));
        R.cg->place(R.outer(pid), tids);
      }
    });
  }
  const pid_t job = o.shell_job ? shell_job_foreground(R, term) : 0;
  for (pid_t tid : R.seized) detach_thread(tid);
  if (R.cg) R.cg->finish();  // freezes what was frozen, with its tasks in it
  if (R.go_w >= 0 && (::write(R.go_w, "g", 1) != 1 || ::close(R.go_w) != 0))
    throw_errno("unable to tell the pid namespace's init that the tree runs");
  R.go_w = -1;
  R.committed = true;
  LOG_INFO("restored %zu processes, root pid %d (%d here)", R.tasks.size(), R.root, R.outer(R.root));
  if (R.winch) ::kill(job ? -job : R.outer(R.root), SIGWINCH);
  if (!o.pidfile.empty()) {  // the pid that works from here: the outer one
    std::string s = strf("%d\n", R.outer(R.root));
    int fd = ::open(o.pidfile.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("unable to write '" + o.pidfile + "'");
    write_full(fd, s.data(), s.size());
    ::close(fd);
  }
  if (o.detach) return 0;
  pid_t child = R.pidns ? R.init : R.root;  // init ends with the root's status
  int st = o.shell_job ? wait_shell_job(child, job, term) : wait_for(child, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace ck
