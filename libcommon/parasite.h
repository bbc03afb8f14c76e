// The page parasite, from the tracer's side: code put into a frozen
// target to read its pages in place (see libcommon/parasite/pages.c and
// parasite_abi.h).  A Parasite is a scoped object, like RemoteSyscalls:
// made, it maps the parasite, its args and a stack into the target and
// gives the target three pipes (pages, bell, ack); destroyed, it takes all
// of that away and puts back the thread's registers, XSAVE state, signal
// mask and the dispositions it changed, so a dump that fails half way
// leaves the target exactly as it was.
//
// Only the thread's tracer can make one.  Stages that are not the tracer
// (ck-memread under ck-freeze) ask the tracer through a TracerClient.
#pragma once
#include <functional>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fd.h"
#include "ptrace.h"

namespace ck {

class Parasite {
 public:
  // `tid` is a thread of `pid` in a ptrace stop of ours; `insn` the
  // address of a syscall instruction in pid (find_syscall_insn).
  Parasite(pid_t pid, pid_t tid, uint64_t insn);
  ~Parasite();
  Parasite(const Parasite&) = delete;
  Parasite& operator=(const Parasite&) = delete;

  // The reader's ends, ours (pass them on): pages and bell to read, ack to
  // write.  The parasite keeps its own copies open, so the target never
  // meets a pipe without its other end (no SIGPIPE for it).
  struct Ends {
    int pages, bell, ack;
  };
  Ends ends() const { return {pages_.get(), bell_.get(), ack_.get()}; }
  uint64_t args_addr() const { return args_; }  // struct ck_parasite_args, in the target
  // The target's fd numbers, for the args: pipe_fd, bell_fd, ack_fd.
  int remote_pages() const { return remote_[0]; }
  int remote_bell() const { return remote_[1]; }
  int remote_ack() const { return remote_[2]; }
  size_t pipe_size() const { return pipe_size_; }
  // The running thread's rseq area (0 if none): the kernel writes it each
  // time the thread goes back to user space, so while the parasite runs
  // its page must not be sent by reference.
  uint64_t rseq_addr() const { return rseq_addr_; }
  uint32_t rseq_len() const { return rseq_len_; }
  // Runs the parasite once on the args the caller wrote, until its int3;
  // returns its result (bytes spliced or -errno).  If `cancel_fd` (>= 0)
  // becomes readable or hangs up first, the thread is interrupted and run
  // throws.  Throws too if the parasite faults or the thread dies; the
  // parasite is then unusable (destroy it).
  // idle, if given, is called while the parasite runs (every few ms):
  // the tracer serves its other stages meanwhile.
  long run(int cancel_fd = -1, const std::function<void()>& idle = {});

 private:
  void take_pipe(int remote_keep, ScopedFd* ours, int* keep_slot);
  void take_out();  // the constructor's work undone (also half done)

  pid_t pid_, tid_;
  RemoteSyscalls rs_;
  std::string xsave_;
  uint64_t sigmask_ = 0;
  bool mask_set_ = false;
  std::vector<std::pair<int, std::string>> old_actions_;  // put back when done
  uint64_t base_ = 0, len_ = 0, args_ = 0, stack_top_ = 0;
  int remote_[3] = {-1, -1, -1};
  ScopedFd pages_, bell_, ack_;
  size_t pipe_size_ = 0;
  uint64_t rseq_addr_ = 0;
  uint32_t rseq_len_ = 0;
  bool broken_ = false;
};

// The parasite's bytes, for tests.
size_t parasite_blob_size();

}  // namespace ck
