# kinds_inject.py KIND BASE.json: the image BASE.json (ck-crit decode) with
# one record made of KIND (a kind of libcommon/kinds.h), as JSON on stdout;
# nothing for a kind that no record of a stream can carry.  Used by
# tests/bats/kinds.bats to show that a sink refuses what ck-restore would.
import json, sys
kind, base = sys.argv[1], sys.argv[2]
d = json.load(open(base))
F = dict
fds = {
  "fd.file": F(kind="FILE_REG", path="/dev/null"),
  "fd.file.deleted": F(kind="FILE_REG", path="/tmp/x", deleted=True),
  "fd.dir": F(kind="FILE_DIR", path="/"),
  "fd.dir.deleted": F(kind="FILE_DIR", path="/tmp/x", deleted=True),
  "fd.pipe": F(kind="FILE_PIPE", pipe_id="7"),
  "fd.pipe.external": F(kind="FILE_PIPE", pipe_id="7", external="pipe:[7]"),
  "fd.fifo": F(kind="FILE_FIFO", path="/tmp/x"),
  "fd.fifo.external": F(kind="FILE_FIFO", path="/tmp/x", external="fifo:/tmp/x"),
  "fd.device": F(kind="FILE_CHR", path="/dev/null", rdev=259),
  "fd.device.deleted": F(kind="FILE_CHR", path="/tmp/null", rdev=259, deleted=True),
  "fd.device.other": F(kind="FILE_CHR", path="/dev/fuse", rdev=10 * 256 + 229),
  "fd.tty": F(kind="FILE_CHR", path="/dev/pts/5", rdev=136 * 256 + 5, tty=True),
  "fd.pty-master": F(kind="FILE_CHR", path="/dev/pts/ptmx", rdev=5 * 256 + 2),
  "fd.eventfd": F(kind="FILE_EVENTFD", path="anon_inode:[eventfd]"),
  "fd.epoll": F(kind="FILE_EPOLL", path="anon_inode:[eventpoll]"),
  "fd.signalfd": F(kind="FILE_SIGNALFD", path="anon_inode:[signalfd]"),
  "fd.timerfd": F(kind="FILE_TIMERFD", path="anon_inode:[timerfd]"),
  "fd.inotify": F(kind="FILE_INOTIFY", path="anon_inode:inotify"),
  "fd.memfd": F(kind="FILE_MEMFD", path="x", deleted=True),
  "fd.socket.unix": F(kind="FILE_SOCKET", socket_family="AF_UNIX", socket_type="SOCK_STREAM"),
  "fd.socket.tcp": F(kind="FILE_SOCKET", socket_family="AF_INET", socket_type="SOCK_STREAM", socket_protocol=6,
                     socket_addr="0.0.0.0:8000", socket_listening=True),
  "fd.socket.udp": F(kind="FILE_SOCKET", socket_family="AF_INET6", socket_type="SOCK_DGRAM", socket_protocol=17),
  "fd.socket.inet-other": F(kind="FILE_SOCKET", socket_family="AF_INET", socket_type="SOCK_RAW", socket_protocol=1),
  "fd.socket.netlink": F(kind="FILE_SOCKET", socket_family="AF_NETLINK", socket_type="SOCK_RAW"),
  "fd.socket.packet": F(kind="FILE_SOCKET", socket_family="AF_PACKET", socket_type="SOCK_RAW"),
  "fd.socket.other": F(kind="FILE_SOCKET", socket_family="AF_VSOCK", socket_type="SOCK_STREAM"),
  "fd.pidfd": F(kind="FILE_PIDFD", path="anon_inode:[pidfd]"),
  "fd.io_uring": F(kind="FILE_OTHER", path="anon_inode:[io_uring]"),
  "fd.fanotify": F(kind="FILE_OTHER", path="anon_inode:[fanotify]"),
  "fd.userfaultfd": F(kind="FILE_OTHER", path="anon_inode:[userfaultfd]"),
  "fd.bpf": F(kind="FILE_OTHER", path="anon_inode:bpf-map"),
  "fd.perf_event": F(kind="FILE_OTHER", path="anon_inode:[perf_event]"),
  "fd.anon-other": F(kind="FILE_OTHER", path="anon_inode:[fscontext]"),
  "fd.other": F(kind="FILE_OTHER", path="/dev/loop0"),
}
vmas = {
  "vma.anon": F(kind="VMA_ANON"),
  "vma.heap": F(kind="VMA_HEAP", path="[heap]"),
  "vma.stack": F(kind="VMA_STACK", path="[stack]"),
  "vma.shared-anon": F(kind="VMA_SHARED_ANON", flags=1, shmid="42"),
  "vma.file.private": F(kind="VMA_FILE_PRIVATE", path="/bin/sh"),
  "vma.file.shared": F(kind="VMA_FILE_SHARED", path="/bin/sh", flags=1),
  "vma.file.deleted": F(kind="VMA_FILE_SHARED", path="/dev/shm/sem.x (deleted)", flags=1),
  "vma.vdso": F(kind="VMA_VDSO", path="[vdso]"),
  "vma.vsyscall": F(kind="VMA_VSYSCALL", path="[vsyscall]"),
  "vma.sysv-shm": F(kind="VMA_SYSV_SHM", path="/SYSV00000000 (deleted)", flags=1),
  "vma.memfd": F(kind="VMA_MEMFD", path="/memfd:x (deleted)", flags=1),
  "vma.hugetlb": F(kind="VMA_ANON", path="/anon_hugepage (deleted)", vmflags="rd wr mr mw me ht"),
  "vma.aio": F(kind="VMA_FILE_SHARED", path="/[aio] (deleted)", flags=1),
  "vma.other": F(kind=99),
}
if kind in fds:
  # the first description (fd 0's) becomes one of KIND
  files = [f["frame"] for f in d["frames"] if "file" in f["frame"]]
  if not files:
    sys.exit("kinds_inject: the image has no file description")
  fr = files[0]
  keep = {k: fr["file"][k] for k in ("id", "owner_pid", "owner_fd", "flags") if k in fr["file"]}
  fr["file"] = dict(keep, **fds[kind])
elif kind in vmas:
  # a page at 4 GiB, between nothing and the rest
  mms = [f["frame"]["mm"] for f in d["frames"] if "mm" in f["frame"]]
  if not mms or any(int(v["start"]) < (1 << 32) + 4096 and int(v["end"]) > (1 << 32) for v in mms[0]["vmas"]):
    sys.exit("kinds_inject: no layout, or 4 GiB is taken")
  v = dict(dict(start=str(1 << 32), end=str((1 << 32) + 4096), prot=3, flags=2), **vmas[kind])
  if kind in ("vma.file.deleted", "vma.memfd"):
    # mapped from the inode a description carries (as ck-freeze records it):
    # the first description becomes that deleted file or memfd
    files = [f["frame"] for f in d["frames"] if "file" in f["frame"]]
    fr = files[0]
    keep = {k: fr["file"][k] for k in ("id", "owner_pid", "owner_fd", "flags") if k in fr["file"]}
    fr["file"] = dict(keep, kind="FILE_MEMFD" if kind == "vma.memfd" else "FILE_REG", deleted=True, size="4096",
                      path="x" if kind == "vma.memfd" else "/dev/shm/sem.x")
    v["file"] = fr["file"]["id"]
  mms[0]["vmas"] = sorted(mms[0]["vmas"] + [v], key=lambda x: int(x["start"]))
else:
  sys.exit(0)  # a task kind: no record in a stream (ck-freeze refuses it, or it is a field)
json.dump(d, sys.stdout)
