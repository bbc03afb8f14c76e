// File descriptors: dump (read a frozen process's fd table into FileDesc/Fd
// records) and restore (reopen every description, then install it into the
// forked tasks at its numbers).  See docs/files.md for what each kind keeps.
//
// Failure: every method throws ck::Error.  Dump-side messages name the fd and
// pid ("unable to dump fd 7 of pid 4242 (socket AF_NETLINK): not supported");
// restore-side ones name the file, fd and pid ("unable to open '/x' for fd 3
// of pid 42: No such file or directory").  Images that are inconsistent or
// hostile (unknown ids, relative paths, oversized data) give status 3.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ck.pb.h"
#include "fd.h"

namespace ck {

class SockRestorer;

// Deleted files and memfds carry their contents in the image up to this size;
// bigger ones are refused by name.  The contents travel inside the FileDesc
// frame, and a frame is at most 16 MiB (stream.h kMaxFrame), hence 15 MiB.
constexpr uint64_t kMaxFileContents = 15ull << 20;

// Dump side.  The target processes are frozen (ptrace-stopped) by the caller.
// Nothing here changes the target: pipe data is duplicated with tee(2) from a
// second read end, contents are read through a second description.
class FileDumper {
 public:
  FileDumper() = default;
  ~FileDumper();
  FileDumper(const FileDumper&) = delete;
  FileDumper& operator=(const FileDumper&) = delete;

  // Checks every fd of pid and throws ck::Error naming the first one ck cannot
  // dump.  Changes nothing and records nothing.
  void check_process(pid_t pid);
  // Records pid's fd table.  Descriptions shared with an fd already recorded
  // (same or another pid given to this dumper) get the same FileDesc id.
  void dump_process(pid_t pid);
  // Records one fd (ck-sockdump: a file in flight, received into its own
  // fd table); fds().back() then names its description.
  void dump_fd(pid_t pid, int fd) { one_fd(pid, fd, true); }
  // After check_process of every process of the tree, before dump_process:
  // finds the pipes and FIFOs of the tree that a process outside it holds
  // too (the other stages of a shell pipeline), by their inode, in every
  // /proc/PID/fd.  Those named in `accepted` ("pipe:[1234]", "fifo:/run/x")
  // are recorded as external (FileDesc.external, without their queued
  // bytes, which stay in the pipe); any other is refused by name.
  void check_external(const std::set<pid_t>& tree, const std::set<std::string>& accepted);

  const std::vector<pb::FileDesc>& descs() const { return descs_; }
  const std::vector<pb::Fd>& fds() const { return fds_; }

 private:
  struct Rep {       // one recorded description and an fd that shows it
    pid_t pid;
    int fd;
    uint32_t id;
  };
  void one_fd(pid_t pid, int fd, bool record);
  int pidfd(pid_t pid);
  ScopedFd take(pid_t pid, int fd, const std::string& what);  // the task's own open file (pidfd_getfd)

  std::vector<pb::FileDesc> descs_;
  std::vector<pb::Fd> fds_;
  std::map<std::pair<uint64_t, uint64_t>, std::vector<Rep>> by_inode_;  // (dev, ino)
  std::set<std::pair<uint64_t, uint64_t>> pipes_with_data_;            // (dev, ino)
  std::set<std::pair<uint64_t, uint64_t>> inodes_with_contents_;       // (dev, ino)
  std::map<pid_t, int> pidfds_;
  struct End {             // a pipe or FIFO of the tree, by inode
    std::string name;      // "pipe:[1234]", "fifo:/run/x"
    pid_t pid = 0;         // the first fd of the tree that shows it
    int fd = -1;
    std::string accepted;  // its name once --external accepted it
  };
  std::map<std::pair<uint64_t, uint64_t>, End> ends_;  // (dev, ino)
};

// Restore side, in the restorer's own process before it forks the tasks.
class FileRestorer {
 public:
  FileRestorer() = default;
  ~FileRestorer();
  FileRestorer(const FileRestorer&) = delete;
  FileRestorer& operator=(const FileRestorer&) = delete;

  // descs: every FileDesc of the image; fds: every Fd.  Opens every
  // description once in the calling process at fd numbers >= base (raised
  // above the highest target fd number if needed, so install() never
  // overwrites a restorer-side fd); not CLOEXEC, so forked children inherit
  // them.  Only kinds the restorability check accepts (restorable.h) are
  // rebuilt; any other is an internal error.  Sockets are made by the
  // socket restorer given to use_sockets(), after every other file (fds in
  // flight) and before epolls.
  void open_all(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds, int base);
  // Terminal fds of the image open this terminal (--shell-job).  Call
  // before open_all.
  void use_terminal(const std::string& path) { terminal_ = path; }
  void use_sockets(SockRestorer* s) { sockets_ = s; }
  // The description of an external resource (FileDesc.external == name)
  // is a duplicate of fd, an fd of the restorer (--inherit-fd).  Call
  // before open_all.
  void inherit(const std::string& name, int fd);
  int fd_of(uint32_t desc_id) const;  // restorer-side fd of a description; -1 if none
  // After open_all: no fd number from here up is a restorer-side fd or any
  // task's target number, so fds that must survive install() (keep) are
  // safe there: fcntl(fd, F_DUPFD, next_free()).
  int next_free() const { return next_; }

  // In a forked child that will become process `pid` (the dumped pid): dup2
  // each of pid's descriptions to its target number with its cloexec flag,
  // close every other fd except those in `keep` (which must not be target
  // numbers of pid), then add the epoll targets of the epolls pid owns.
  void install(pid_t pid, const std::vector<int>& keep);

  // Releases the restorer-side fds (in the parent after forking).
  void close_all();

 private:
  struct Slot {
    int target;
    int from;
    bool cloexec;
  };
  struct EpollAdd {
    int epfd;  // target fd number of the epoll in the owner
    int tfd;
    uint32_t events;
    uint64_t data;
  };
  void open_one(const pb::FileDesc& d);
  int place(int fd);                      // moves fd to >= next_, returns it
  std::string who(uint32_t desc_id) const;  // "fd 3 of pid 42"

  int next_ = 0;
  std::string terminal_;
  SockRestorer* sockets_ = nullptr;
  std::map<std::string, int> inherited_;         // external resource name -> restorer fd
  std::map<uint32_t, int> open_;                 // desc id -> restorer fd
  std::map<uint32_t, const pb::FileDesc*> desc_by_id_;
  std::map<uint32_t, std::pair<pid_t, int>> first_fd_;  // desc id -> (pid, fd)
  std::map<std::string, std::pair<int, int>> pipes_;    // pipe key -> (read, write) restorer fds
  std::map<std::string, int> inodes_;                   // memfd / deleted file key -> fd
  std::vector<int> holders_;                             // fds closed at the end of open_all
  std::map<pid_t, std::vector<Slot>> slots_;
  std::map<pid_t, std::vector<EpollAdd>> epoll_adds_;
};

// The checks of an fd table that ck-restore needs (unique description ids,
// fds in range naming known descriptions, each once, absolute paths, epoll
// owners and targets in the image, contents within the limits): bad input,
// status 3, otherwise.  Run by open_all and by the restorability check.
void validate_file_table(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds);

// "AF_UNIX", "AF_INET", ... ("AF_42" for the rest).
std::string socket_family_name(int family);

}  // namespace ck
