// The ptrace layer: seizing threads, their register sets, and remote
// syscalls run inside a stopped thread.
//
// Remote work is a scoped object (RemoteSyscalls): it saves the thread's
// registers when made and puts them back when destroyed, so a dump that
// fails half way leaves the thread exactly as it was.  syscall() returns the
// raw kernel result (-errno on failure); check() throws instead.
#pragma once
#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ck {

// PTRACE_SEIZE + PTRACE_INTERRUPT.  Throws naming the tid on failure.
void seize_thread(pid_t tid);
// Waits for tid's interrupt stop.  Signal-delivery stops met on the way are
// passed on to the thread (as if nobody was looking) and waited past.
// Returns false if the thread exited.  group_stop (if given) is set to the
// signal of the group stop the thread is in (^Z, SIGSTOP: a seized thread
// of a stopped process reports it instead of SIGTRAP), 0 if none.
bool wait_interrupt_stop(pid_t tid, int* group_stop = nullptr);
void detach_thread(pid_t tid, int sig = 0);

user_regs_struct get_regs(pid_t tid);
void set_regs(pid_t tid, const user_regs_struct& r);
std::string get_xsave(pid_t tid);  // NT_X86_XSTATE, full size
void set_xsave(pid_t tid, const std::string& x);
uint64_t get_sigmask(pid_t tid);
void set_sigmask(pid_t tid, uint64_t mask);

// Address of a `syscall` instruction in pid's [vdso].
uint64_t find_syscall_insn(pid_t pid);

class RemoteSyscalls {
 public:
  RemoteSyscalls(pid_t tid, uint64_t syscall_insn);
  ~RemoteSyscalls();  // restores the saved registers
  RemoteSyscalls(const RemoteSyscalls&) = delete;
  RemoteSyscalls& operator=(const RemoteSyscalls&) = delete;

  long syscall(long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0, uint64_t a5 = 0,
               uint64_t a6 = 0);
  // Like syscall() but throws "remote NAME in pid P: strerror" on failure.
  long check(const char* name, long nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
             uint64_t a5 = 0, uint64_t a6 = 0);
  // A scratch mapping of `len` bytes in the target (mmap on first use,
  // munmap in the destructor).
  uint64_t scratch(size_t len = 4096);
  const user_regs_struct& saved() const { return saved_; }
  void set_saved(const user_regs_struct& r) { saved_ = r; }

 private:
  pid_t tid_;
  uint64_t insn_;
  user_regs_struct saved_;
  uint64_t scratch_ = 0;
  size_t scratch_len_ = 0;
};

// Memory of another process (root: process_vm_*).
void read_mem(pid_t pid, uint64_t addr, void* dst, size_t len);
void write_mem(pid_t pid, uint64_t addr, const void* src, size_t len);

}  // namespace ck
