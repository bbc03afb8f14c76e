// The page parasite, from the tracer's side: code put into a frozen
// target to read its pages in place (see libcommon/parasite/pages.c and
// parasite_abi.h).  A Parasite is a scoped object, like RemoteSyscalls:
// made, it maps the parasite, its args and a stack into the target and
// gives the target a pipe; destroyed, it takes all of that away and puts
// back the thread's registers, XSAVE state and signal mask, so a dump that
// fails half way leaves the target exactly as it was.
//
// Only the thread's tracer can make one.  Stages that are not the tracer
// (ck-memread under ck-freeze) ask the tracer through a TracerClient.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

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

  uint64_t args_addr() const { return args_; }  // struct ck_parasite_args, in the target
  int pipe_fd() const { return pipe_.get(); }    // our read end of the target's pipe
  int remote_pipe_fd() const { return remote_pipe_; }  // its write end, in the target (args.pipe_fd)
  size_t pipe_size() const { return pipe_size_; }
  // Runs the parasite once on the args the caller wrote; returns its
  // result (bytes spliced or -errno).  Throws if it faults or the thread
  // dies; the parasite is then unusable (destroy it).
  long run();

 private:
  pid_t pid_, tid_;
  RemoteSyscalls rs_;
  std::string xsave_;
  uint64_t sigmask_ = 0;
  bool mask_set_ = false;
  uint64_t base_ = 0, len_ = 0, args_ = 0, stack_top_ = 0;
  int remote_pipe_ = -1;  // the target's write end
  ScopedFd pipe_;
  size_t pipe_size_ = 0;
  bool broken_ = false;
};

// The parasite's bytes, for tests.
size_t parasite_blob_size();

}  // namespace ck
