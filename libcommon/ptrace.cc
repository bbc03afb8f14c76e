#include "ptrace.h"

#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "error.h"
#include "log.h"

CK_LOG_MODULE("ptrace");

#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK 0x420a
#define PTRACE_SETSIGMASK 0x420b
#endif

namespace ck {

void seize_thread(pid_t tid) {
  if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) throw_errno(strf("unable to seize thread %d", tid));
  if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) throw_errno(strf("unable to interrupt thread %d", tid));
}

bool wait_interrupt_stop(pid_t tid, int* group_stop) {
  if (group_stop) *group_stop = 0;
  for (;;) {
    int st;
    pid_t r = waitpid(tid, &st, __WALL);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno(strf("unable to wait for thread %d", tid));
    }
    if (WIFEXITED(st) || WIFSIGNALED(st)) return false;
    if (!WIFSTOPPED(st)) continue;
    int event = st >> 16;
    if (event == PTRACE_EVENT_STOP) {
      if (group_stop && WSTOPSIG(st) != SIGTRAP) *group_stop = WSTOPSIG(st);
      return true;
    }
    if (event != 0) {  // another event: go on
      ptrace(PTRACE_CONT, tid, 0, 0);
      continue;
    }
    // A signal-delivery stop: hand the signal on, then wait for the interrupt.
    int sig = WSTOPSIG(st);
    LOG_DEBUG("thread %d: passing signal %d on while stopping", tid, sig);
    if (ptrace(PTRACE_CONT, tid, 0, sig) != 0) {
      if (errno == ESRCH) return false;
      throw_errno(strf("unable to resume thread %d", tid));
    }
    ptrace(PTRACE_INTERRUPT, tid, 0, 0);
  }
}

void detach_thread(pid_t tid, int sig) {
  if (ptrace(PTRACE_DETACH, tid, 0, sig) != 0 && errno != ESRCH)
    LOG_WARN("unable to detach thread %d: %s", tid, strerror(errno));
}

user_regs_struct get_regs(pid_t tid) {
  user_regs_struct r;
  struct iovec iov = {&r, sizeof r};
  if (ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0) throw_errno(strf("unable to get registers of thread %d", tid));
  return r;
}

void set_regs(pid_t tid, const user_regs_struct& r) {
  struct iovec iov = {const_cast<user_regs_struct*>(&r), sizeof r};
  if (ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) != 0) throw_errno(strf("unable to set registers of thread %d", tid));
}

std::string get_xsave(pid_t tid) {
  std::string buf(64 << 10, '\0');
  struct iovec iov = {buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov) != 0) throw_errno(strf("unable to get XSAVE state of thread %d", tid));
  buf.resize(iov.iov_len);
  return buf;
}

void set_xsave(pid_t tid, const std::string& x) {
  std::string buf = x;
  struct iovec iov = {buf.data(), buf.size()};
  if (ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov) != 0) throw_errno(strf("unable to set XSAVE state of thread %d", tid));
}

uint64_t get_sigmask(pid_t tid) {
  uint64_t m = 0;
  if (ptrace(static_cast<__ptrace_request>(PTRACE_GETSIGMASK), tid, sizeof m, &m) != 0)
    throw_errno(strf("unable to get signal mask of thread %d", tid));
  return m;
}

void set_sigmask(pid_t tid, uint64_t mask) {
  if (ptrace(static_cast<__ptrace_request>(PTRACE_SETSIGMASK), tid, sizeof mask, &mask) != 0)
    throw_errno(strf("unable to set signal mask of thread %d", tid));
}

uint64_t find_syscall_insn(pid_t pid) {
  std::ifstream maps(strf("/proc/%d/maps", pid));
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("[vdso]") == std::string::npos) continue;
    uint64_t start = std::stoull(line.substr(0, line.find('-')), nullptr, 16);
    uint64_t end = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    std::string code(end - start, '\0');
    read_mem(pid, start, code.data(), code.size());
    for (size_t i = 0; i + 1 < code.size(); ++i)
      if (code[i] == '\x0f' && code[i + 1] == '\x05') return start + i;
  }
  fail(strf("no syscall instruction found in the vdso of pid %d", pid));
}

RemoteSyscalls::RemoteSyscalls(pid_t tid, uint64_t insn) : tid_(tid), insn_(insn), saved_(get_regs(tid)) {
  // Syscall stops then say SIGTRAP|0x80, which PTRACE_GET_SYSCALL_INFO
  // needs (and which no signal looks like).  Left set: nobody here seizes
  // with other options.
  if (ptrace(PTRACE_SETOPTIONS, tid, 0, PTRACE_O_TRACESYSGOOD) != 0)
    throw_errno(strf("unable to set ptrace options of thread %d", tid));
}

RemoteSyscalls::~RemoteSyscalls() {
  try {
    if (scratch_) syscall(SYS_munmap, scratch_, scratch_len_);
    set_regs(tid_, saved_);
  } catch (const std::exception& e) {
    LOG_ERROR("unable to restore registers of thread %d: %s", tid_, e.what());
  }
}

long RemoteSyscalls::syscall(long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6) {
  // Run under PTRACE_SYSCALL from the syscall instruction to the syscall's
  // exit stop: no single-step, so no SIGTRAP forced on the thread (a forced
  // signal the thread blocks or ignores gets its handler reset to SIG_DFL
  // and is unblocked).  Every signal but SIGKILL is blocked meanwhile, so a
  // signal queued for the frozen thread stays queued instead of being
  // dequeued on the way to the syscall; the mask is put back after.
  uint64_t mask = get_sigmask(tid_);
  set_sigmask(tid_, ~0ull);
  struct MaskBack {
    pid_t tid;
    uint64_t mask;
    ~MaskBack() {
      if (ptrace(static_cast<__ptrace_request>(PTRACE_SETSIGMASK), tid, sizeof mask, &mask) != 0)
        LOG_ERROR("unable to put back the signal mask of thread %d: %s", tid, strerror(errno));
    }
  } back{tid_, mask};
  user_regs_struct r = saved_;
  r.rip = insn_;
  r.rax = static_cast<uint64_t>(nr);
  r.orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on the way in
  r.rdi = a1, r.rsi = a2, r.rdx = a3, r.r10 = a4, r.r8 = a5, r.r9 = a6;
  r.eflags &= ~(1ul << 8);  // TF
  set_regs(tid_, r);
  bool entered = false;
  for (;;) {
    if (ptrace(PTRACE_SYSCALL, tid_, 0, 0) != 0) throw_errno(strf("unable to resume thread %d", tid_));
    int st;
    while (waitpid(tid_, &st, __WALL) < 0)  // an interrupted wait: the thread runs on, wait again
      if (errno != EINTR) throw_errno(strf("unable to wait for thread %d", tid_));
    if (!WIFSTOPPED(st)) fail(strf("thread %d died during a remote syscall", tid_));
    // An interrupt asked for earlier (or a group stop) taken on the way:
    // the syscall has not run yet, nothing else ran; go on.
    if ((st >> 16) == PTRACE_EVENT_STOP) continue;
    struct __ptrace_syscall_info info;
    std::memset(&info, 0, sizeof info);
    long n = ptrace(static_cast<__ptrace_request>(PTRACE_GET_SYSCALL_INFO), tid_, sizeof info, &info);
    if (n <= 0 || (info.op != PTRACE_SYSCALL_INFO_ENTRY && info.op != PTRACE_SYSCALL_INFO_EXIT)) {
      // Not a syscall stop: SIGKILL's way out, or a fault.  Not ours to
      // deliver; the registers are put back by the caller.
      fail(strf("thread %d stopped with signal %d during remote syscall %ld", tid_, WSTOPSIG(st), nr));
    }
    if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
      entered = true;
      continue;
    }
    if (entered) break;
  }
  user_regs_struct out = get_regs(tid_);
  LOG_TRACE("thread %d: remote syscall %ld = %ld", tid_, nr, static_cast<long>(out.rax));
  return static_cast<long>(out.rax);
}

long RemoteSyscalls::check(const char* name, long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                           uint64_t a6) {
  long rc = syscall(nr, a1, a2, a3, a4, a5, a6);
  if (rc < 0 && rc > -4096) throw_errno(strf("remote %s in thread %d", name, tid_), static_cast<int>(-rc));
  return rc;
}

uint64_t RemoteSyscalls::scratch(size_t len) {
  if (scratch_ && scratch_len_ >= len) return scratch_;
  if (scratch_) syscall(SYS_munmap, scratch_, scratch_len_);
  len = (len + 4095) & ~size_t{4095};
  scratch_ = static_cast<uint64_t>(check("mmap", SYS_mmap, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                         static_cast<uint64_t>(-1), 0));
  scratch_len_ = len;
  return scratch_;
}

void read_mem(pid_t pid, uint64_t addr, void* dst, size_t len) {
  struct iovec l = {dst, len}, r = {reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
  if (n != static_cast<ssize_t>(len))
    throw_errno(strf("unable to read memory of pid %d at %#lx", pid, static_cast<unsigned long>(addr)), n < 0 ? errno : EIO);
}

void write_mem(pid_t pid, uint64_t addr, const void* src, size_t len) {
  struct iovec l = {const_cast<void*>(src), len}, r = {reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_writev(pid, &l, 1, &r, 1, 0);
  if (n != static_cast<ssize_t>(len))
    throw_errno(strf("unable to write memory of pid %d at %#lx", pid, static_cast<unsigned long>(addr)), n < 0 ? errno : EIO);
}

}  // namespace ck
