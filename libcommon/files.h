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
#include <fcntl.h>
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
class StreamWriter;

// 1.1 images carried a deleted file's contents inside its FileDesc frame
// (and a frame is at most 16 MiB); a restore still reads them, up to this.
constexpr uint64_t kMaxInlineContents = 15ull << 20;

// Dump side.  The target processes are frozen (ptrace-stopped) by the caller.
// Nothing here changes the target: pipe data is duplicated with tee(2) from a
// second read end, contents are read through a second description.
//
// Deleted files and memfds (reached through an fd or only through a
// mapping) are one FileDesc per description; the contents of each inode
// travel once, after the first FileDesc of that inode, as PageRuns with
// `file` set (write()): holes stay holes, any size, in bounded memory.
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
  // Records the deleted files and memfds that pid maps and that no
  // recorded description shows: one FileDesc each (named by no Fd, with
  // map_start).  Call once every process's fds are recorded.
  void dump_mappings(pid_t pid);
  // pid's cwd (which = "cwd") or root ("root") directory when it was
  // removed: the id of a FileDesc (FILE_DIR, deleted, no Fd) describing it
  // (one per directory); 0 when the directory still has its path.
  uint32_t removed_dir(pid_t pid, const char* which);
  // Refuses, by name, what no restore could take again: a lock in
  // /proc/locks that a process of pids (the whole tree) holds but no fd of
  // the tree shows (taken through a description reached only through a
  // mapping, say), and a lock of a description that a process outside the
  // tree holds as well.  Changes nothing.
  void check_locks(const std::vector<pid_t>& pids);

  // Every FileDesc frame, each followed by the contents its inode carries
  // (PageRuns, file = its id), then every Fd frame.
  void write(StreamWriter& w);

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
  // The inode behind `proc_path` whose contents description d carries
  // (the first of its inode), opened for write().
  void keep_contents(const pb::FileDesc& d, const std::string& proc_path);
  void write_contents(StreamWriter& w, const pb::FileDesc& d, int fd);

  std::vector<pb::FileDesc> descs_;
  std::vector<pb::Fd> fds_;
  std::map<std::pair<uint64_t, uint64_t>, std::vector<Rep>> by_inode_;  // (dev, ino)
  std::set<std::pair<uint64_t, uint64_t>> pipes_with_data_;            // (dev, ino)
  std::map<std::pair<uint64_t, uint64_t>, uint32_t> contents_of_;      // (dev, ino) -> desc carrying them
  std::map<std::pair<uint64_t, uint64_t>, uint32_t> dirs_;             // removed cwd/root dirs -> desc
  std::map<uint32_t, ScopedFd> contents_fd_;                           // desc id -> inode, for write()
  std::set<std::pair<uint32_t, std::string>> posix_seen_;              // (desc, text): POSIX locks recorded
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

  // A description whose inode the restore makes itself: a deleted file or
  // a memfd (its contents then come as PageRuns: write_contents()), a
  // removed directory, a deleted FIFO.  Made at once (if no description of
  // the same inode made it already) so that the contents that follow the
  // description's frame have a place to go; anything else is left to
  // open_all().  Deleted files are made again under their own path and
  // unlinked at once when that path is free (so /proc shows "PATH
  // (deleted)" as before; missing parent directories are made for the
  // moment and removed again), else nameless in that directory (O_TMPFILE)
  // or in /tmp.  Bad descriptions: status 3.
  void prepare(const pb::FileDesc& d);
  // Contents of the file of run.file (a description prepare() made):
  // npages pages at byte offset run.addr, from data (a run with payload),
  // or zeros (a run without, still file data: written, not a hole).  Bytes
  // past the file's size are dropped.  A run for a description that is not
  // a deleted file or memfd, or outside the file: status 3.
  void write_contents(const pb::PageRun& run, const char* data, uint64_t len, uint64_t offset_in_run);

  // descs: every FileDesc of the image; fds: every Fd.  Opens every
  // description once in the calling process at fd numbers >= base (raised
  // above the highest target fd number if needed, so install() never
  // overwrites a restorer-side fd); not CLOEXEC, so forked children inherit
  // them.  Only kinds the restorability check accepts (restorable.h) are
  // rebuilt; any other is an internal error.  Sockets are made by the
  // socket restorer given to use_sockets(), after every other file (fds in
  // flight) and before epolls.  The inodes prepare() made get their owner,
  // mode, times and seals first.  OFD locks are taken here, on the restorer's copy of the
  // description (they belong to it, and the task inherits them); flocks by
  // install(), in the task that took them (so /proc/locks shows its pid).
  void open_all(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds, int base);
  // The restorer's fd on the inode that prepare() made for a description
  // (to map it, to chdir into it); -1 if none.
  int inode_fd(uint32_t desc_id) const;
  // The POSIX locks and leases process `pid` takes again itself once
  // nothing else opens or closes files in it (closing any fd of a file
  // drops its POSIX locks): fcntl(lock.fd(), ...) in the task.
  struct TaskLock {
    pb::FileLock lock;
    std::string what;  // "write POSIX lock on 0-EOF of fd 3 of pid 42 ('/x')"
  };
  std::vector<TaskLock> task_locks(pid_t pid) const;
  // fcntl(2) arguments that take the lock again: *cmd and *fl (POSIX),
  // or *cmd and *arg (a lease).
  static void lock_call(const pb::FileLock& l, int* cmd, struct flock* fl, long* arg);
  // "write POSIX lock on 0-EOF of fd 3 of pid 42 ('/x')".
  std::string lock_who(const pb::FileLock& l, uint32_t desc_id) const;
  // Closes the inodes prepare() made (once every task has mapped them).
  void release_inodes();
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
  // numbers of pid), take the flocks pid took, then add the epoll targets
  // of the epolls pid owns.
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
  void finish_inode(const pb::FileDesc& d, int fd);  // owner, mode, times, seals
  int made_fd(const pb::FileDesc& d);                 // its inode, made and finished
  void take_locks(const pb::FileDesc& d, int fd);    // flock and OFD locks, in the restorer
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
  struct Made {      // an inode prepare() made
    int fd = -1;
    uint64_t size = 0;      // of the file (contents past it are dropped)
    bool file = false;      // deleted file or memfd: takes contents
    bool finished = false;  // owner, mode, times, seals set: takes no more
  };
  std::map<std::string, Made> made_;                    // inode key -> what prepare() made
  std::map<uint32_t, std::string> made_key_;            // desc id -> its inode key in made_
  std::map<pid_t, std::vector<TaskLock>> task_locks_;
  struct Flock {
    int fd;  // target fd number in the task
    bool exclusive;
    std::string what;
  };
  std::map<pid_t, std::vector<Flock>> flocks_;  // taken by install()
  std::vector<int> holders_;                             // fds closed at the end of open_all
  std::map<pid_t, std::vector<Slot>> slots_;
  std::map<pid_t, std::vector<EpollAdd>> epoll_adds_;
};

// "POSIX write lock on 0-EOF", "exclusive flock", "read lease".
std::string lock_name(const pb::FileLock& l);

// The checks of an fd table that ck-restore needs (unique description ids,
// fds in range naming known descriptions, each once, absolute paths, epoll
// owners and targets in the image, contents within the limits): bad input,
// status 3, otherwise.  Run by open_all and by the restorability check.
void validate_file_table(const std::vector<pb::FileDesc>& descs, const std::vector<pb::Fd>& fds);

// "AF_UNIX", "AF_INET", ... ("AF_42" for the rest).
std::string socket_family_name(int family);

}  // namespace ck
