// ck-restore, the task room: once a process's memory is in place, its
// signal handlers, timers, cwd, process group, pending signals, rlimits,
// per-thread state (altstack, tid address, robust list, rseq, name,
// credentials) and, last, every thread's registers, XSAVE and mask.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "error.h"
#include "log.h"
#include "restore_impl.h"

CK_LOG_MODULE("restore");

#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#endif

namespace ck {

// ck-restore hands every task the credentials its image names.  Run by root
// that is the job; run by anyone else, an image would be a way to take
// other users' ids or capabilities, or at best a restore that fails half
// way in setresuid.  So the caller must be able to do each step itself:
// ids other than its own need CAP_SETUID / CAP_SETGID, capabilities it
// does not hold cannot be granted, and pids are chosen through clone3's
// set_tid, which needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN.
void Restorer::check_caller_may_restore(const pb::Process& p) const {
  constexpr int kCapSetgid = 6, kCapSetuid = 7, kCapSysAdmin = 21, kCapCheckpointRestore = 40;
  const pb::Creds& me = own_creds;
  auto has = [&](int cap) { return (me.cap_eff() >> cap & 1) != 0; };
  auto mine = [](const google::protobuf::RepeatedField<uint32_t>& own, uint32_t id) {
    return std::find(own.begin(), own.end(), id) != own.end();
  };
  auto refuse = [&](const std::string& why) {
    fail(strf("unable to restore pid %u: %s (run ck-restore as root)", p.pid(), why.c_str()));
  };
  if (!has(kCapCheckpointRestore) && !has(kCapSysAdmin))
    refuse("ck-restore lacks CAP_CHECKPOINT_RESTORE and CAP_SYS_ADMIN, which choosing a task's pid needs");
  if (!p.has_creds()) return;
  const pb::Creds& c = p.creds();
  if (!has(kCapSetuid))
    for (uint32_t u : c.uid())
      if (!mine(me.uid(), u)) refuse(strf("it ran as uid %u and ck-restore, without CAP_SETUID, cannot take it", u));
  if (!has(kCapSetgid)) {
    for (uint32_t g : c.gid())
      if (!mine(me.gid(), g)) refuse(strf("it ran as gid %u and ck-restore, without CAP_SETGID, cannot take it", g));
    for (uint32_t g : c.groups())
      if (!mine(me.groups(), g)) refuse(strf("it was in group %u and ck-restore, without CAP_SETGID, cannot join it", g));
  }
  // (capabilities this kernel does not know are left to set_creds, as before)
  uint64_t known = last_cap >= 63 ? ~uint64_t{0} : (uint64_t{1} << (last_cap + 1)) - 1;
  uint64_t more = (c.cap_prm() | c.cap_inh() | c.cap_amb()) & ~me.cap_prm() & known;
  if (more) refuse(strf("it held capabilities %#llx that ck-restore does not", static_cast<unsigned long long>(more)));
}

uint64_t TaskBuilder::put(const void* data, size_t len) {
  if (len > 3000) fail("internal: scratch too small");
  write_mem(opid, scratch, data, len);
  return scratch;
}

uint64_t TaskBuilder::put_str(const std::string& s) { return put(s.c_str(), s.size() + 1); }

void TaskBuilder::finish_task() {
  const pb::Process& p = t.proc;
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
void TaskBuilder::set_creds(RemoteSyscalls& r, const pb::Creds& c) {
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
void TaskBuilder::restartable(user_regs_struct& r) {
  constexpr long kRestartBlock = -516, kRestartNoIntr = -513;
  if (static_cast<long>(r.orig_rax) < 0 || static_cast<long>(r.rax) != kRestartBlock) return;
  r.rax = static_cast<uint64_t>(kRestartNoIntr);
  if (r.orig_rax == SYS_nanosleep && r.rsi) r.rdi = r.rsi;
  if (r.orig_rax == SYS_clock_nanosleep && !(r.rsi & TIMER_ABSTIME) && r.r10) r.rdx = r.r10;
}

}  // namespace ck
