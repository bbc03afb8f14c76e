#include "kinds.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <netinet/in.h>

#include <cstring>

#include "error.h"

namespace ck {
namespace {

using S = Support;
constexpr const char* kWalk = "kinds.bats";

// In KindId order (checked at start-up by kind()).
const Kind kKinds[] = {
    // ---- fds
    {KindId::kFdFile, "fd.file", "regular file", S::kSupported, "reopened by path with flags and offset", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdFileDeleted, "fd.file.deleted", "regular file deleted while open", S::kSupported,
     "contents carried as page runs (any size, holes kept), made again under its path and unlinked, with owner, mode "
     "and times", nullptr, "deleted.bats"},
    {KindId::kFdDir, "fd.dir", "directory", S::kSupported, "reopened by path", nullptr, kWalk},
    {KindId::kFdDirDeleted, "fd.dir.deleted", "directory deleted while open", S::kSupported,
     "made again for the restore and removed again, with owner, mode and times", nullptr, "deleted.bats"},
    {KindId::kFdPipe, "fd.pipe", "pipe with both ends in the tree", S::kSupported,
     "recreated with its queued bytes and size", nullptr, "restore.bats: a 3-process tree with a pipe in flight"},
    {KindId::kFdPipeExternal, "fd.pipe.external", "pipe held outside the tree too (a shell pipeline)", S::kExternal,
     "accepted with --external 'pipe:[INO]' at dump; ck-restore --inherit-fd 'pipe:[INO]=FD' hands it a replacement",
     nullptr, "external.bats"},
    {KindId::kFdFifo, "fd.fifo", "FIFO (named pipe) held only by the tree", S::kSupported,
     "reopened by path, refilled with its queued bytes", nullptr, "restore.bats: every kind of fd"},
    {KindId::kFdFifoExternal, "fd.fifo.external", "FIFO held outside the tree too", S::kExternal,
     "accepted with --external 'fifo:PATH' at dump; ck-restore --inherit-fd 'fifo:PATH=FD' hands it a replacement",
     nullptr, "external.bats"},
    {KindId::kFdDevice, "fd.device", "memory device (/dev/null, /dev/zero, /dev/urandom, ...: major 1)", S::kSupported,
     "reopened by path, its device number checked", nullptr, "restore.bats: every kind of fd"},
    {KindId::kFdDeviceDeleted, "fd.device.deleted", "character device whose node was deleted", S::kRefused,
     "its node was deleted: not supported", nullptr, kWalk},
    {KindId::kFdDeviceOther, "fd.device.other", "any other character device (/dev/fuse, /dev/net/tun, /dev/kvm, ...)",
     S::kRefused, "its open file may hold state (a FUSE connection, a tun interface) that reopening loses: not supported",
     nullptr, kWalk},
    {KindId::kFdTty, "fd.tty", "terminal (the slave side)", S::kSupported,
     "ck-restore --shell-job gives it the caller's terminal, with the dumped settings", nullptr, "shelljob.bats"},
    {KindId::kFdPtyMaster, "fd.pty-master", "pseudo-terminal master (/dev/ptmx)", S::kRefused,
     "pseudo-terminal masters are not supported", nullptr, "shelljob.bats: a pseudo-terminal master is refused"},
    {KindId::kFdEventfd, "fd.eventfd", "eventfd", S::kSupported, "count and semaphore flag", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdEpoll, "fd.epoll", "epoll instance", S::kSupported, "every target with its events and data", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdSignalfd, "fd.signalfd", "signalfd", S::kSupported, "its mask", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdTimerfd, "fd.timerfd", "timerfd", S::kSupported, "clock, interval, time left, expirations", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdInotify, "fd.inotify", "inotify instance", S::kSupported, "every watch with its wd and mask", nullptr,
     "restore.bats: every kind of fd"},
    {KindId::kFdMemfd, "fd.memfd", "memfd", S::kSupported, "name, contents as page runs (any size, holes kept), mode and seals",
     nullptr, "restore.bats: every kind of fd; deleted.bats"},
    {KindId::kFdMemfdHugetlb, "fd.memfd.hugetlb", "hugetlb memfd (MFD_HUGETLB)", S::kRefused,
     "hugetlb memfds are not supported", nullptr, kWalk},
    {KindId::kFdSocketUnix, "fd.socket.unix", "unix socket (socketpair, asyncio's self-pipe, libuv's stdio)",
     S::kNeedsState, "restored from the state ck-sockdump dumps", "ck-sockdump", "sockets.bats"},
    {KindId::kFdSocketTcp, "fd.socket.tcp", "TCP socket (AF_INET, AF_INET6)", S::kNeedsState,
     "listening, bound and connected (TCP_REPAIR): queues, sequence numbers, window, options", "ck-sockdump",
     "sockets.bats: tcpsocks, nc -l, python3 -m http.server, redis-server"},
    {KindId::kFdSocketUdp, "fd.socket.udp", "UDP socket (AF_INET, AF_INET6)", S::kNeedsState,
     "bound and connected: receive queue with sources, corked data, multicast, options", "ck-sockdump",
     "sockets.bats: udp_cork.py (queued, UDP_CORK, MSG_MORE), socat receiving UDP"},
    {KindId::kFdSocketInetOther, "fd.socket.inet-other", "other IP socket (raw, ICMP, SCTP)", S::kRefused,
     "not supported", nullptr, kWalk},
    {KindId::kFdSocketNetlink, "fd.socket.netlink", "netlink socket", S::kRefused, "not supported", nullptr,
     "dump.bats: a netlink socket is refused by name"},
    {KindId::kFdSocketPacket, "fd.socket.packet", "packet socket (AF_PACKET)", S::kRefused, "not supported", nullptr,
     kWalk},
    {KindId::kFdSocketOther, "fd.socket.other", "socket of any other family (AF_VSOCK, AF_ALG, ...)", S::kRefused,
     "not supported", nullptr, kWalk},
    {KindId::kFdPidfd, "fd.pidfd", "pidfd", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdIoUring, "fd.io_uring", "io_uring instance", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdFanotify, "fd.fanotify", "fanotify group", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdUserfaultfd, "fd.userfaultfd", "userfaultfd", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdBpf, "fd.bpf", "bpf map, program or link", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdPerfEvent, "fd.perf_event", "perf event", S::kRefused, "not supported", nullptr, kWalk},
    {KindId::kFdAnonOther, "fd.anon-other", "any other anonymous inode (fsopen contexts, ...)", S::kRefused,
     "not supported", nullptr, kWalk},
    {KindId::kFdOther, "fd.other", "anything else (block devices, ...)", S::kRefused, "not supported", nullptr,
     kWalk},
    {KindId::kFdLock, "fd.lock", "file locks and leases (flock, POSIX, OFD, F_SETLEASE)", S::kSupported,
     "kind, type, range and owner; taken again by the restorer (OFD), the taker (flock) or the task itself, last "
     "(POSIX, leases); a lock held outside the tree too, or a lease being broken, is refused",
     nullptr, "locks.bats: sqlite3 inside BEGIN IMMEDIATE, flock(1)"},
    // ---- mappings
    {KindId::kVmaAnon, "vma.anon", "private anonymous memory", S::kSupported,
     "present pages carried, zero pages as holes", nullptr,
     "restore.bats: counter with 64 MiB; coverage.bats: holes and split/merged VMAs"},
    {KindId::kVmaHeap, "vma.heap", "[heap]", S::kSupported, "with brk", nullptr, "programs.bats: python3 with a large heap"},
    {KindId::kVmaStack, "vma.stack", "[stack] and other grows-down mappings", S::kSupported, "", nullptr,
     "restore.bats: counter with 64 MiB"},
    {KindId::kVmaSharedAnon, "vma.shared-anon", "shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, /dev/zero)",
     S::kSupported, "one object however many processes map it", nullptr,
     "restore.bats: a 3-process tree with a pipe in flight and a shared anonymous region"},
    {KindId::kVmaFilePrivate, "vma.file.private", "private file mapping (program text, libraries)", S::kSupported,
     "remapped from the file, which must be unchanged; written (COW) pages carried", nullptr,
     "restore.bats: a mapped file that changed since the dump is refused"},
    {KindId::kVmaFileShared, "vma.file.shared", "shared file mapping", S::kSupported,
     "remapped from the file, whose pages are the file's", nullptr, kWalk},
    {KindId::kVmaFileDeleted, "vma.file.deleted", "mapping of a deleted file (/dev/shm semaphores, upgraded binaries)",
     S::kSupported, "the inode made again from the contents its description carries, mapped shared or private (the "
     "exe link too)", nullptr, "deleted.bats: python3 multiprocessing; a deleted binary and library"},
    {KindId::kVmaVdso, "vma.vdso", "[vdso], [vvar], [vvar_vclock]", S::kSupported,
     "moved together to their dumped place", nullptr, "restore.bats: signal handlers ... and the vDSO clock"},
    {KindId::kVmaVsyscall, "vma.vsyscall", "[vsyscall]", S::kSupported, "the kernel's, left as it is", nullptr,
     kWalk},
    {KindId::kVmaSysvShm, "vma.sysv-shm", "System V shared memory (shmat)", S::kRefused,
     "System V shared memory is not supported", nullptr, kWalk},
    {KindId::kVmaMemfd, "vma.memfd", "mapping of a memfd", S::kSupported,
     "maps the memfd made again, one inode for every mapping and fd of it; private COW pages carried over it",
     nullptr, "deleted.bats, coverage.bats: private COW pages over a memfd"},
    {KindId::kVmaHugetlb, "vma.hugetlb", "hugetlb mapping (MAP_HUGETLB, hugetlbfs)", S::kRefused,
     "hugetlb mappings are not supported", nullptr, kWalk},
    {KindId::kVmaAio, "vma.aio", "AIO ring (io_setup)", S::kRefused, "AIO rings are not supported", nullptr, kWalk},
    {KindId::kVmaOther, "vma.other", "a mapping of a kind this ck does not know (from a newer writer)", S::kRefused,
     "not supported", nullptr, "kinds.bats: ck-store put refuses what ck-restore would refuse"},
    // ---- tasks
    {KindId::kTaskThreads, "task.threads", "threads with their registers, XSAVE, signals, rseq, robust lists",
     S::kSupported, "", nullptr, "restore.bats: 4 threads with their own TLS"},
    {KindId::kTaskZombie, "task.zombie", "child not waited for yet", S::kSupported, "comes back with its exit status",
     nullptr, "restore.bats: zombies"},
    {KindId::kTaskLeaderExited, "task.leader-exited", "process whose main thread exited (pthread_exit) while others run",
     S::kRefused, "its main thread has exited (pthread_exit) while other threads run: not supported", nullptr,
     "dump.bats: a process whose main thread called pthread_exit"},
    {KindId::kTaskSeccomp, "task.seccomp", "task under a seccomp filter or strict mode", S::kRefused,
     "its filter cannot be read back: not supported", nullptr, "restore.bats: a task under seccomp is refused"},
    {KindId::kTaskTraced, "task.traced", "task traced by a debugger or strace", S::kRefused,
     "a traced task cannot be seized", nullptr, "dump.bats: a task under another tracer is refused"},
    {KindId::kTaskCgroupV2, "task.cgroup.v2", "cgroup v2 membership", S::kSupported,
     "ck-cgdump records the subtree; ck-restore puts every task back", nullptr,
     "cgroup.bats; predump.bats: a task in a v2 cgroup comes back in it"},
    {KindId::kTaskCgroupV1, "task.cgroup.v1", "cgroup v1 memberships (hybrid hosts)", S::kSupported,
     "recorded, not restored: ck-restore warns of every difference from its own (refuses with --cgroup-v1 refuse)",
     nullptr, "cgroup_v1.bats"},
    {KindId::kTaskStopped, "task.stopped", "process stopped by SIGSTOP or job control (^Z)", S::kSupported,
     "comes back stopped, with its pending signals; a stopped job of the restoring shell with --shell-job", nullptr,
     "taskstate.bats: vim stopped with ^Z"},
    {KindId::kTaskPdeathsig, "task.pdeathsig", "parent-death signal (PR_SET_PDEATHSIG)", S::kSupported,
     "set once the task has the parent it keeps (under ck-restore -d too)", nullptr,
     "taskstate.bats: setpriv --pdeathsig"},
    {KindId::kTaskCwdDeleted, "task.cwd.deleted", "cwd or root directory that was removed", S::kSupported,
     "made again for the restore, entered, and removed again", nullptr, "deleted.bats"},
    {KindId::kTaskSessionLeader, "task.session-leader", "session leader with a controlling terminal (an interactive shell)",
     S::kRefused, "a restore could give it a terminal only by taking the caller's: not supported", nullptr,
     "taskstate.bats: an interactive shell is refused"},
};
static_assert(sizeof kKinds / sizeof kKinds[0] == static_cast<size_t>(KindId::kCount), "a kind without an entry");

bool ends_with(const std::string& s, const char* t) {
  size_t n = std::strlen(t);
  return s.size() >= n && s.compare(s.size() - n, n, t) == 0;
}
bool starts_with(const std::string& s, const char* t) { return s.compare(0, std::strlen(t), t) == 0; }

bool has_vmflag(const pb::Vma& v, const char* flag) {
  return (" " + v.vmflags() + " ").find(std::string(" ") + flag + " ") != std::string::npos;
}

}  // namespace

const Kind* kinds_begin() { return kKinds; }
const Kind* kinds_end() { return kKinds + sizeof kKinds / sizeof kKinds[0]; }

const Kind& kind(KindId id) {
  const Kind& k = kKinds[static_cast<size_t>(id)];
  if (k.id != id) fail(strf("internal: kinds table out of order at %s", k.name));
  return k;
}

const Kind* kind_named(const std::string& name) {
  for (const Kind* k = kinds_begin(); k != kinds_end(); ++k)
    if (name == k->name) return k;
  return nullptr;
}

const char* support_name(Support s) {
  switch (s) {
    case S::kSupported: return "supported";
    case S::kRefused: return "refused";
    case S::kNeedsState: return "needs-state";
    case S::kExternal: return "external";
  }
  return "?";
}

KindId kind_of(const pb::FileDesc& d) {
  switch (d.kind()) {
    case pb::FILE_REG: return d.deleted() ? KindId::kFdFileDeleted : KindId::kFdFile;
    case pb::FILE_DIR: return d.deleted() ? KindId::kFdDirDeleted : KindId::kFdDir;
    case pb::FILE_PIPE: return d.external().empty() ? KindId::kFdPipe : KindId::kFdPipeExternal;
    case pb::FILE_FIFO: return d.external().empty() ? KindId::kFdFifo : KindId::kFdFifoExternal;
    case pb::FILE_CHR:
      // /dev/ptmx (5:2) and the legacy BSD masters (majors 2, 128-135).
      if (d.rdev() == makedev(5, 2) || major(d.rdev()) == 2 || (major(d.rdev()) >= 128 && major(d.rdev()) <= 135))
        return KindId::kFdPtyMaster;
      if (d.deleted()) return KindId::kFdDeviceDeleted;
      if (d.tty()) return KindId::kFdTty;
      return major(d.rdev()) == 1 ? KindId::kFdDevice : KindId::kFdDeviceOther;
    case pb::FILE_EVENTFD: return KindId::kFdEventfd;
    case pb::FILE_EPOLL: return KindId::kFdEpoll;
    case pb::FILE_SIGNALFD: return KindId::kFdSignalfd;
    case pb::FILE_TIMERFD: return KindId::kFdTimerfd;
    case pb::FILE_INOTIFY: return KindId::kFdInotify;
    case pb::FILE_MEMFD: return KindId::kFdMemfd;
    case pb::FILE_PIDFD: return KindId::kFdPidfd;
    case pb::FILE_SOCKET: {
      const std::string& f = d.socket_family();
      if (f == "AF_UNIX") return KindId::kFdSocketUnix;
      if (f == "AF_NETLINK") return KindId::kFdSocketNetlink;
      if (f == "AF_PACKET") return KindId::kFdSocketPacket;
      if (f == "AF_INET" || f == "AF_INET6") {
        if (d.socket_type() == "SOCK_STREAM" && d.socket_protocol() == IPPROTO_TCP) return KindId::kFdSocketTcp;
        if (d.socket_type() == "SOCK_DGRAM" && d.socket_protocol() == IPPROTO_UDP) return KindId::kFdSocketUdp;
        return KindId::kFdSocketInetOther;
      }
      return KindId::kFdSocketOther;
    }
    default: break;
  }
  const std::string& p = d.path();
  if (p == "anon_inode:[pidfd]" || starts_with(p, "pidfd:")) return KindId::kFdPidfd;
  if (p == "anon_inode:[io_uring]") return KindId::kFdIoUring;
  if (p == "anon_inode:[fanotify]") return KindId::kFdFanotify;
  if (p == "anon_inode:[userfaultfd]") return KindId::kFdUserfaultfd;
  if (starts_with(p, "anon_inode:bpf") || starts_with(p, "anon_inode:[bpf")) return KindId::kFdBpf;
  if (p == "anon_inode:[perf_event]") return KindId::kFdPerfEvent;
  if (starts_with(p, "anon_inode:")) return KindId::kFdAnonOther;
  return KindId::kFdOther;
}

KindId kind_of(const pb::Vma& v) {
  // hugetlb first: a MAP_HUGETLB mapping looks anonymous in maps
  // ("/anon_hugepage (deleted)"), a hugetlbfs one like any file; only
  // smaps' "ht" flag tells.
  if (has_vmflag(v, "ht")) return KindId::kVmaHugetlb;
  if (v.path() == "/[aio] (deleted)") return KindId::kVmaAio;
  switch (v.kind()) {
    case pb::VMA_ANON: return KindId::kVmaAnon;
    case pb::VMA_HEAP: return KindId::kVmaHeap;
    case pb::VMA_STACK: return KindId::kVmaStack;
    case pb::VMA_SHARED_ANON: return KindId::kVmaSharedAnon;
    case pb::VMA_FILE_PRIVATE:
    case pb::VMA_FILE_SHARED:
      if (ends_with(v.path(), " (deleted)")) return KindId::kVmaFileDeleted;
      return v.kind() == pb::VMA_FILE_SHARED ? KindId::kVmaFileShared : KindId::kVmaFilePrivate;
    case pb::VMA_VDSO:
    case pb::VMA_VVAR:
    case pb::VMA_VVAR_VCLOCK: return KindId::kVmaVdso;
    case pb::VMA_VSYSCALL: return KindId::kVmaVsyscall;
    case pb::VMA_SYSV_SHM: return KindId::kVmaSysvShm;
    case pb::VMA_MEMFD: return KindId::kVmaMemfd;
    default: break;
  }
  return KindId::kVmaOther;  // a kind this ck does not know (a newer writer's)
}

std::string describe(const pb::FileDesc& d) {
  switch (d.kind()) {
    case pb::FILE_SOCKET: {
      std::string s = "socket " + d.socket_family();
      if (!d.socket_type().empty()) s += " " + d.socket_type();
      if (!d.socket_addr().empty()) s += " " + d.socket_addr();
      if (!d.socket_peer().empty()) s += " -> " + d.socket_peer();
      if (d.socket_listening()) s += " listening";
      return s;
    }
    case pb::FILE_PIPE: return strf("pipe:[%llu]", static_cast<unsigned long long>(d.pipe_id()));
    case pb::FILE_FIFO: return "FIFO '" + d.path() + "'";
    case pb::FILE_MEMFD: return "memfd '" + d.path() + "'";
    case pb::FILE_REG: return (d.deleted() ? "deleted file '" : "'") + d.path() + "'";
    case pb::FILE_DIR: return (d.deleted() ? "deleted directory '" : "directory '") + d.path() + "'";
    case pb::FILE_CHR: return (d.deleted() ? "deleted device '" : "'") + d.path() + "'";
    default: return d.path();
  }
}

std::string describe(const pb::Vma& v) {
  return strf("%lx-%lx '%s'", static_cast<unsigned long>(v.start()), static_cast<unsigned long>(v.end()),
              v.path().c_str());
}

void refuse_kind(KindId id, const std::string& subject) { refuse_kind(id, subject, kind(id).note); }

void refuse_kind(KindId id, const std::string& subject, const std::string& why) {
  fail(subject + ": " + why + " (" + kind(id).name + ")");
}

std::string kinds_markdown() {
  std::string out = "| kind | what | status | how, or why not | proved by |\n|---|---|---|---|---|\n";
  for (const Kind* k = kinds_begin(); k != kinds_end(); ++k) {
    std::string status = support_name(k->support);
    std::string note = k->note;
    if (k->support == S::kNeedsState) note += strf(" (written by %s; without it every sink refuses the dump)", k->stage);
    std::string test = k->test;
    if (test != kWalk) test = std::string(kWalk) + ", " + test;
    out += strf("| `%s` | %s | %s | %s | %s |\n", k->name, k->what, status.c_str(), note.c_str(), test.c_str());
  }
  return out;
}

std::string kinds_list() {
  std::string out;
  for (const Kind* k = kinds_begin(); k != kinds_end(); ++k) out += strf("%s %s\n", k->name, support_name(k->support));
  return out;
}

}  // namespace ck
