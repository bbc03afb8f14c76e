// ck-sockdump: the pipeline stage.  It forwards every frame, and before the
// first memory layout (or the trailer) it writes the state of every socket
// of the tree: a restorer then knows every socket before it creates the
// tasks.  Order of work, so that what cannot be dumped is refused before
// anything changes:
//   1. take a duplicate of every socket (pidfd_getfd) and check them all:
//      family, type, state, peers (no side effect);
//   2. dump them (side effects registered with the undo log first);
//   3. write the frames.
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <map>

#include "error.h"
#include "files.h"
#include "log.h"
#include "netlock.h"
#include "sock_impl.h"
#include "stream.h"
#include "tracer.h"

CK_LOG_MODULE("sock");

namespace ck {
namespace {

constexpr size_t kMaxSockets = 1 << 20;

// More fds than the default soft limit may be needed (one duplicate per
// socket of the tree, and ck-freeze keeps one per registered socket).
void raise_nofile() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

struct Dump {
  const SockdumpOptions& o;
  SockDumpCtx ctx;
  std::vector<pb::FileDesc> descs;  // every description of the stream (all kinds)
  std::map<uint32_t, size_t> desc_at;
  std::vector<std::unique_ptr<SockItem>> items;
  std::vector<pb::FileDesc> new_descs;  // in flight only: written by us
  std::vector<SockItem*> pending;       // in-flight sockets still to check and dump
  uint32_t next_id = 1;
  FileDumper files;  // describes non-socket files in flight
  std::map<uint32_t, uint32_t> files_id;  // FileDumper's id -> ours

  Dump(const SockdumpOptions& opts, UndoLog& undo) : o(opts), ctx(undo) {}

  std::string who_of(const SockItem& it) const {
    std::string kind = sock_kind_name(it.rec.family(), it.rec.type(), it.rec.protocol());
    if (it.pid) return strf("socket fd %d of pid %d (%s)", it.fd, it.pid, kind.c_str());
    return strf("socket:[%llu] in flight (%s)", static_cast<unsigned long long>(it.ino), kind.c_str());
  }

  SockItem* add_item(uint32_t desc, pid_t pid, int fd, ScopedFd sk) {
    auto it = std::make_unique<SockItem>();
    it->desc = desc, it->pid = pid, it->fd = fd;
    it->sk = std::move(sk);
    struct stat st;
    if (::fstat(it->sk.get(), &st) < 0) throw_errno("unable to stat a socket");
    it->ino = st.st_ino;
    it->rec.set_desc(desc);
    int dom = sockopt_int(it->sk.get(), SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN");
    int type = sockopt_int(it->sk.get(), SOL_SOCKET, SO_TYPE, "SO_TYPE");
    int proto = sockopt_int(it->sk.get(), SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL");
    it->rec.set_family(dom), it->rec.set_type(type), it->rec.set_protocol(proto);
    it->rec.set_netns(netns_cookie(it->sk.get()));
    it->who = who_of(*it);
    ctx.tree_inodes.insert(it->ino);
    items.push_back(std::move(it));
    return items.back().get();
  }

  uint32_t in_flight(int fd, const std::string& where) {
    struct stat st;
    if (::fstat(fd, &st) < 0) throw_errno("unable to stat a file in flight");
    for (const auto& d : descs) {
      if (d.dev() != st.st_dev || d.ino() != st.st_ino || !d.owner_pid()) continue;
      long same = ::syscall(SYS_kcmp, ::getpid(), d.owner_pid(), KCMP_FILE, fd, d.owner_fd());
      if (same == 0) return d.id();
    }
    for (const auto& d : new_descs)  // in flight twice (or a socket seen before)
      for (const auto& itp : items)
        if (itp->desc == d.id() && !itp->pid && ::syscall(SYS_kcmp, ::getpid(), ::getpid(), KCMP_FILE, fd, itp->sk.get()) == 0)
          return d.id();
    pb::FileDesc d;
    d.set_id(next_id++);
    if (S_ISSOCK(st.st_mode)) {
      d.set_kind(pb::FILE_SOCKET);
      d.set_path(strf("socket:[%llu]", static_cast<unsigned long long>(st.st_ino)));
      d.set_flags(static_cast<uint32_t>(::fcntl(fd, F_GETFL) & ~O_CLOEXEC));
      d.set_dev(st.st_dev), d.set_ino(st.st_ino), d.set_mode(st.st_mode);
      int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (dup < 0) throw_errno("unable to keep a socket in flight");
      SockItem* it = add_item(d.id(), 0, -1, ScopedFd(dup));
      d.set_socket_family(socket_family_name(it->rec.family()));
      std::string why = sock_refusal(it->rec.family(), it->rec.type(), it->rec.protocol());
      if (!why.empty()) fail(strf("unable to dump %s: %s, in flight in %s", it->who.c_str(), why.c_str(), where.c_str()));
      pending.push_back(it);
    } else {
      with_context("unable to dump a file in flight in " + where, [&] { files.dump_fd(::getpid(), fd); });
      uint32_t fid = files.fds().back().desc();
      auto known = files_id.find(fid);
      if (known != files_id.end()) {
        --next_id;
        return known->second;
      }
      d = files.descs().at(fid - 1);
      // Their contents travel as page runs after the description, which
      // only ck-freeze writes.
      if (d.kind() == pb::FILE_MEMFD || (d.kind() == pb::FILE_REG && d.deleted()))
        fail(strf("unable to dump a file in flight in %s (%s '%s'): deleted files and memfds in flight are not supported",
                  where.c_str(), d.kind() == pb::FILE_MEMFD ? "memfd" : "deleted file", d.path().c_str()));
      d.set_id(next_id - 1);
      files_id[fid] = d.id();
    }
    d.set_owner_pid(0);
    d.set_owner_fd(-1);
    new_descs.push_back(d);
    LOG_DEBUG("a file in flight in %s: description %u (%s)", where.c_str(), d.id(), d.path().c_str());
    return d.id();
  }

  void check(std::vector<SockItem*>& batch) {
    std::vector<SockItem*> un, in;
    for (SockItem* it : batch) {
      std::string why = sock_refusal(it->rec.family(), it->rec.type(), it->rec.protocol());
      if (!why.empty()) fail(strf("unable to dump %s: %s", it->who.c_str(), why.c_str()));
      with_context("unable to dump " + it->who, [&] { dump_sock_opts(it->sk.get(), it->rec.mutable_opts()); });
      (it->rec.family() == AF_UNIX ? un : in).push_back(it);
    }
    if (!un.empty()) check_unix(un, ctx);
    if (!in.empty()) check_inet(in, ctx);
    unix_batch = un, inet_batch = in;
  }
  std::vector<SockItem*> unix_batch, inet_batch;

  void emit(StreamWriter& w, SockItem& it) {
    pb::Frame f;
    f.set_pid(static_cast<uint32_t>(it.pid));
    f.mutable_socket()->Swap(&it.rec);
    w.frame(f);
    it.emitted = true;
  }

  void run(StreamWriter& w) {
    ctx.emit = [this, &w](SockItem& it) { emit(w, it); };
    std::vector<SockItem*> batch;
    for (const auto& d : descs) {
      if (d.kind() != pb::FILE_SOCKET) continue;
      pid_t pid = static_cast<pid_t>(d.owner_pid());
      if (pid <= 0 || d.owner_fd() < 0) bad_input(strf("socket description %u has no owner fd", d.id()));
      ScopedFd sk = take_fd(pid, d.owner_fd());
      if (!sk.valid()) throw_errno(strf("unable to dump socket fd %d of pid %d: unable to duplicate it", d.owner_fd(), pid));
      batch.push_back(add_item(d.id(), pid, d.owner_fd(), std::move(sk)));
      if (items.size() > kMaxSockets) bad_input("more sockets than ck takes");
    }
    // Everything is checked before anything is changed.
    check(batch);
    std::vector<SockItem*> un = unix_batch, in = inet_batch;
    if (!in.empty()) dump_inet(in, ctx);
    if (!un.empty()) dump_unix(un, ctx);
    // Sockets found in flight (and those found in their queues).
    while (!pending.empty()) {
      std::vector<SockItem*> more;
      more.swap(pending);
      check(more);
      un = unix_batch, in = inet_batch;
      if (!in.empty()) dump_inet(in, ctx);
      if (!un.empty()) dump_unix(un, ctx);
    }
    for (const auto& d : new_descs) {
      pb::Frame f;
      *f.mutable_file() = d;
      w.frame(f);
    }
    for (const auto& it : items)
      if (!it->emitted) emit(w, *it);
    for (const auto& l : ctx.locks) {
      pb::Frame f;
      *f.mutable_netlock() = l;
      w.frame(f);
    }
    LOG_INFO("%zu sockets dumped (%zu in flight only), %zu network locks", items.size(), new_descs.size(), ctx.locks.size());
  }
};

int unlock(const SockdumpOptions& o, int in_fd) {
  if (isatty(in_fd)) usage_error("--unlock reads a stream on stdin (ck-store get -D DIR | ck-sockdump --unlock)");
  StreamReader r(in_fd);
  r.header();
  std::vector<pb::NetLock> locks;
  pb::Frame f;
  while (r.next(&f))
    if (f.has_netlock()) locks.push_back(f.netlock());
  netlock_remove_all(locks, o.netns);
  LOG_INFO("%zu network locks lifted", locks.size());
  return 0;
}

}  // namespace

int run_sockdump(const SockdumpOptions& o, int in_fd, int out_fd) {
  if (o.unlock) return unlock(o, in_fd);
  if (!o.netns.empty()) usage_error("--netns goes with --unlock");
  if (isatty(in_fd)) usage_error("no stream on stdin (see ck-sockdump --help)");
  raise_nofile();
  // Tests: CK_SOCKDUMP_CONNECT_DELAY_MS=N reaches ck-freeze N ms late, once
  // ck-memread's parasite is sending pages into a pipe nobody reads yet
  // (sockets.bats: ck-freeze must take the connection all the same).
  if (const char* delay = std::getenv("CK_SOCKDUMP_CONNECT_DELAY_MS")) ::usleep(static_cast<useconds_t>(std::atoi(delay)) * 1000);
  UndoLog undo(TracerClient::from_env());
  Dump d(o, undo);
  for (const auto& e : o.external) {
    if (e == "unix") {
      d.ctx.external_all = true;
    } else if (e.rfind("unix:", 0) == 0 && e.size() > 5) {
      std::string v = e.substr(5);
      if (v.find_first_not_of("0123456789") == std::string::npos)
        d.ctx.external_ino.insert(std::strtoull(v.c_str(), nullptr, 10));
      else
        d.ctx.external_name.insert(v);
    } else {
      usage_error("--external '" + e + "': expected unix, unix:INODE or unix:NAME");
    }
  }
  d.ctx.in_flight = [&d](int fd, const std::string& where) { return d.in_flight(fd, where); };
  StreamReader r(in_fd);
  StreamWriter w(out_fd);
  pb::Header h = r.header();
  h.add_writers(std::string("ck-sockdump ") + kVersion);
  d.ctx.root = static_cast<pid_t>(h.root_pid());
  w.header(h);
  bool done = false;
  forward_frames(r, w, [&](const pb::Frame& f) {
    if (f.has_header()) return false;
    if (f.has_socket() || f.has_netlock()) bad_input("the stream already holds socket state (ck-sockdump twice?)");
    if (f.has_file()) {
      if (done) bad_input("a file description after the memory layout");
      d.desc_at[f.file().id()] = d.descs.size();
      d.descs.push_back(f.file());
      d.next_id = std::max(d.next_id, f.file().id() + 1);
    }
    if (f.has_mm() && !done) {
      d.run(w);
      done = true;
    }
    return true;
  });
  if (!done) d.run(w);
  undo.check_tracer();
  w.finish();
  return 0;
}

}  // namespace ck
