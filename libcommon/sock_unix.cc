// Dump side of unix sockets.  The state the socket calls do not show (peer,
// pending connections of a listener, queue length, shutdown, the bound
// file) comes from sock_diag (unix_diag, queried by inode in the socket's
// own network namespace).  Queued messages are read with MSG_PEEK from a
// duplicate of the target's socket, which needs two flags on the socket
// itself, both registered with the undo log first:
//  - SO_PEEK_OFF: without it every peek starts at the head of the queue,
//    so only the first datagram (or the bytes up to the first one carrying
//    fds) could be seen; with it each peek moves on;
//  - SO_PASSCRED: the sender's credentials are always in the skb, but the
//    kernel reports them (and, on a stream, stops a read where the writer
//    changes) only to a socket that asks.
// A peek of a message carrying SCM_RIGHTS installs new references to the
// files in flight in our fd table: that is how they are dumped.
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <map>

#include "error.h"
#include "log.h"
#include "proc.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

namespace ck {
namespace {

constexpr uint32_t kListen = 10, kEstablished = 1, kClose = 7;

struct UnixDiag {
  bool found = false;
  uint32_t type = 0, state = 0;
  std::string name;
  bool has_vfs = false;
  uint32_t vfs_ino = 0, vfs_dev = 0;
  uint32_t peer = 0;
  std::vector<uint32_t> icons;
  uint32_t rqueue = 0, wqueue = 0;
  uint32_t shutdown = 0;
};

UnixDiag unix_diag(int diag, uint32_t ino) {
  struct {
    struct nlmsghdr nlh;
    struct unix_diag_req r;
  } req;
  std::memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_ino = ino;
  req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
  req.r.udiag_cookie[0] = req.r.udiag_cookie[1] = ~0u;  // INET_DIAG_NOCOOKIE: any socket with that inode
  if (::send(diag, &req, sizeof req, 0) != sizeof req) throw_errno("unable to ask sock_diag");
  // A listener's pending connections are listed in full: size for many.
  std::vector<char> buf(1 << 20);
  UnixDiag out;
  for (;;) {
    ssize_t n = ::recv(diag, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("unable to read sock_diag's answer");
    for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(h));
        if (e->error == -ENOENT) return out;
        if (e->error) throw_errno("sock_diag refused", -e->error);
        return out;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      auto* m = static_cast<struct unix_diag_msg*>(NLMSG_DATA(h));
      out.found = true;
      out.type = m->udiag_type;
      out.state = m->udiag_state;
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (auto* a = reinterpret_cast<struct rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        const char* p = static_cast<const char*>(RTA_DATA(a));
        size_t plen = RTA_PAYLOAD(a);
        switch (a->rta_type) {
          case UNIX_DIAG_NAME: out.name.assign(p, plen); break;
          case UNIX_DIAG_VFS:
            if (plen >= sizeof(struct unix_diag_vfs)) {
              struct unix_diag_vfs v;
              std::memcpy(&v, p, sizeof v);
              out.has_vfs = true, out.vfs_ino = v.udiag_vfs_ino, out.vfs_dev = v.udiag_vfs_dev;
            }
            break;
          case UNIX_DIAG_PEER:
            if (plen >= 4) std::memcpy(&out.peer, p, 4);
            break;
          case UNIX_DIAG_ICONS:
            for (size_t i = 0; i + 4 <= plen; i += 4) {
              uint32_t x;
              std::memcpy(&x, p + i, 4);
              out.icons.push_back(x);
            }
            break;
          case UNIX_DIAG_RQLEN:
            if (plen >= sizeof(struct unix_diag_rqlen)) {
              struct unix_diag_rqlen q;
              std::memcpy(&q, p, sizeof q);
              out.rqueue = q.udiag_rqueue, out.wqueue = q.udiag_wqueue;
            }
            break;
          case UNIX_DIAG_SHUTDOWN:
            if (plen >= 1) out.shutdown = static_cast<uint8_t>(p[0]);
            break;
        }
      }
      return out;
    }
  }
}

std::string printable(const std::string& name) {
  if (name.empty()) return "(unnamed)";
  if (name[0] == '\0') return "@" + name.substr(1);
  return name;
}

// Per dump: what check_unix learnt, for dump_unix.
std::map<SockItem*, UnixDiag>& diag_of() {
  static std::map<SockItem*, UnixDiag> m;
  return m;
}

// Reads the receive queue of item without consuming it.
void read_queue(SockItem& it, SockDumpCtx& ctx, const UnixDiag& d) {
  int fd = it.sk.get();
  pb::UnixSock* u = it.rec.mutable_unix_sk();
  int peek0 = sockopt_int(fd, SOL_SOCKET, SO_PEEK_OFF, "SO_PEEK_OFF");
  int cred0 = sockopt_int(fd, SOL_SOCKET, SO_PASSCRED, "SO_PASSCRED");
  std::vector<pb::Undo> recs(2);
  recs[0].set_kind(pb::Undo::UNDO_SOCKOPT), recs[0].set_level(SOL_SOCKET), recs[0].set_name(SO_PEEK_OFF), recs[0].set_value(peek0);
  recs[1].set_kind(pb::Undo::UNDO_SOCKOPT), recs[1].set_level(SOL_SOCKET), recs[1].set_name(SO_PASSCRED), recs[1].set_value(cred0);
  std::vector<uint64_t> ids = ctx.undo.add(recs, {{fd, -1}, {fd, -1}});
  set_sockopt_int(fd, SOL_SOCKET, SO_PASSCRED, 1, it.who, "SO_PASSCRED");
  set_sockopt_int(fd, SOL_SOCKET, SO_PEEK_OFF, 0, it.who, "SO_PEEK_OFF");
  fault_point("sockdump-peeking");

  const bool stream = it.rec.type() == SOCK_STREAM;
  // A datagram is at most the sender's buffer; a stream read stops at any
  // size.  sndbuf of a unix socket tops out at wmem_max (a few MiB).
  std::vector<char> buf(std::max<size_t>(d.rqueue + 1, 4u << 20));
  alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(struct ucred)) + 64];
  uint64_t total = 0;
  bool last_empty = false;
  for (int guard = 0; guard < 1 << 20; ++guard) {
    struct sockaddr_un from;
    struct iovec iov = {buf.data(), buf.size()};
    struct msghdr mh;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof ctl;
    if (!stream) {
      mh.msg_name = &from;
      mh.msg_namelen = sizeof from;
    }
    ssize_t n = ::recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) throw_errno(strf("unable to dump %s: unable to read its queue", it.who.c_str()));
    if (mh.msg_flags & MSG_CTRUNC) fail(strf("unable to dump %s: more fds in flight in one message than ck can take", it.who.c_str()));
    if (mh.msg_flags & MSG_TRUNC) fail(strf("unable to dump %s: a queued message is larger than %zu bytes", it.who.c_str(), buf.size()));
    if (n == 0 && stream) break;  // the peer shut down and everything is read
    pb::UnixMsg* m = u->add_queue();
    m->set_data(buf.data(), static_cast<size_t>(n));
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        std::vector<ScopedFd> got;
        for (size_t i = 0; i < k; ++i) {
          int f;
          std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
          got.emplace_back(f);
        }
        for (auto& g : got) m->add_fds(ctx.in_flight(g.get(), it.who));
      } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
        struct ucred uc;
        std::memcpy(&uc, CMSG_DATA(c), sizeof uc);
        // A sender that passed none (neither end asked for them when it
        // sent) shows pid 0 and the overflow ids: nothing to keep.
        if (uc.pid == 0) continue;
        m->mutable_cred()->set_pid(static_cast<uint32_t>(uc.pid));
        m->mutable_cred()->set_uid(uc.uid);
        m->mutable_cred()->set_gid(uc.gid);
      }
    }
    if (!stream && mh.msg_namelen > offsetof(struct sockaddr_un, sun_path))
      m->set_from(std::string(from.sun_path, mh.msg_namelen - offsetof(struct sockaddr_un, sun_path)));
    total += static_cast<uint64_t>(n);
    // An empty datagram does not move the peek offset: the next peek
    // shows it again.  Two empty ones in a row are taken as one.
    if (!stream && n == 0) {
      if (last_empty) {
        u->mutable_queue()->RemoveLast();
        break;
      }
      last_empty = true;
    } else {
      last_empty = false;
    }
    if (stream && total >= d.rqueue) break;
  }
  set_sockopt_int(fd, SOL_SOCKET, SO_PEEK_OFF, peek0, it.who, "SO_PEEK_OFF");
  set_sockopt_int(fd, SOL_SOCKET, SO_PASSCRED, cred0, it.who, "SO_PASSCRED");
  ctx.undo.drop(ids[1]);
  ctx.undo.drop(ids[0]);
  LOG_DEBUG("%s: %d queued messages, %llu bytes", it.who.c_str(), u->queue_size(), static_cast<unsigned long long>(total));
}

}  // namespace

void check_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  auto& dm = diag_of();
  std::set<uint64_t> reachable = ctx.tree_inodes;
  std::set<uint64_t> waiting;  // clients whose connection a listener has not accepted
  for (SockItem* it : items) {
    int diag = sock_diag_fd(it->sk.get());
    UnixDiag d = unix_diag(diag, static_cast<uint32_t>(it->ino));
    if (!d.found) fail(strf("unable to dump %s: sock_diag does not know it", it->who.c_str()));
    if (d.state != kListen && d.state != kEstablished && d.state != kClose)
      fail(strf("unable to dump %s: unix socket state %u is not supported", it->who.c_str(), d.state));
    // A listener's icons are its pending connections' client ends (the
    // embryo itself has no inode until it is accepted).
    for (uint32_t i : d.icons) waiting.insert(i);
    dm[it] = d;
  }
  for (SockItem* it : items) {
    const UnixDiag& d = dm[it];
    int diag = sock_diag_fd(it->sk.get());
    pb::UnixSock* u = it->rec.mutable_unix_sk();
    u->set_ino(it->ino);
    u->set_state(d.state);
    u->set_name(d.name);
    u->set_peer_ino(d.peer);
    u->set_shutdown(d.shutdown);
    // A connected stream whose peer was closed keeps a pointer to it, but
    // a dead socket has no inode: diag says 0.
    if (d.state == kEstablished && !d.peer && it->rec.type() != SOCK_DGRAM && !waiting.count(it->ino)) u->set_peer_gone(true);
    if (waiting.count(it->ino)) {
      // What it wrote sits in the embryo's queue, which cannot be read
      // without accepting it (for good).  SIOCOUTQ tells whether there is any.
      int outq = 0;
      if (::ioctl(it->sk.get(), SIOCOUTQ, &outq) == 0 && outq > 0)
        fail(strf("unable to dump %s: its connection waits to be accepted with data queued: not supported", it->who.c_str()));
    }
    if (d.state == kListen) {
      u->set_backlog(d.wqueue);
      for (uint32_t i : d.icons) {
        // A pending connection whose client was closed (0) or is outside
        // the tree may have written data nobody can read back.
        if (!i || !ctx.tree_inodes.count(i))
          fail(strf("unable to dump %s: a connection waiting to be accepted comes from outside the tree: not supported",
                    it->who.c_str()));
        u->add_icons(i);
      }
    }
    if (!d.name.empty() && d.name[0] != '\0') {
      // A path: is it still this socket's file?  (Relative names are as
      // bound, against the cwd of that time: looked up from the root.)
      std::string path = strf("/proc/%d/root", it->pid ? it->pid : getpid()) + (d.name[0] == '/' ? "" : "/") + d.name;
      struct stat st;
      bool same = d.has_vfs && ::stat(path.c_str(), &st) == 0 && st.st_ino == d.vfs_ino &&
                  st.st_dev == makedev(d.vfs_dev >> 20, d.vfs_dev & 0xfffff);
      u->set_name_deleted(!same);
      if (same) {
        u->set_name_mode(st.st_mode & 07777);
        u->set_name_uid(st.st_uid);
        u->set_name_gid(st.st_gid);
      }
    }
    if (d.peer && !reachable.count(d.peer)) {
      UnixDiag p = unix_diag(diag, d.peer);
      if (!p.found) {
        // The peer was closed: a stream keeps pointing at it, with the
        // data it wrote and its EOF queued.  Restored as a pair whose
        // other end is closed once the queue is refilled.
        u->set_peer_ino(0);
        u->set_peer_gone(true);
        continue;
      }
      u->set_peer_name(p.name);
      bool keep = ctx.external_all || ctx.external_ino.count(d.peer) || ctx.external_name.count(printable(p.name));
      if (!keep)
        fail(strf("unable to dump %s: its peer socket:[%u] ('%s') is outside the tree (--external unix:%u keeps it)",
                  it->who.c_str(), d.peer, printable(p.name).c_str(), d.peer));
      if (p.name.empty())
        fail(strf("unable to dump %s: its peer socket:[%u] outside the tree has no name to connect to again", it->who.c_str(), d.peer));
      if (it->rec.type() != SOCK_DGRAM && d.rqueue > 0)
        fail(strf("unable to dump %s: its peer socket:[%u] is outside the tree and %u bytes from it are queued", it->who.c_str(),
                  d.peer, d.rqueue));
      u->set_external(true);
      u->set_external_id(strf("unix:%u", d.peer));
    }
  }
}

void dump_unix(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  auto& dm = diag_of();
  for (SockItem* it : items) {
    const UnixDiag& d = dm[it];
    // (A datagram socket's rqueue is the size of its first datagram: an
    // empty one at the head hides the queue behind it; see ck-sockdump(1).)
    if (d.state != kListen && d.rqueue > 0) read_queue(*it, ctx, d);
  }
  dm.clear();
}

}  // namespace ck
