#include "freeze.h"
#include "kinds.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <linux/ptrace.h>
#include <sys/time.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cgroup.h"
#include "error.h"
#include "fd.h"
#include "files.h"
#include "log.h"
#include "proc.h"
#include "ptrace.h"
#include "stream.h"
#include "tracer.h"
#include "vma.h"

#include <sys/sysmacros.h>  // last: its major()/minor() macros would hit pb::Header::major()

CK_LOG_MODULE("freeze");

namespace ck {

// What /proc/PID/status says of the credentials (securebits are not there).
void fill_creds(pid_t p, pb::Creds* c) {
  auto st = read_status(p);
  auto nums = [](const std::string& s) {
    std::vector<uint32_t> v;
    std::istringstream in(s);
    uint32_t x;
    while (in >> x) v.push_back(x);
    return v;
  };
  for (uint32_t u : nums(st["Uid"])) c->add_uid(u);
  for (uint32_t g : nums(st["Gid"])) c->add_gid(g);
  for (uint32_t g : nums(st["Groups"])) c->add_groups(g);
  c->set_cap_inh(parse_hex(st["CapInh"]));
  c->set_cap_prm(parse_hex(st["CapPrm"]));
  c->set_cap_eff(parse_hex(st["CapEff"]));
  c->set_cap_bnd(parse_hex(st["CapBnd"]));
  c->set_cap_amb(parse_hex(st["CapAmb"]));
  c->set_no_new_privs(st["NoNewPrivs"] == "1");
}

namespace {

// A child that exits while the tree is being seized (a shell's short-lived
// command) leaves a zombie its frozen parent cannot reap: let the tree go,
// give the parent a moment and start again.
struct Transient {};

bool exiting(pid_t p, pid_t tid) {
  char st = task_state(p, tid);
  return st == 0 || st == 'Z' || st == 'X';
}

// A process that has exited and waits for its parent to reap it: a zombie
// leader with no threads left (a leader that exited while its other
// threads run is not one).
bool is_zombie(pid_t p) {
  if (task_state(p, p) != 'Z') return false;
  try {
    return list_tids(p) == std::vector<pid_t>{p};
  } catch (const Error&) {
    return false;  // reaped meanwhile
  }
}

// A process whose main thread has exited (pthread_exit) while others run:
// its leader is a zombie, the rest of the group is not.
bool leader_exited(pid_t p) {
  if (task_state(p, p) != 'Z') return false;
  try {
    return list_tids(p).size() > 1;
  } catch (const Error&) {
    return false;
  }
}

// PTRACE_SEIZE fails with EPERM for a task that has a tracer already: say
// who it is.
[[noreturn]] void refuse_traced(pid_t p, pid_t tid, pid_t tracer) {
  std::string comm;
  try_read_file(strf("/proc/%d/comm", tracer), &comm);
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  refuse_kind(KindId::kTaskTraced, strf("unable to dump pid %d", p),
              strf("thread %d is traced by pid %d (%s), and a task has one tracer only", tid, tracer, comm.c_str()));
}

struct FrozenTree {
  std::vector<pid_t> procs;                // root first, parents before children
  std::map<pid_t, std::vector<pid_t>> threads;
  std::set<pid_t> seized;
  std::set<pid_t> zombies;                 // in procs, not seized, no threads
  std::map<pid_t, int> stopped;            // in a group stop when seized: its signal

  ~FrozenTree() { release(0); }
  // Kills the tree and waits until every process is gone or a zombie (its
  // pid is then free once its parent reaps it), so that a restore started
  // right after ck-freeze exits does not find the pids still in use.
  void kill_and_wait() {
    for (pid_t p : procs) ::kill(p, SIGKILL);
    // Reap our tracees' exit reports: other threads first, since a group
    // leader's report waits for the rest of its group.
    std::set<pid_t> leaders(procs.begin(), procs.end());
    auto reap = [](pid_t t) {
      int st;
      while (waitpid(t, &st, __WALL) >= 0 && !WIFEXITED(st) && !WIFSIGNALED(st)) {
      }
    };
    for (pid_t t : seized)
      if (!leaders.count(t)) reap(t);
    for (pid_t t : seized)
      if (leaders.count(t)) reap(t);
    seized.clear();
    for (pid_t p : procs) {
      for (int i = 0; i < 1000 && !exiting(p, p); ++i) usleep(1000);
      LOG_DEBUG("killed pid %d", p);
    }
  }
  // Detaches every thread; sig is sent to every process first (0: none).
  void release(int sig) {
    if (sig)
      for (pid_t p : procs) ::kill(p, sig);
    for (pid_t t : seized) detach_thread(t);
    seized.clear();
    stopped.clear();
  }
};

// Seizes the tree under root until a full pass finds no new thread or child:
// a stopped thread cannot clone, so the set converges.
void seize_tree(pid_t root, FrozenTree& t) {
  if (!pid_alive(root)) fail(strf("no process with pid %d", root));
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<pid_t> order = {root};
    std::set<pid_t> zombies;
    for (size_t i = 0; i < order.size(); ++i) {
      pid_t p = order[i];
      // A child is listed only once its parent is stopped, so a zombie seen
      // here stays one (nobody can reap it) until the tree is released.
      if (p != root && is_zombie(p)) {
        zombies.insert(p);
        continue;
      }
      if (leader_exited(p)) refuse_kind(KindId::kTaskLeaderExited, strf("unable to dump pid %d", p));
      std::vector<pid_t> tids;
      try {
        tids = list_tids(p);
      } catch (const Error&) {
        continue;  // exited
      }
      for (pid_t tid : tids) {
        if (t.seized.count(tid)) continue;
        if (ptrace(static_cast<__ptrace_request>(PTRACE_SEIZE), tid, 0, 0) != 0) {
          if (errno == ESRCH) continue;
          if (errno == EPERM && exiting(p, tid)) throw Transient();
          if (errno == EPERM) {
            const int err = errno;
            pid_t tracer = 0;
            try {
              tracer = static_cast<pid_t>(std::atoi(read_status(p, tid)["TracerPid"].c_str()));
            } catch (const Error&) {
            }
            if (tracer > 0) refuse_traced(p, tid, tracer);
            errno = err;
          }
          throw_errno(strf("unable to seize thread %d of pid %d", tid, p));
        }
        t.seized.insert(tid);
        int group_stop = 0;
        if (ptrace(static_cast<__ptrace_request>(PTRACE_INTERRUPT), tid, 0, 0) != 0 ||
            !wait_interrupt_stop(tid, &group_stop)) {
          t.seized.erase(tid);
          continue;
        }
        // A thread of a stopped process (^Z, SIGSTOP) reports the group
        // stop; the process stays stopped when it is let go, and comes
        // back stopped from a restore.
        if (group_stop) t.stopped[p] = group_stop;
        changed = true;
      }
      for (pid_t c : list_children(p)) order.push_back(c);
    }
    if (!changed) {
      for (pid_t p : order)
        if (p != root && !zombies.count(p) && exiting(p, p)) throw Transient();
      t.procs.clear();
      t.threads.clear();
      t.zombies = zombies;
      for (pid_t p : order) {
        if (zombies.count(p)) {
          t.procs.push_back(p);
          t.threads[p] = {};
          continue;
        }
        std::vector<pid_t> tids;
        try {
          tids = list_tids(p);
        } catch (const Error&) {
          continue;
        }
        t.procs.push_back(p);
        t.threads[p] = tids;
      }
    }
  }
  LOG_INFO("froze %zu processes (%zu of them zombies), %zu threads", t.procs.size(), t.zombies.size(), t.seized.size());
}

// The path of terminal `dev` as an fd of pid shows it, else "maj:min".
std::string terminal_name(pid_t p, dev_t dev) {
  std::string dir = strf("/proc/%d/fd", p);
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      struct stat st;
      std::string fd = dir + "/" + e->d_name;
      if (e->d_name[0] == '.' || ::stat(fd.c_str(), &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != dev) continue;
      ::closedir(d);
      try {
        return "'" + read_link(fd) + "'";
      } catch (const Error&) {
        break;
      }
    }
    ::closedir(d);
  }
  return strf("%u:%u", major(dev), minor(dev));
}

void check_tree(FrozenTree& t, FileDumper& files) {
  std::vector<pid_t> live;
  for (pid_t p : t.procs)
    if (!t.zombies.count(p)) live.push_back(p);
  files.check_locks(live);
  for (pid_t p : t.procs) {
    if (t.zombies.count(p)) continue;
    Stat st = read_stat(p);
    if (st.f[3] == "Z") fail(strf("unable to dump pid %d: it is a zombie", p));
    for (pid_t tid : t.threads[p]) {
      std::string s;
      try_read_file(strf("/proc/%d/task/%d/stat", p, tid), &s);
    }
    // A session leader with a controlling terminal (an interactive shell,
    // a login session): the restore could only give it a terminal by
    // taking the caller's away from the caller's session.
    if (st.u(6) == static_cast<uint64_t>(p) && st.u(7) != 0)
      refuse_kind(KindId::kTaskSessionLeader, strf("unable to dump pid %d (%s)", p, st.comm.c_str()),
                  strf("it is a session leader with the controlling terminal %s (an interactive shell?): ck restores "
                       "a tree onto a terminal only as a job of the restoring shell (--shell-job): not supported",
                       terminal_name(p, static_cast<dev_t>(st.u(7))).c_str()));
    // A seccomp filter cannot be read back (and a restore without it
    // would quietly drop a security boundary): refuse by name.
    std::string mode = read_status(p)["Seccomp"];
    if (!mode.empty() && mode != "0")
      refuse_kind(KindId::kTaskSeccomp, strf("unable to dump pid %d", p),
                  strf("it runs under seccomp (mode %s), whose filter cannot be read back: not supported", mode.c_str()));
    files.check_process(p);
    // Mappings ck-restore cannot rebuild: refused now, before any stage
    // runs (the sink would refuse them too, after the pages).
    for (const auto& v : read_vmas(p)) {
      const KindId k = kind_of(v);
      if (kind(k).support != Support::kSupported)
        refuse_kind(k, strf("unable to dump mapping %s of pid %d", describe(v).c_str(), p));
    }
  }
}

std::vector<pb::SigInfo> peek_siginfo(pid_t tid, bool shared) {
  std::vector<pb::SigInfo> out;
  for (uint64_t off = 0;; ++off) {
    struct ptrace_peeksiginfo_args a = {off, shared ? PTRACE_PEEKSIGINFO_SHARED : 0u, 1};
    siginfo_t si;
    long n = ptrace(static_cast<__ptrace_request>(PTRACE_PEEKSIGINFO), tid, &a, &si);
    if (n < 0) throw_errno(strf("unable to read pending signals of thread %d", tid));
    if (n == 0) break;
    pb::SigInfo* s = &out.emplace_back();
    s->set_raw(std::string(reinterpret_cast<char*>(&si), sizeof si));
    s->set_shared(shared);
  }
  return out;
}

struct kernel_sigaction {
  uint64_t handler, flags, restorer, mask;
};

// What /proc/PID/stat says of every process, zombies included: ids,
// terminal, comm, exit signal.
void fill_ids(pb::Process* pr, pid_t p, const Stat& st) {
  pr->set_pid(p);
  pr->set_ppid(static_cast<uint32_t>(st.u(4)));
  pr->set_pgid(static_cast<uint32_t>(st.u(5)));
  pr->set_sid(static_cast<uint32_t>(st.u(6)));
  pr->set_tty_nr(static_cast<uint32_t>(st.u(7)));
  pr->set_tty_pgrp(static_cast<int32_t>(st.i(8)));
  pr->set_comm(st.comm);
  pr->set_exit_signal(static_cast<int32_t>(st.i(38)));
}

void dump_process(pid_t p, const std::vector<pid_t>& tids, uint64_t insn, int stop_signal, FileDumper& files,
                  StreamWriter& w) {
  pb::Frame f;
  f.set_pid(p);
  pb::Process* pr = f.mutable_process();
  Stat st = read_stat(p);
  fill_ids(pr, p, st);
  for (pid_t t : tids) pr->add_tids(t);
  std::string s;
  if (try_read_file(strf("/proc/%d/exe", p), &s)) {}
  try {
    pr->set_exe(read_link(strf("/proc/%d/exe", p)));
  } catch (const Error&) {
  }
  pr->set_cwd(read_link(strf("/proc/%d/cwd", p)));
  pr->set_root(read_link(strf("/proc/%d/root", p)));
  pr->set_cwd_desc(files.removed_dir(p, "cwd"));
  pr->set_root_desc(files.removed_dir(p, "root"));
  pr->set_stop_signal(stop_signal);
  fill_creds(p, pr->mutable_creds());
  pr->set_personality(static_cast<uint32_t>(parse_hex(read_file(strf("/proc/%d/personality", p)))));
  pr->set_umask(static_cast<uint32_t>(std::strtoul(read_status(p)["Umask"].c_str(), nullptr, 8)));
  if (try_read_file(strf("/proc/%d/cgroup", p), &s))
    for (const auto& l : cgroup_v1_lines(s)) pr->add_cgroup_v1(l);
  pr->set_auxv(read_file(strf("/proc/%d/auxv", p)));
  pr->set_cmdline(read_file(strf("/proc/%d/cmdline", p)));
  try_read_file(strf("/proc/%d/environ", p), &s);
  pr->set_environ(s);
  pr->set_start_code(st.u(26));
  pr->set_end_code(st.u(27));
  pr->set_start_stack(st.u(28));
  pr->set_start_data(st.u(45));
  pr->set_end_data(st.u(46));
  pr->set_start_brk(st.u(47));
  pr->set_arg_start(st.u(48));
  pr->set_arg_end(st.u(49));
  pr->set_env_start(st.u(50));
  pr->set_env_end(st.u(51));
  for (auto& si : peek_siginfo(tids.front(), true)) *pr->add_shared_pending() = si;

  std::vector<pb::Frame> thread_frames;
  {
    RemoteSyscalls rs(tids.front(), insn);
    uint64_t scr = rs.scratch(4096);
    pr->set_brk(static_cast<uint64_t>(rs.syscall(SYS_brk, 0)));
    // Read by the task itself: prlimit() on another user's task needs
    // CAP_SYS_RESOURCE, which a dumper need not have.
    for (int r = 0; r < RLIMIT_NLIMITS; ++r) {
      struct rlimit rl;
      rs.check("prlimit64", SYS_prlimit64, 0, r, 0, scr);
      read_mem(p, scr, &rl, sizeof rl);
      auto* x = pr->add_rlimits();
      x->set_resource(r);
      x->set_cur(rl.rlim_cur);
      x->set_max(rl.rlim_max);
    }
    pr->mutable_creds()->set_securebits(static_cast<uint32_t>(rs.check("prctl", SYS_prctl, PR_GET_SECUREBITS)));
    pr->set_dumpable(static_cast<int32_t>(rs.check("prctl", SYS_prctl, PR_GET_DUMPABLE)));
    if (rs.syscall(SYS_prctl, PR_GET_CHILD_SUBREAPER, scr) == 0) {
      int32_t sr = 0;
      read_mem(p, scr, &sr, sizeof sr);
      pr->set_child_subreaper(static_cast<uint64_t>(sr));
    }
    if (rs.syscall(SYS_prctl, PR_GET_PDEATHSIG, scr) == 0) {
      int32_t pd = 0;
      read_mem(p, scr, &pd, sizeof pd);
      pr->set_pdeath_sig(pd);
    }
    for (int sig = 1; sig <= 64; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      if (rs.syscall(SYS_rt_sigaction, sig, 0, scr, 8) != 0) continue;  // 32, 33: glibc-internal but valid
      kernel_sigaction ka;
      read_mem(p, scr, &ka, sizeof ka);
      if (ka.handler == 0 && ka.flags == 0 && ka.mask == 0) continue;  // SIG_DFL, nothing to restore
      auto* a = pr->add_sigactions();
      a->set_signo(sig);
      a->set_handler(ka.handler);
      a->set_flags(ka.flags);
      a->set_restorer(ka.restorer);
      a->set_mask(ka.mask);
    }
    for (int which = 0; which < 3; ++which) {
      rs.check("getitimer", SYS_getitimer, which, scr);
      struct itimerval it;
      read_mem(p, scr, &it, sizeof it);
      if (!it.it_value.tv_sec && !it.it_value.tv_usec && !it.it_interval.tv_sec && !it.it_interval.tv_usec) continue;
      auto* x = pr->add_itimers();
      x->set_which(which);
      x->set_interval_us(it.it_interval.tv_sec * 1000000ull + it.it_interval.tv_usec);
      x->set_value_us(it.it_value.tv_sec * 1000000ull + it.it_value.tv_usec);
    }
    // POSIX timers: ids and notification from /proc, times from the task.
    std::string timers;
    if (try_read_file(strf("/proc/%d/timers", p), &timers)) {
      std::istringstream in(timers);
      std::string line;
      pb::PosixTimer* cur = nullptr;
      while (std::getline(in, line)) {
        std::istringstream l(line);
        std::string key;
        l >> key;
        if (key == "ID:") {
          cur = pr->add_posix_timers();
          int id;
          l >> id;
          cur->set_id(id);
        } else if (!cur) {
          continue;
        } else if (key == "signal:") {
          std::string v;
          l >> v;  // "SIG/VALUE"
          cur->set_signo(std::atoi(v.c_str()));
          cur->set_sigval(std::strtoull(v.substr(v.find('/') + 1).c_str(), nullptr, 16));
        } else if (key == "notify:") {
          std::string v;
          l >> v;  // "signal/pid.N" "thread/tid.N" "none/pid.N"
          int notify = v.rfind("none", 0) == 0 ? SIGEV_NONE : v.rfind("thread", 0) == 0 ? SIGEV_THREAD_ID : SIGEV_SIGNAL;
          cur->set_notify(notify);
          cur->set_notify_tid(std::atoi(v.substr(v.find('.') + 1).c_str()));
        } else if (key == "ClockID:") {
          int c;
          l >> c;
          cur->set_clock(c);
        }
      }
      for (auto& t : *pr->mutable_posix_timers()) {
        rs.check("timer_gettime", SYS_timer_gettime, t.id(), scr);
        struct itimerspec its;
        read_mem(p, scr, &its, sizeof its);
        t.set_interval_ns(its.it_interval.tv_sec * 1000000000ull + its.it_interval.tv_nsec);
        t.set_value_ns(its.it_value.tv_sec * 1000000000ull + its.it_value.tv_nsec);
        t.set_overrun(static_cast<int32_t>(rs.syscall(SYS_timer_getoverrun, t.id())));
      }
    }
    for (pid_t tid : tids) {
      pb::Frame tf;
      tf.set_pid(p);
      pb::Thread* th = tf.mutable_thread();
      th->set_pid(p);
      th->set_tid(tid);
      std::string comm;
      try_read_file(strf("/proc/%d/task/%d/comm", p, tid), &comm);
      if (!comm.empty() && comm.back() == '\n') comm.pop_back();
      th->set_comm(comm);
      user_regs_struct regs = tid == tids.front() ? rs.saved() : get_regs(tid);
      th->set_gpregs(std::string(reinterpret_cast<char*>(&regs), sizeof regs));
      th->set_xsave(get_xsave(tid));
      th->set_blocked(get_sigmask(tid));
      for (auto& si : peek_siginfo(tid, false)) *th->add_pending() = si;
      struct ptrace_rseq_configuration rc = {};
      if (ptrace(static_cast<__ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid, sizeof rc, &rc) > 0) {
        th->set_rseq_abi(rc.rseq_abi_pointer);
        th->set_rseq_len(rc.rseq_abi_size);
        th->set_rseq_sig(rc.signature);
      }
      uint64_t head = 0;
      size_t len = 0;
      if (::syscall(SYS_get_robust_list, tid, &head, &len) == 0) {
        th->set_robust_list(head);
        th->set_robust_len(len);
      }
      // Per-thread state that only the thread itself can tell.
      auto per_thread = [&](RemoteSyscalls& r) {
        uint64_t sc = r.scratch(4096);
        r.check("sigaltstack", SYS_sigaltstack, 0, sc);
        stack_t ss;
        read_mem(p, sc, &ss, sizeof ss);
        th->set_altstack_sp(reinterpret_cast<uint64_t>(ss.ss_sp));
        th->set_altstack_size(ss.ss_size);
        th->set_altstack_flags(ss.ss_flags);
        r.check("prctl", SYS_prctl, PR_GET_TID_ADDRESS, sc);
        uint64_t ctid;
        read_mem(p, sc, &ctid, sizeof ctid);
        th->set_clear_child_tid(ctid);
      };
      if (tid == tids.front()) {
        per_thread(rs);
      } else {
        RemoteSyscalls rt(tid, insn);
        per_thread(rt);
      }
      thread_frames.push_back(std::move(tf));
    }
  }
  w.frame(f);
  for (auto& tf : thread_frames) w.frame(tf);
}

void dump_zombie(pid_t p, StreamWriter& w) {
  pb::Frame f;
  f.set_pid(p);
  pb::Process* pr = f.mutable_process();
  Stat st = read_stat(p);
  fill_ids(pr, p, st);
  pr->set_zombie(true);
  pr->set_exit_status(static_cast<int32_t>(st.i(52)));
  LOG_DEBUG("pid %d is a zombie, exit status %#x", p, pr->exit_status());
  w.frame(f);
}

// The command's watchdog: SIGALRM kills its process group, whatever it is
// blocked in (a stage that is stopped, ck-freeze itself in a write to a
// pipe that nobody reads).  The writes then fail with EPIPE and the pidfd
// reports the exit: the usual paths roll back.
volatile sig_atomic_t command_pgrp = 0;
volatile sig_atomic_t command_timed_out = 0;

void on_command_timeout(int) {
  if (command_pgrp > 0) {
    command_timed_out = 1;
    ::kill(-command_pgrp, SIGKILL);
  }
}

void arm_watchdog(pid_t pgrp, unsigned seconds) {
  if (seconds == 0) return;
  command_pgrp = pgrp;
  command_timed_out = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_command_timeout;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGALRM, &sa, nullptr);
  ::alarm(seconds);
}

// Returns true when the watchdog fired before it was disarmed.
bool disarm_watchdog() {
  ::alarm(0);
  command_pgrp = 0;
  return command_timed_out != 0;
}

int wait_status(pid_t child) {
  int st;
  while (waitpid(child, &st, 0) < 0)
    if (errno != EINTR) throw_errno("unable to wait for the command");
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

int freeze_tree(const FreezeOptions& o) {
  // A dump that kills the tree commits when COMMAND exits 0, and COMMAND's
  // sink (ck-store put, ck-restore) is what checks that the image can be
  // restored.  Without one, nothing would.
  if (o.commit == FreezeOptions::kKill && o.command.empty())
    usage_error("a dump that kills the tree needs a COMMAND that stores or restores the stream "
                "(ck-freeze -t PID -- sh -c 'ck-memread | ck-store put -D DIR'), or --leave-running / --leave-stopped");
  FrozenTree tree;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int attempt = 0;; ++attempt) {
    try {
      seize_tree(o.pid, tree);
      break;
    } catch (const Transient&) {
      tree.release(0);
      if (attempt == 100) fail(strf("unable to dump pid %d: a process of its tree stays a zombie", o.pid));
      LOG_DEBUG("a child of the tree is exiting: letting the tree run and trying again");
      usleep(10000);
    }
  }
  FileDumper files;
  try {
    check_tree(tree, files);  // refuse before anything else happens
    files.check_external(std::set<pid_t>(tree.procs.begin(), tree.procs.end()),
                         std::set<std::string>(o.external.begin(), o.external.end()));
  } catch (const Error&) {
    LOG_WARN("nothing was dumped: the tree resumes as it was");
    throw;
  }

  int out_fd = 1;
  ScopedFd pipe_w;
  pid_t child = -1;
  // Declared after `tree`: every parasite is out before the tree resumes.
  std::unique_ptr<TracerService> tracer;
  if (!o.command.empty()) {
    std::map<pid_t, pid_t> live;
    for (pid_t p : tree.procs)
      if (!tree.zombies.count(p) && !tree.threads[p].empty()) live[p] = tree.threads[p].front();
    tracer = std::make_unique<TracerService>(std::move(live));
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) throw_errno("unable to create a pipe");
    child = fork();
    if (child < 0) throw_errno("unable to fork");
    if (child == 0) {
      ::setpgid(0, 0);  // its own group: the watchdog kills every stage
      dup2(p[0], 0);
      int tfd = tracer->command_fd();
      ::fcntl(tfd, F_SETFD, 0);
      ::setenv(kTracerEnv, std::to_string(tfd).c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      std::fprintf(stderr, "ck-freeze: unable to run '%s': %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    ::setpgid(child, child);  // whichever of the two runs first
    arm_watchdog(child, o.timeout_s);
    ::close(p[0]);
    tracer->close_command_fd();
    pipe_w.reset(p[1]);
    out_fd = p[1];
  }

  int status = 0;
  try {
    StreamWriter w(out_fd);
    pb::Header h = make_header("ck-freeze");
    h.set_root_pid(static_cast<uint32_t>(o.pid));
    w.header(h);
    uint64_t insn = find_syscall_insn(o.pid);
    for (pid_t p : tree.procs) {
      if (tree.zombies.count(p)) {
        dump_zombie(p, w);
        continue;
      }
      uint64_t pinsn = p == o.pid ? insn : find_syscall_insn(p);
      int stop = tree.stopped.count(p) ? tree.stopped[p] : 0;
      with_context(strf("dumping pid %d", p), [&] { dump_process(p, tree.threads[p], pinsn, stop, files, w); });
      files.dump_process(p);
    }
    std::vector<pid_t> live;
    for (pid_t p : tree.procs)
      if (!tree.zombies.count(p)) live.push_back(p);
    for (pid_t p : live) files.dump_mappings(p);
    files.write(w);  // descriptions, the contents of deleted files and memfds, fds
    w.finish();
  } catch (const Error& e) {
    if (child > 0) {
      pipe_w.reset();
      ::kill(child, SIGTERM);
      wait_status(child);
      if (disarm_watchdog())
        fail(strf("'%s' did not finish within %u s (--timeout): killed it; the tree resumes as it was",
                  o.command[0].c_str(), o.timeout_s));
    }
    throw;  // the tree resumes as `tree` goes out of scope
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  LOG_INFO("recorded the tree in %.3f ms", (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
  if (child > 0) {
    pipe_w.reset();
    int st = tracer->serve_until_exit(child);
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (disarm_watchdog() && status != 0) {
      LOG_ERROR("'%s' did not finish within %u s (--timeout): killed it; the tree resumes as it was",
                o.command[0].c_str(), o.timeout_s);
      tracer->settle_rounds(false);  // a round the killed command took was not stored
      tracer->undo_all();
      tree.release(0);
      return 1;
    }
  }
  if (tracer) tracer->settle_rounds(status == 0);  // pre-dump rounds the command took
  if (status != 0) {
    LOG_WARN("'%s' exited with status %d: the tree resumes as it was", o.command[0].c_str(), status);
    tracer->undo_all();  // the stages' side effects, while the tree is still frozen
    tree.release(0);
    return status;
  }
  switch (o.commit) {
    case FreezeOptions::kKill:
      tree.kill_and_wait();  // sockets in repair mode die without a word to their peers
      if (tracer) tracer->drop_undo();
      break;
    case FreezeOptions::kLeaveRunning:
      if (tracer) tracer->undo_all();
      tree.release(0);
      break;
    case FreezeOptions::kLeaveStopped:
      if (tracer) tracer->undo_all();
      tree.release(SIGSTOP);
      break;
  }
  return 0;
}

}  // namespace ck
