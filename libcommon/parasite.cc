#include "parasite.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
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
constexpr size_t kPipeBytes = CK_PARASITE_CHUNK_PAGES * kPage;
constexpr uint64_t kTrapAt = 6;  // the parasite's int3 is at 5: rip after it
// The signals a fault of the parasite raises (and its int3).  The kernel
// resets the handler of such a signal when it is blocked or ignored, so
// while the parasite is in they are unblocked and at SIG_DFL, and put back
// after; under ptrace they stop the thread before any default action.
constexpr int kFaultSignals[] = {SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE};

size_t round_up(size_t n) { return (n + kPage - 1) / kPage * kPage; }

uint64_t parasite_sigmask() {
  uint64_t m = ~0ull;
  for (int s : kFaultSignals) m &= ~(1ull << (s - 1));
  return m;
}

}  // namespace

size_t parasite_blob_size() { return static_cast<size_t>(ck_parasite_blob_end - ck_parasite_blob); }

// A pipe made in the target: it keeps `remote_keep` (0: read end, 1: write
// end) as *keep_slot; we take the other end with pidfd_getfd and close it
// in the target.
void Parasite::take_pipe(int remote_keep, ScopedFd* ours, int* keep_slot) {
  rs_.check("pipe2", SYS_pipe2, args_, O_CLOEXEC);
  int fds[2];
  read_mem(pid_, args_, fds, sizeof fds);
  *keep_slot = fds[remote_keep];
  *ours = take_fd(pid_, fds[1 - remote_keep]);
  int err = errno;
  rs_.syscall(SYS_close, static_cast<uint64_t>(fds[1 - remote_keep]));
  if (!ours->valid()) throw_errno(strf("unable to take the parasite's pipe out of pid %d", pid_), err);
}

Parasite::Parasite(pid_t pid, pid_t tid, uint64_t insn) : pid_(pid), tid_(tid), rs_(tid, insn) {
  xsave_ = get_xsave(tid);
  sigmask_ = get_sigmask(tid);
  struct {  // struct ptrace_rseq_configuration (linux/ptrace.h clashes with sys/ptrace.h)
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size, signature, flags, pad;
  } rc = {};
  if (ptrace(static_cast<__ptrace_request>(0x420f /* PTRACE_GET_RSEQ_CONFIGURATION */), tid, sizeof rc, &rc) > 0 &&
      rc.rseq_abi_pointer)
    rseq_addr_ = rc.rseq_abi_pointer, rseq_len_ = rc.rseq_abi_size;
  size_t code = round_up(parasite_blob_size());
  size_t args = round_up(sizeof(ck_parasite_args));
  len_ = code + args + kStack;
  // The destructor does not run if we throw from here: undo by hand.
  try {
    base_ = static_cast<uint64_t>(rs_.check("mmap", SYS_mmap, 0, len_, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0));
    args_ = base_ + code;
    stack_top_ = base_ + len_ - 64;
    write_mem(pid, base_, ck_parasite_blob, parasite_blob_size());
    rs_.check("mprotect", SYS_mprotect, base_, code, PROT_READ | PROT_EXEC);
    take_pipe(1, &pages_, &remote_[0]);  // the target writes pages
    take_pipe(1, &bell_, &remote_[1]);   // and bells
    take_pipe(0, &ack_, &remote_[2]);    // and reads acks
    int got = ::fcntl(pages_.get(), F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
    pipe_size_ = got > 0 ? static_cast<size_t>(got) : 0;
    // Fault signals at SIG_DFL meanwhile (see kFaultSignals).
    struct {
      uint64_t handler = 0, flags = 0, restorer = 0, mask = 0;
    } dfl;
    uint64_t at = args_ + 64;
    write_mem(pid, at, &dfl, sizeof dfl);
    for (int s : kFaultSignals) {
      rs_.check("rt_sigaction", SYS_rt_sigaction, static_cast<uint64_t>(s), at, at + sizeof dfl, 8);
      std::string old(sizeof dfl, '\0');
      read_mem(pid, at + sizeof dfl, old.data(), old.size());
      old_actions_.push_back({s, old});
    }
    set_sigmask(tid, parasite_sigmask());
    mask_set_ = true;
  } catch (...) {
    take_out();
    throw;
  }
  LOG_DEBUG("pid %d: parasite in thread %d at %#lx, pipe of %zu bytes", pid, tid, static_cast<unsigned long>(base_),
            pipe_size_);
}

Parasite::~Parasite() { take_out(); }  // rs_ then puts the general registers back

// Undoes whatever of the constructor was done.  Remote syscalls run from
// the saved registers whatever state the parasite left the thread in.
void Parasite::take_out() {
  try {
    for (auto& [s, old] : old_actions_) {
      write_mem(pid_, args_ + 64, old.data(), old.size());
      rs_.check("rt_sigaction", SYS_rt_sigaction, static_cast<uint64_t>(s), args_ + 64, 0, 8);
    }
    for (int fd : remote_)
      if (fd >= 0) rs_.syscall(SYS_close, static_cast<uint64_t>(fd));
    if (base_) rs_.syscall(SYS_munmap, base_, len_);
  } catch (const std::exception& e) {
    LOG_ERROR("unable to take the parasite out of pid %d: %s", pid_, e.what());
  }
  try {
    set_xsave(tid_, xsave_);
    if (mask_set_) set_sigmask(tid_, sigmask_);
  } catch (const std::exception& e) {
    LOG_ERROR("unable to restore thread %d after the parasite: %s", tid_, e.what());
  }
}

long Parasite::run(int cancel_fd, const std::function<void()>& idle) {
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

  // Ptrace stops arrive as SIGCHLD: wait for one or for the cancel fd
  // (SIGCHLD blocked in this thread meanwhile, read from a signalfd).
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  struct MaskBack {
    sigset_t m;
    ~MaskBack() { sigprocmask(SIG_SETMASK, &m, nullptr); }
  } back{old};
  ScopedFd sfd(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd.valid()) throw_errno("unable to create a signalfd");

  if (ptrace(PTRACE_CONT, tid_, 0, 0) != 0) throw_errno(strf("unable to resume thread %d", tid_));
  bool cancelled = false;
  for (;;) {
    int st;
    pid_t w = waitpid(tid_, &st, __WALL | WNOHANG);
    if (w < 0 && errno != EINTR) throw_errno(strf("unable to wait for thread %d", tid_));
    if (w == tid_) {
      if (!WIFSTOPPED(st)) fail(strf("pid %d died with the parasite in it", pid_));
      if (cancelled) fail(strf("the stage that ran the parasite in pid %d went away", pid_));
      siginfo_t si;
      std::memset(&si, 0, sizeof si);
      ptrace(PTRACE_GETSIGINFO, tid_, 0, &si);
      user_regs_struct at = get_regs(tid_);
      if (WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0 && si.si_code == SI_KERNEL && at.rip == base_ + kTrapAt) {
        broken_ = false;
        LOG_TRACE("pid %d: parasite run = %ld", pid_, static_cast<long>(at.rax));
        return static_cast<long>(at.rax);
      }
      fail(strf("the parasite in pid %d got signal %d (%s) at %#lx (parasite at %#lx), address %p", pid_,
                WSTOPSIG(st), strsignal(WSTOPSIG(st)), static_cast<unsigned long>(at.rip),
                static_cast<unsigned long>(base_), si.si_addr));
    }
    struct pollfd p[2] = {{sfd.get(), POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    // The timeout only matters in a caller with other threads, one of
    // which may take the SIGCHLD.
    int n = ::poll(p, cancel_fd >= 0 && !cancelled ? 2 : 1, 10);
    if (n < 0 && errno != EINTR) throw_errno("unable to poll");
    if (n > 0 && p[0].revents) {
      struct signalfd_siginfo ssi;
      while (::read(sfd.get(), &ssi, sizeof ssi) > 0) {
      }
    }
    if (idle) idle();
    if (n > 0 && cancel_fd >= 0 && !cancelled && p[1].revents) {
      LOG_DEBUG("pid %d: the stage went away: stopping the parasite", pid_);
      cancelled = true;
      if (ptrace(PTRACE_INTERRUPT, tid_, 0, 0) != 0) throw_errno(strf("unable to interrupt thread %d", tid_));
    }
  }
}

}  // namespace ck
