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
#include <cstdio>
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
#include "page_source.h"
#include "restorable.h"
#include "store_proto.h"
#include "restore_impl.h"
#include "tty.h"

CK_LOG_MODULE("restore");

namespace ck {

Restorer::~Restorer() {
  if (go_w >= 0) ::close(go_w);
  if (proxy_w >= 0) ::close(proxy_w);
  if (committed) return;
  for (pid_t p : created) ::kill(p, SIGKILL);
  for (pid_t p : created) LOG_DEBUG("killed restored pid %d", p);
  // Reap what is ours (children, and tracees: a seized task's zombie waits
  // for its tracer first) so nothing is left behind as a zombie.  Round
  // after round, without blocking: the init of a --pidns tree ends only
  // once its children are reaped, and they wait for us as their tracer.
  std::set<pid_t> left = created;
  for (int i = 0; i < 400 && !left.empty(); ++i) {
    for (auto it = left.begin(); it != left.end();) {
      pid_t r = waitpid(*it, nullptr, __WALL | WNOHANG);
      it = (r == *it || (r < 0 && errno == ECHILD)) ? left.erase(it) : std::next(it);
    }
    if (!left.empty()) usleep(5000);
  }
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
namespace {

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

// The dumped process was in a group stop (^Z, SIGSTOP): the helper enters
// one now, before the restorer seizes it.  The kernel keeps a group stop
// across ptrace: once the restored task is let go, it is stopped again
// before it runs a single instruction or takes any of its pending signals,
// and SIGCONT (fg, bg, kill -CONT) continues it as it would have.  The
// stop is by the dumped signal (dispositions are all default here) unless
// the kernel drops it (SIGTSTP, SIGTTIN, SIGTTOU in an orphaned process
// group), then by SIGSTOP.
void stop_self(int sig) {
  if (sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    sigprocmask(SIG_UNBLOCK, &one, nullptr);
    raise(sig);  // stops here, unless dropped
    sigprocmask(SIG_BLOCK, &one, nullptr);
  }
  raise(SIGSTOP);
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
  if (t.proc.stop_signal()) stop_self(t.proc.stop_signal());
  for (;;) pause();
}

// ---- the whole restore ------------------------------------------------------

// --pidns: pid 1 of the new namespace.  It makes the root task (the rest of
// the tree comes from there), then reaps whatever is orphaned inside and,
// when the root ends, ends with its status, which takes the namespace down.
// In a stand-in parent of the root (ck-init, ck-parent): makes the root
// task with its dumped pid, then closes every fd but `keep`.  The stand-in
// holds nothing of the restorer's: its open files (pipe ends above all)
// must not stay open in a process the tree does not know.
void make_root_keeping_only(Restorer& R, int report_fd, int keep, const char* where) {
  struct clone_args a = {};
  pid_t want = R.root;
  a.set_tid = reinterpret_cast<uint64_t>(&want);
  a.set_tid_size = 1;
  a.exit_signal = SIGCHLD;
  long r = clone3_raw(&a);
  if (r == 0) helper(R, R.root, report_fd);
  if (r < 0) {
    dprintf(2, "ck-restore: unable to create pid %d%s: %s\n", R.root, where, strerror(errno));
    _exit(70);
  }
  ::syscall(SYS_close_range, 0, static_cast<unsigned>(keep) - 1, 0);
  ::syscall(SYS_close_range, static_cast<unsigned>(keep) + 1, ~0u, 0);
}

[[noreturn]] void pidns_init(Restorer& R, int report_fd, int go_r) {
  ::close(R.go_w);
  make_root_keeping_only(R, report_fd, go_r, " in the new pid namespace");
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

// -d: the root's parent while it is restored (see Restorer::proxy).  It
// dies with the restorer, and the root (until its dumped parent-death
// signal is set) with it.
[[noreturn]] void proxy_parent(Restorer& R, int report_fd, int proxy_r) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::close(R.proxy_w);
  make_root_keeping_only(R, report_fd, proxy_r, "");
  prctl(PR_SET_NAME, "ck-parent");
  char c;
  while (::read(proxy_r, &c, 1) < 0 && errno == EINTR) {
  }
  _exit(0);
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

// The shape of the tree (a root, parents in the image, thread state for
// every live process) was checked by the restorability check.
void create_tasks(Restorer& R) {
  for (auto& [pid, t] : R.tasks) {
    if (t.proc.zombie() && !R.pidns && !pid_free(pid))
      fail(strf("pid %d is in use: unable to restore zombie pid %d", pid, pid));
    for (auto& th : t.threads)
      if (!R.pidns && !pid_free(static_cast<pid_t>(th.tid())))
        fail(strf("pid %u is in use: unable to restore %s of pid %d", th.tid(),
                  th.tid() == static_cast<uint32_t>(pid) ? "process" : "thread", pid));
    if (pid != R.root) R.tasks[static_cast<pid_t>(t.proc.ppid())].children.push_back(pid);
  }
  R.files.use_sockets(&R.sock);
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
  int proxy_r = -1;
  if (R.use_proxy) {
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
    proxy_r = fcntl(pp[0], F_DUPFD_CLOEXEC, R.files.next_free());
    ::close(pp[0]);
    R.proxy_w = pp[1];
  }
  struct clone_args a = {};
  pid_t want = R.root;
  a.exit_signal = SIGCHLD;
  if (R.pidns) {
    a.flags = CLONE_NEWPID;  // our init, pid 1 inside
  } else if (proxy_r < 0) {
    a.set_tid = reinterpret_cast<uint64_t>(&want);
    a.set_tid_size = 1;
  }
  // The proxy takes a pid that no task of the image needs: one left to
  // chance (the next the kernel hands out) could be one of theirs.
  pid_t proxy_pid = 0;
  if (proxy_r >= 0) {
    int pid_max = std::atoi(read_file("/proc/sys/kernel/pid_max").c_str());
    std::set<pid_t> needed;
    for (auto& [pid, t] : R.tasks) {
      needed.insert(pid);
      for (auto& th : t.threads) needed.insert(static_cast<pid_t>(th.tid()));
    }
    for (proxy_pid = pid_max - 1; proxy_pid > 300; --proxy_pid)
      if (!needed.count(proxy_pid) && ::kill(proxy_pid, 0) != 0 && errno == ESRCH) break;
    a.set_tid = reinterpret_cast<uint64_t>(&proxy_pid);
    a.set_tid_size = 1;
  }
  long r = clone3_raw(&a);
  if (r == 0) {
    ::close(rp[0]);
    if (R.pidns) pidns_init(R, report_w, go_r);
    if (proxy_r >= 0) proxy_parent(R, report_w, proxy_r);
    helper(R, R.root, report_w);
  }
  if (proxy_r >= 0) {
    ::close(proxy_r);
    if (r > 0) R.proxy = static_cast<pid_t>(r);
  }
  ::close(report_w);
  if (go_r >= 0) ::close(go_r);
  if (r < 0 && proxy_r >= 0) throw_errno(strf("unable to create the root's parent for the restore (pid %d)", proxy_pid));
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
  // Every task exists: socket queues (credentials name live pids), owners.
  with_context("restoring sockets", [&] {
    R.sock.fill([&](pid_t p) -> pid_t {
      if (!R.pidns) return p;
      auto it = R.outer_of.find(p);
      return it == R.outer_of.end() ? 0 : it->second;
    });
  });
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
// own at dump time, running (a job stopped with ^Z was not: its shell had
// the terminal back), and the caller is in the foreground now, with the
// terminal settings it had.  A job dumped in the background or stopped
// stays in the background.  Returns the job's process group when it has
// one of its own (its leader is in the tree), else 0 (it is ck-restore's).
static pid_t shell_job_foreground(Restorer& R, ShellTerminal& term) {
  const pb::Process& p = R.tasks[R.root].proc;
  const pb::FileDesc* tty = nullptr;
  for (const auto& d : R.descs)
    if (d.tty() && (!tty || d.rdev() == p.tty_nr())) tty = &d;
  struct winsize now = {};
  if (tty && tty->winsize().size() == sizeof now && ::ioctl(term.fd(), TIOCGWINSZ, &now) == 0 &&
      std::memcmp(&now, tty->winsize().data(), sizeof now) != 0)
    R.winch = true;  // told after it runs, as a terminal that was resized would
  const pid_t pgrp = R.tasks.count(static_cast<pid_t>(p.pgid())) ? R.outer(static_cast<pid_t>(p.pgid())) : 0;
  if (p.tty_nr() == 0 || p.tty_pgrp() <= 0 || static_cast<uint32_t>(p.tty_pgrp()) != p.pgid() || p.stop_signal())
    return pgrp;
  term.give(pgrp ? pgrp : ::getpgrp(), tty ? tty->termios() : std::string());
  return pgrp;
}

// Waits for the root as a shell waits for a job: if the job stops (^Z,
// SIGTTIN; or it was restored stopped), the terminal comes back and
// ck-restore stops too, so the caller's shell sees a stopped job;
// continued (fg, bg), it hands the terminal on (if it has it: fg) and
// SIGCONT.  ^C and ^\ are the job's to take.
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

// --inherit-fd NAME=FD: FD, an fd of ck-restore, replaces the external
// resource NAME of the image.
static void inherit_fds(const RestoreOptions& o, RestoreEnv* env, FileRestorer* files) {
  for (const auto& spec : o.inherit_fds) {
    size_t eq = spec.rfind('=');
    char* end = nullptr;
    long fd = eq == std::string::npos ? -1 : std::strtol(spec.c_str() + eq + 1, &end, 10);
    if (eq == std::string::npos || eq == 0 || end == spec.c_str() + eq + 1 || *end || fd < 0 || fd > INT32_MAX)
      usage_error("--inherit-fd '" + spec + "' is not NAME=FD (e.g. 'pipe:[1234]=0')");
    if (::fcntl(static_cast<int>(fd), F_GETFD) < 0)
      usage_error(strf("--inherit-fd '%s': fd %ld of ck-restore is not open", spec.c_str(), fd));
    if (fd == 0 && o.dir.empty() && o.from.empty()) usage_error("--inherit-fd '" + spec + "': fd 0 carries the stream (use -D DIR)");
    const std::string name = spec.substr(0, eq);
    if (!env->inherited.insert(name).second) usage_error("--inherit-fd: '" + name + "' given twice");
    files->inherit(name, static_cast<int>(fd));
  }
}

// --lazy: a guard process (a child of ck-restore, which outlives it with
// -d) holds a copy of every uffd and starts ck-uffd-serve with the others.
// If the server ends other than with status 0 (killed, a corrupt run), the
// guard kills the tree (through pidfds) before it closes its copies: with
// the uffds open, a fault waits instead of being given a zero page.
static void start_uffd_server(Restorer& R, std::vector<std::unique_ptr<TaskBuilder>>& done, const RestoreOptions& o) {
  std::vector<std::pair<pid_t, int>> uffds;
  for (auto& b : done)
    if (b->uffd.valid()) uffds.emplace_back(b->pid, b->uffd.get());
  if (uffds.empty()) return;
  std::vector<int> pidfds;
  for (auto& [pid, t] : R.tasks) {
    if (t.proc.zombie()) continue;
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, R.outer(pid), 0));
    if (fd < 0) throw_errno(strf("pidfd_open of pid %d", pid));
    pidfds.push_back(fd);
  }
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) throw_errno("readlink /proc/self/exe");
  std::string server(exe, static_cast<size_t>(n));
  server = server.substr(0, server.rfind('/') + 1) + "ck-uffd-serve";
  std::vector<std::string> args = {server, "-D", o.dir};
  if (o.progress) args.push_back("--progress");
  for (size_t i = 0; i < uffds.size(); ++i) {
    args.push_back("--uffd");
    args.push_back(strf("%d:%zu", uffds[i].first, 100 + i));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t guard = ::fork();
  if (guard < 0) throw_errno("fork");
  if (guard == 0) {
    ::setsid();
    // The guard keeps the uffds (at 100 + i, where the server finds them)
    // and the pidfds (after them), and nothing else of ck-restore's: a
    // pipe end it kept would hold up the rest of the restore (the parent
    // proxy waits for its pipe to close) until every page is in.
    const int nu = static_cast<int>(uffds.size()), np = static_cast<int>(pidfds.size()), top = 100 + nu + np;
    int base = top;
    for (auto& u : uffds) base = std::max(base, u.second + 1);
    for (int fd : pidfds) base = std::max(base, fd + 1);
    std::vector<int> keep;
    for (auto& u : uffds) keep.push_back(::fcntl(u.second, F_DUPFD, base));
    for (int fd : pidfds) keep.push_back(::fcntl(fd, F_DUPFD, base));
    for (int i = 0; i < nu + np; ++i)
      if (keep[static_cast<size_t>(i)] < 0 || ::dup2(keep[static_cast<size_t>(i)], 100 + i) < 0) ::_exit(126);
    ::syscall(SYS_close_range, 3u, 99u, 0u);
    ::syscall(SYS_close_range, static_cast<unsigned>(top), ~0u, 0u);
    pid_t s = ::fork();
    if (s == 0) {
      ::syscall(SYS_close_range, static_cast<unsigned>(100 + nu), ~0u, 0u);  // the pidfds stay with the guard
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "ck-restore: unable to run %s: %s\n", argv[0], strerror(errno));
      ::_exit(127);
    }
    int st = 0;
    while (s > 0 && ::waitpid(s, &st, 0) < 0 && errno == EINTR) {
    }
    if (s > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) ::_exit(0);
    for (int i = 0; i < np; ++i) ::syscall(SYS_pidfd_send_signal, 100 + nu + i, SIGKILL, nullptr, 0);
    std::fprintf(stderr, "ck-restore: ck-uffd-serve ended before every page was in: the restored tree was killed\n");
    ::_exit(1);
  }
  for (int fd : pidfds) ::close(fd);
  for (auto& b : done) b->uffd.reset();  // the guard and the server hold them now
  LOG_INFO("lazy: ck-uffd-serve started under guard pid %d for %zu tasks", guard, uffds.size());
}

int restore_tree(const RestoreOptions& o) {
  if (o.lazy && o.dir.empty()) usage_error("--lazy needs -D DIR (ck-uffd-serve reads the pages from it)");
  if (!o.from.empty() && !o.dir.empty()) usage_error("-D DIR and --from NAME name two different images: give one");
  if (!o.socket.empty() && o.from.empty()) usage_error("--socket is for --from NAME (the store service)");
  if (o.lazy && !o.from.empty()) usage_error("--lazy needs -D DIR (ck-uffd-serve reads the pages from it), not --from");
  std::unique_ptr<Source> src;
  ScopedFd store;  // --from: the stream of the image, from the store service
  if (!o.from.empty()) {
    store = store_client_open(store_socket_path(o.socket), o.from);
    src = std::make_unique<StreamSource>(store.get(), "store image '" + o.from + "'");
  } else if (o.dir.empty()) {
    src = std::make_unique<StreamSource>(0);
  } else {
    src = std::make_unique<ImageSource>(o.dir);
  }
  if (!o.netns.empty()) {  // the tree, its sockets and the locks to lift live there
    ScopedFd ns(::open(o.netns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) throw_errno("unable to open '" + o.netns + "'");
    if (::setns(ns.get(), CLONE_NEWNET) < 0) throw_errno("unable to enter the network namespace '" + o.netns + "'");
  }
  ShellTerminal term;  // declared before R: a failed restore kills the tree, then takes the terminal back
  Restorer R;
  R.sock.set_unlock_on_failure(o.unlock_on_failure);
  R.pidns = o.pidns;
  R.use_proxy = o.detach && !o.pidns;
  if (o.shell_job) {
    // ck-restore sees the job stop only if the root is its own child, which
    // under --pidns it is not (ck-init's): ^Z would leave the terminal stuck.
    if (o.pidns) usage_error("--shell-job and --pidns together are not supported");
    if (!term.open()) fail("--shell-job: ck-restore has no terminal (none of fds 0, 1, 2 is one, and no /dev/tty)");
    R.files.use_terminal(term.path());
  }
  RestoreEnv env;
  env.shell_job = o.shell_job;
  inherit_fds(o, &env, &R.files);
  if (o.cgroup_v1 != "warn" && o.cgroup_v1 != "refuse") usage_error("--cgroup-v1 is warn or refuse");
  env.cgroup_v1_refuse = o.cgroup_v1 == "refuse";
  std::string own_cg;
  if (try_read_file("/proc/self/cgroup", &own_cg)) env.own_cgroup_v1 = cgroup_v1_lines(own_cg);
  // Every frame goes through ck-restore's own acceptance before it is used
  // (restorable.h): what it refuses, nothing below sees.
  RestoreCheck check = RestoreCheck::for_restore(env);
  fill_creds(getpid(), &R.own_creds);
  R.own_creds.set_securebits(static_cast<uint32_t>(prctl(PR_GET_SECUREBITS)));
  R.last_cap = std::atoi(read_file("/proc/sys/kernel/cap_last_cap").c_str());
  pb::Frame f;
  bool created = false;
  std::unique_ptr<TaskBuilder> mm;
  std::vector<char> buf(4 << 20);
  std::vector<std::unique_ptr<TaskBuilder>> done;
  while (src->next(&f)) {
    check.frame(f);
    switch (f.body_case()) {
      case pb::Frame::kHeader:
        R.root = static_cast<pid_t>(f.header().root_pid());
        break;
      case pb::Frame::kProcess: {
        R.check_caller_may_restore(f.process());
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
        // A deleted file or memfd is made now: its contents come next.
        if (!created) R.files.prepare(R.descs.back());
        break;
      case pb::Frame::kFd:
        R.fds.push_back(f.fd());
        break;
      case pb::Frame::kMm: {
        if (!created) {
          create_tasks(R);
          created = true;
        }
        pid_t p = static_cast<pid_t>(f.mm().pid() ? f.mm().pid() : f.pid());
        Task& t = R.tasks.at(p);
        t.vmas.assign(f.mm().vmas().begin(), f.mm().vmas().end());
        t.mm_seen = true;
        if (mm) done.push_back(std::move(mm));
        mm = std::make_unique<TaskBuilder>(TaskBuilder{R, t, p, R.outer(p), nullptr, 0, ScopedFd(), {}});
        mm->lazy = o.lazy;
        with_context(strf("restoring memory of pid %d", p), [&] { mm->start(); });
        break;
      }
      case pb::Frame::kPages: {
        const pb::PageRun& run = f.pages();
        uint64_t len = uint64_t{run.npages()} * kPage;
        if (run.file()) {  // contents of a deleted file or memfd
          if (!run.has_payload()) {
            R.files.write_contents(run, nullptr, len, 0);
          } else {
            // Written as checked, like memory: only the restorer holds the
            // inode (deleted, or a memfd) until the tree runs.
            src->payload([&](uint64_t off, const char* p, size_t n) { R.files.write_contents(run, p, n, off); });
          }
          break;
        }
        // Where a run goes was checked: inside its object, or inside the
        // layout it follows.
        if (run.shmid()) {
          auto it = R.shm.find(run.shmid());
          if (it == R.shm.end() || run.addr() + len > it->second.size)
            fail(strf("internal: page run for shared object %#lx outside it", (unsigned long)run.shmid()));
          if (run.has_payload()) src->payload_to(it->second.base + run.addr());
          break;
        }
        if (!mm || static_cast<pid_t>(run.pid()) != mm->pid)
          fail(strf("internal: page run for pid %u outside its memory layout", run.pid()));
        const pb::Vma* v = mm->vma_at(run.addr());
        for (uint64_t a = run.addr(); v && a < run.addr() + len;) {  // a run may span adjacent VMAs
          const pb::Vma* w = mm->vma_at(a);
          if (!w) v = nullptr;
          else a = w->end();
        }
        if (!v)
          fail(strf("internal: page run %#lx+%u pages of pid %u is outside every mapping", (unsigned long)run.addr(),
                    run.npages(), run.pid()));
        if (!run.has_payload()) {
          if (v->kind() == pb::VMA_FILE_PRIVATE) {  // zeroed COW pages of a file mapping
            std::fill(buf.begin(), buf.end(), 0);
            for (uint64_t off = 0; off < len; off += buf.size())
              write_mem(mm->opid, run.addr() + off, buf.data(), std::min<uint64_t>(buf.size(), len - off));
          }
          break;
        }
        // --lazy: ck-uffd-serve places (and checks) these once the tree runs.
        if (o.lazy && mm->all_registered(run.addr(), len)) break;
        // Placed as they are checked: the tree runs only once the restore
        // is done, so a run that fails its digest fails the restore before
        // any task has seen a byte of it.
        src->payload([&](uint64_t off, const char* p, size_t n) { mm->put_pages(run.addr() + off, p, n); });
        break;
      }
      case pb::Frame::kCgroup:
        R.cgroups.push_back(f.cgroup());
        break;
      case pb::Frame::kSocket:
        // ck-sockdump writes its frames before the first memory layout:
        // sockets are made with the other files, before the tasks.
        if (created) bad_input("socket state after the memory layout (the stream was reordered?)");
        R.sock.add(f.socket());
        break;
      case pb::Frame::kNetlock:
        R.sock.add_lock(f.netlock());
        break;
      default:
        break;  // frames of later stages this restorer does not use
    }
  }
  check.end();  // a layout for every process, the state every socket needs
  if (mm) done.push_back(std::move(mm));
  for (auto& b : done) with_context(strf("restoring pid %d", b->pid), [&] { b->finish_memory(); });
  // --lazy: the server runs from here on: the remote syscalls that follow
  // (rseq, robust lists, signal state) touch memory it serves.
  if (o.lazy) start_uffd_server(R, done, o);
  for (auto& b : done) with_context(strf("restoring pid %d", b->pid), [&] { b->finish_task(); });
  R.files.release_inodes();  // mapped, entered: the tasks hold them now
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
  if (R.proxy) {  // the root gets the parent it keeps before its parent-death signal
    for (auto& b : done)
      if (b->pid == R.root) b->clear_pdeathsig();
    ::close(R.proxy_w);
    R.proxy_w = -1;
    wait_for(R.proxy, 0);
    R.created.erase(R.proxy);
  }
  for (auto& b : done) with_context(strf("restoring pid %d", b->pid), [&] { b->finish_registers(); });
  const pid_t job = o.shell_job ? shell_job_foreground(R, term) : 0;
  with_context("restoring sockets", [&] { R.sock.finish(); });  // repair off, locks lifted: the tree runs next
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
