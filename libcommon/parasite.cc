#include "parasite.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "error.h"
#include "log.h"
#include "parasite_abi.h"

CK_LOG_MODULE("parasite");

extern "C" const unsigned char ck_parasite_blob[];
extern "C" const unsigned char ck_parasite_blob_end[];

namespace ck {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kStack = 64 << 10;
constexpr size_t kPipeBytes = CK_PARASITE_MAX_PAGES * kPage;

size_t round_up(size_t n) { return (n + kPage - 1) / kPage * kPage; }

// Signals the parasite may meet as faults of its own stay unblocked: a
// fault on a blocked signal makes the kernel reset that signal's handler.
// Everything else waits, queued, until the target runs again.
uint64_t parasite_sigmask() {
  uint64_t m = ~0ull;
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP}) m &= ~(1ull << (s - 1));
  return m;
}

}  // namespace

size_t parasite_blob_size() { return static_cast<size_t>(ck_parasite_blob_end - ck_parasite_blob); }

Parasite::Parasite(pid_t pid, pid_t tid, uint64_t insn) : pid_(pid), tid_(tid), rs_(tid, insn) {
  xsave_ = get_xsave(tid);
  sigmask_ = get_sigmask(tid);
  size_t code = round_up(parasite_blob_size());
  size_t args = round_up(sizeof(ck_parasite_args));
  len_ = code + args + kStack;
  // From here on, the destructor does not run if we throw: undo by hand.
  try {
    base_ = static_cast<uint64_t>(rs_.check("mmap", SYS_mmap, 0, len_, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0));
    args_ = base_ + code;
    stack_top_ = base_ + len_ - 64;
    write_mem(pid, base_, ck_parasite_blob, parasite_blob_size());
    rs_.check("mprotect", SYS_mprotect, base_, code, PROT_READ | PROT_EXEC);
    rs_.check("pipe2", SYS_pipe2, args_, O_CLOEXEC);
    int fds[2];
    read_mem(pid, args_, fds, sizeof fds);
    remote_pipe_ = fds[1];
    ScopedFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd.valid()) throw_errno(strf("unable to open a pidfd for pid %d", pid));
    pipe_.reset(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fds[0], 0)));
    int err = errno;
    rs_.syscall(SYS_close, static_cast<uint64_t>(fds[0]));
    if (!pipe_.valid()) throw_errno(strf("unable to take the parasite's pipe out of pid %d", pid), err);
    int got = ::fcntl(pipe_.get(), F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
    pipe_size_ = got > 0 ? static_cast<size_t>(got) : 0;
    if (pipe_size_ < kPipeBytes) LOG_DEBUG("pid %d: parasite pipe of %zu bytes only", pid, pipe_size_);
    set_sigmask(tid, parasite_sigmask());
    mask_set_ = true;  // RemoteSyscalls set PTRACE_O_TRACESYSGOOD: syscall stops say SIGTRAP|0x80
  } catch (...) {
    if (mask_set_) set_sigmask(tid, sigmask_);
    if (remote_pipe_ >= 0) rs_.syscall(SYS_close, static_cast<uint64_t>(remote_pipe_));
    if (base_) rs_.syscall(SYS_munmap, base_, len_);
    throw;
  }
  LOG_DEBUG("pid %d: parasite in thread %d at %#lx, pipe of %zu bytes", pid, tid, static_cast<unsigned long>(base_),
            pipe_size_);
}

Parasite::~Parasite() {
  // Registers first: the syscalls below run from them, and the thread may
  // have been left anywhere inside the parasite.
  try {
    set_regs(tid_, rs_.saved());
    if (remote_pipe_ >= 0) rs_.syscall(SYS_close, static_cast<uint64_t>(remote_pipe_));
    rs_.syscall(SYS_munmap, base_, len_);
  } catch (const std::exception& e) {
    LOG_ERROR("unable to take the parasite out of pid %d: %s", pid_, e.what());
  }
  try {
    set_xsave(tid_, xsave_);
    if (mask_set_) set_sigmask(tid_, sigmask_);
  } catch (const std::exception& e) {
    LOG_ERROR("unable to restore thread %d after the parasite: %s", tid_, e.what());
  }
  // rs_ puts the general registers back last.
}

long Parasite::run() {
  if (broken_) fail(strf("the parasite in pid %d failed before", pid_));
  broken_ = true;
  user_regs_struct r = rs_.saved();
  r.rip = base_;
  r.rdi = args_;
  r.rsp = stack_top_;  // 16-byte aligned: the call leaves it as the ABI wants
  r.rax = 0;
  r.orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on the way in
  r.eflags &= ~(1ul << 10 | 1ul << 8);     // DF and TF clear
  set_regs(tid_, r);
  long result = 0;
  bool done = false;
  for (;;) {
    if (ptrace(PTRACE_SYSCALL, tid_, 0, 0) != 0) throw_errno(strf("unable to resume thread %d", tid_));
    int st;
    while (waitpid(tid_, &st, __WALL) < 0)
      if (errno != EINTR) throw_errno(strf("unable to wait for thread %d", tid_));
    if (!WIFSTOPPED(st)) fail(strf("pid %d died with the parasite in it", pid_));
    if (WSTOPSIG(st) != (SIGTRAP | 0x80)) {
      siginfo_t si;
      std::memset(&si, 0, sizeof si);
      ptrace(PTRACE_GETSIGINFO, tid_, 0, &si);
      user_regs_struct at = get_regs(tid_);
      fail(strf("the parasite in pid %d got signal %d (%s) at %#lx (parasite at %#lx), address %p", pid_,
                WSTOPSIG(st), strsignal(WSTOPSIG(st)), static_cast<unsigned long>(at.rip),
                static_cast<unsigned long>(base_), si.si_addr));
    }
    user_regs_struct at = get_regs(tid_);
    if (done) break;  // the exit stop of CK_PARASITE_DONE
    if (at.orig_rax == CK_PARASITE_DONE && at.rip > base_ && at.rip <= base_ + len_) {
      result = static_cast<long>(at.rdi);
      done = true;  // once more, to the syscall's exit
    }
  }
  broken_ = false;
  LOG_TRACE("pid %d: parasite run = %ld", pid_, result);
  return result;
}

}  // namespace ck
