// Restore side of sockets (see sock_restore.h).  Unix sockets are rebuilt
// from their relations, since a unix socket has no address to reconnect
// to in general:
//  - a connected pair whose ends were both made by socketpair() (or bound
//    after it) comes back as a socketpair, each end bound to its name;
//  - an end accepted from a listener carries the listener's name: it comes
//    back by connecting its peer to the restored listener and accepting;
//  - connections a listener had not accepted yet come back in their order
//    by connecting their client ends (or a throwaway socket, for a client
//    that was closed) to it;
//  - queued messages are sent again by the socket that sent them (or, for
//    datagrams from elsewhere, a socket bound to the sender's name, else an
//    unbound one), with their fds in flight and their credentials, once
//    every process exists (SCM_CREDENTIALS must name a live pid).
// A name that was deleted is bound and unlinked again once everything
// that connects through it is connected.
#include "sock_restore.h"

#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "error.h"
#include "log.h"
#include "netlock.h"
#include "sock.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

namespace ck {

namespace {
constexpr uint32_t kListen = 10;
constexpr uint32_t kRcvShutdown = 1, kSendShutdown = 2;

socklen_t unix_addr(const std::string& name, struct sockaddr_un* a) {
  std::memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (name.size() > sizeof a->sun_path) bad_input("a unix socket name longer than sun_path");
  std::memcpy(a->sun_path, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + name.size());
}

std::string printable(const std::string& name) {
  if (name.empty()) return "(unnamed)";
  if (name[0] == '\0') return "@" + name.substr(1);
  return std::string(name.c_str());
}

bool is_path(const std::string& name) { return !name.empty() && name[0] != '\0'; }
}  // namespace

struct SockRestorer::Sock {
  pb::Socket rec;
  pb::FileDesc desc;
  std::string who;
  ScopedFd fd;     // ours, until finish()
  ScopedFd other;  // peer_gone: the other end of the pair, closed after fill
  bool created = false;
};

SockRestorer::SockRestorer() = default;

SockRestorer::~SockRestorer() {
  if (finished_) return;
  // Our own lock goes with the sockets it protected (closed in repair
  // mode: without a word to their peers); the dump's stays for a retry
  // unless asked.
  if (!own_lock_.empty()) {
    try {
      netlock_remove(-1, own_lock_);
    } catch (const std::exception& e) {
      LOG_ERROR("unable to lift the network lock '%s': %s", own_lock_.c_str(), e.what());
    }
  }
  if (!unlock_on_failure_) return;
  for (const auto& l : locks_) {
    try {
      netlock_remove(-1, l.table());
    } catch (const std::exception& e) {
      LOG_ERROR("unable to lift the network lock '%s': %s", l.table().c_str(), e.what());
    }
  }
}

void SockRestorer::add(const pb::Socket& s) {
  if (by_desc_.count(s.desc())) bad_input(strf("two socket states for file description %u", s.desc()));
  std::string why = sock_unrestorable(s);
  if (!why.empty())
    bad_input(strf("socket of description %u (%s): %s", s.desc(), sock_kind_name(s.family(), s.type(), s.protocol()).c_str(),
                   why.c_str()));
  auto k = std::make_unique<Sock>();
  k->rec = s;
  by_desc_[s.desc()] = k.get();
  socks_.push_back(std::move(k));
}

SockRestorer::Sock* SockRestorer::by_ino(uint64_t ino) {
  if (!ino) return nullptr;
  for (auto& s : socks_)
    if (s->rec.family() == AF_UNIX && s->rec.unix_sk().ino() == ino) return s.get();
  return nullptr;
}

SockRestorer::Sock* SockRestorer::by_name(const std::string& name, uint64_t not_ino) {
  if (name.empty()) return nullptr;
  for (auto& s : socks_)
    if (s->rec.family() == AF_UNIX && s->rec.unix_sk().name() == name && s->rec.unix_sk().ino() != not_ino) return s.get();
  return nullptr;
}

std::map<uint32_t, int> SockRestorer::open_all(const std::vector<pb::FileDesc>& descs, const std::function<int(uint32_t)>& fd_of,
                                               const std::function<std::string(uint32_t)>& who) {
  for (const auto& d : descs) {
    if (d.kind() == pb::FILE_SOCKET && !by_desc_.count(d.id()))
      bad_input(who(d.id()) + " is a socket and the image has no socket state (run ck-sockdump)");
    auto it = by_desc_.find(d.id());
    if (it == by_desc_.end()) continue;
    if (d.kind() != pb::FILE_SOCKET) bad_input(strf("socket state for %s, which is not a socket", who(d.id()).c_str()));
    Sock& s = *it->second;
    s.desc = d;
    s.who = strf("socket %s (%s)", who(d.id()).c_str(), sock_kind_name(s.rec.family(), s.rec.type(), s.rec.protocol()).c_str());
  }
  for (auto& s : socks_)
    if (s->who.empty()) bad_input(strf("socket state for file description %u, which the image lacks", s->rec.desc()));
  // Files in flight: our own reference, for SCM_RIGHTS once queues refill.
  for (auto& s : socks_)
    if (s->rec.family() == AF_UNIX)
      for (const auto& m : s->rec.unix_sk().queue())
        for (uint32_t id : m.fds()) {
          if (in_flight_.count(id) || by_desc_.count(id)) continue;
          int f = fd_of(id);
          if (f < 0) bad_input(strf("%s: a file in flight names file description %u, which the image lacks", s->who.c_str(), id));
          ScopedFd mine(::fcntl(f, F_DUPFD_CLOEXEC, 3));
          if (!mine.valid()) throw_errno("unable to keep a file in flight");
          in_flight_.emplace(id, std::move(mine));
        }
  open_unix();
  open_inet();
  std::map<uint32_t, int> out;
  for (auto& s : socks_) {
    if (!s->created) fail("internal: " + s->who + " was not created");
    uint32_t fl = s->desc.flags();
    int cur = ::fcntl(s->fd.get(), F_GETFL);
    if (cur >= 0 && (cur & O_NONBLOCK) != static_cast<int>(fl & O_NONBLOCK))
      ::fcntl(s->fd.get(), F_SETFL, (cur & ~O_NONBLOCK) | static_cast<int>(fl & O_NONBLOCK));
    int f = ::fcntl(s->fd.get(), F_DUPFD_CLOEXEC, 3);
    if (f < 0) throw_errno("unable to duplicate " + s->who);
    out[s->rec.desc()] = f;
  }
  LOG_INFO("%zu sockets created", socks_.size());
  return out;
}

void SockRestorer::open_unix() {
  auto make = [&](Sock& s) {
    int f = ::socket(AF_UNIX, s.rec.type() | SOCK_CLOEXEC, 0);
    if (f < 0) throw_errno("unable to create " + s.who);
    s.fd.reset(f);
    s.created = true;
  };
  auto bind_to = [&](Sock& s, const std::string& name) {
    if (name.empty()) return;
    struct sockaddr_un a;
    socklen_t len = unix_addr(name, &a);
    std::string path = std::string(name.c_str());
    if (is_path(name)) {
      // A socket file left by the dumped socket (or by the dump's kill)
      // takes the name: a stale socket node is removed, anything else is
      // refused by bind().
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    }
    if (::bind(s.fd.get(), reinterpret_cast<sockaddr*>(&a), len) < 0)
      throw_errno(strf("unable to bind %s to '%s'", s.who.c_str(), printable(name).c_str()));
    const pb::UnixSock& u = s.rec.unix_sk();
    if (is_path(name)) {
      if (u.name_deleted()) {
        unlink_after_.push_back(path);
      } else if (u.name_mode()) {
        if (::chmod(path.c_str(), u.name_mode()) < 0 || ::lchown(path.c_str(), u.name_uid(), u.name_gid()) < 0)
          LOG_WARN("unable to give '%s' its mode and owner: %s", path.c_str(), std::strerror(errno));
      }
    }
  };
  auto connect_to = [&](Sock& s, const std::string& name) {
    struct sockaddr_un a;
    socklen_t len = unix_addr(name, &a);
    if (::connect(s.fd.get(), reinterpret_cast<sockaddr*>(&a), len) < 0)
      throw_errno(strf("unable to connect %s to '%s'", s.who.c_str(), printable(name).c_str()));
  };
  // The name an accepted socket shows is its listener's: such an end is
  // not bound by itself.
  auto listener_named = [&](const std::string& name) -> Sock* {
    for (auto& s : socks_)
      if (s->rec.family() == AF_UNIX && s->rec.unix_sk().state() == kListen && s->rec.unix_sk().name() == name && !name.empty())
        return s.get();
    return nullptr;
  };
  std::vector<Sock*> un;
  for (auto& s : socks_)
    if (s->rec.family() == AF_UNIX) un.push_back(s.get());
  // 1. Listeners.
  for (Sock* s : un) {
    const pb::UnixSock& u = s->rec.unix_sk();
    if (u.state() != kListen) continue;
    make(*s);
    bind_to(*s, u.name());
    if (::listen(s->fd.get(), static_cast<int>(u.backlog())) < 0) throw_errno("unable to listen on " + s->who);
  }
  // The client ends of pending connections (a listener's icons), left for step 3.
  std::set<uint64_t> waiting;
  for (Sock* s : un)
    for (uint64_t i : s->rec.unix_sk().icons()) waiting.insert(i);
  // 2. Connected pairs and lone sockets.
  for (Sock* s : un) {
    if (s->created) continue;
    const pb::UnixSock& u = s->rec.unix_sk();
    if (waiting.count(u.ino())) continue;
    Sock* p = by_ino(u.peer_ino());
    bool mutual = p && p->rec.unix_sk().peer_ino() == u.ino() && !p->created;
    if (mutual) {
      Sock* acc = listener_named(u.name()) ? s : listener_named(p->rec.unix_sk().name()) ? p : nullptr;
      if (acc) {
        Sock* cli = acc == s ? p : s;
        Sock* lst = listener_named(acc->rec.unix_sk().name());
        make(*cli);
        bind_to(*cli, cli->rec.unix_sk().name());
        connect_to(*cli, lst->rec.unix_sk().name());
        int a = ::accept4(lst->fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (a < 0) throw_errno("unable to accept " + acc->who + " on " + lst->who);
        acc->fd.reset(a);
        acc->created = true;
      } else {
        int sv[2];
        if (::socketpair(AF_UNIX, s->rec.type() | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("unable to create a socket pair for " + s->who);
        s->fd.reset(sv[0]), p->fd.reset(sv[1]);
        s->created = p->created = true;
        bind_to(*s, u.name());
        bind_to(*p, p->rec.unix_sk().name());
      }
      continue;
    }
    // A peer that was closed (or, for an unnamed datagram socket, nothing
    // that could still address it): a pair whose other end refills the
    // queue and is then closed.
    bool lone_dgram = s->rec.type() == SOCK_DGRAM && u.name().empty() && !u.queue().empty() && !by_ino(u.peer_ino());
    if ((u.peer_gone() || lone_dgram) && u.state() != kListen) {
      int sv[2];
      if (::socketpair(AF_UNIX, s->rec.type() | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("unable to create a socket pair for " + s->who);
      s->fd.reset(sv[0]), s->other.reset(sv[1]);
      s->created = true;
      bind_to(*s, u.name());
      continue;
    }
    make(*s);
    if (!listener_named(u.name())) bind_to(*s, u.name());
  }
  // 3. Connections not yet accepted, in their listener's order.
  for (Sock* l : un) {
    const pb::UnixSock& lu = l->rec.unix_sk();
    if (lu.state() != kListen) continue;
    for (uint64_t e : lu.icons()) {
      Sock* cli = by_ino(e);
      if (!cli) bad_input(l->who + ": a pending connection whose client is not in the image");
      if (cli->created) bad_input(l->who + ": a pending connection whose client is connected elsewhere");
      make(*cli);
      if (!listener_named(cli->rec.unix_sk().name())) bind_to(*cli, cli->rec.unix_sk().name());
      connect_to(*cli, lu.name());
    }
  }
  // 4. Datagram sockets connected to a bound one, and peers outside.
  for (Sock* s : un) {
    const pb::UnixSock& u = s->rec.unix_sk();
    if (u.external()) {
      connect_to(*s, u.peer_name());
      continue;
    }
    if (s->rec.type() != SOCK_DGRAM || !u.peer_ino()) continue;
    Sock* p = by_ino(u.peer_ino());
    if (!p || p->rec.unix_sk().peer_ino() == u.ino()) continue;  // a pair: done
    if (p->rec.unix_sk().name().empty()) fail(strf("unable to connect %s: its peer has no name", s->who.c_str()));
    connect_to(*s, p->rec.unix_sk().name());
  }
  for (const auto& path : unlink_after_) ::unlink(path.c_str());
  unlink_after_.clear();
}

void SockRestorer::open_inet() {
  std::vector<Sock*> in;
  for (auto& s : socks_)
    if (s->rec.family() == AF_INET || s->rec.family() == AF_INET6) in.push_back(s.get());
  if (in.empty()) return;
  // The connections are rebuilt in repair mode under a lock of our own in
  // this namespace (the dump's may be in another one): until finish()
  // nothing of them goes out, not the ACK a rebuilt socket sends, nor a
  // reset from the kernel for a connection not rebuilt yet.
  NetLock lock(-1, NetLock::new_name(::getpid()));
  for (Sock* s : in) lock.add(s->rec);
  if (!lock.empty()) {
    own_lock_ = lock.table();
    lock.lock();
  }
  // Listeners first: a connection of the tree to one of them (or its
  // accepted end) binds the same port, which repair mode allows.
  for (int pass = 0; pass < 2; ++pass)
    for (Sock* s : in) {
      bool listener = s->rec.type() == SOCK_STREAM && s->rec.inet().tcp().state() == TCP_LISTEN;
      if (listener != (pass == 0)) continue;
      s->fd = s->rec.type() == SOCK_STREAM ? tcp_open(s->rec, s->who) : udp_open(s->rec, s->who);
      s->created = true;
    }
}

void SockRestorer::fill(const std::function<pid_t(pid_t)>& outer) {
  for (auto& s : socks_) {
    if (s->rec.family() == AF_UNIX) fill_unix(*s, outer);
    else if (s->rec.type() == SOCK_DGRAM) udp_fill(s->fd.get(), s->rec, s->who);
  }
  // Shutdowns after every queue is full (a peer shut down for writing
  // cannot be written to), options last (SO_PASSCRED would autobind a
  // socket that sends).
  for (auto& s : socks_) {
    const pb::UnixSock& u = s->rec.unix_sk();
    if (s->rec.family() == AF_UNIX && s->other.valid()) {
      s->other.reset();  // the peer that was closed: EOF after the queue
      continue;
    }
    uint32_t sh = s->rec.family() == AF_UNIX ? u.shutdown() : s->rec.inet().shutdown();
    int how = (sh & kRcvShutdown) && (sh & kSendShutdown) ? SHUT_RDWR : (sh & kSendShutdown) ? SHUT_WR : (sh & kRcvShutdown) ? SHUT_RD : -1;
    if (how >= 0 && s->rec.family() == AF_UNIX && ::shutdown(s->fd.get(), how) < 0 && errno != ENOTCONN)
      throw_errno("unable to shut down " + s->who);
  }
  for (auto& s : socks_) {
    if (s->rec.family() == AF_UNIX) restore_sock_opts(s->fd.get(), s->rec.opts(), s->who);  // inet: when made
    const pb::SockOpts& o = s->rec.opts();
    if (o.owner_pid()) {
      struct f_owner_ex own = {static_cast<__pid_type>(o.owner_type()), outer(static_cast<pid_t>(o.owner_pid()))};
      if (::fcntl(s->fd.get(), F_SETOWN_EX, &own) < 0) throw_errno("unable to set the owner of " + s->who);
    }
    if (s->desc.flags() & O_ASYNC) {
      int cur = ::fcntl(s->fd.get(), F_GETFL);
      if (cur < 0 || ::fcntl(s->fd.get(), F_SETFL, cur | O_ASYNC) < 0) throw_errno("unable to set O_ASYNC on " + s->who);
    }
  }
  in_flight_.clear();
}

void SockRestorer::fill_unix(Sock& r, const std::function<pid_t(pid_t)>& outer) {
  const pb::UnixSock& u = r.rec.unix_sk();
  if (u.queue().empty()) return;
  Sock* peer = by_ino(u.peer_ino());
  int peer_fd = r.other.valid() ? r.other.get() : peer && peer->rec.unix_sk().peer_ino() == u.ino() ? peer->fd.get() : -1;
  ScopedFd tmp;
  for (const auto& m : u.queue()) {
    // Who sends it: the peer of a connection; for a datagram, the socket
    // bound to the sender's name, else the peer, else a fresh unbound one.
    int from = -1;
    bool to_name = false;
    if (r.rec.type() == SOCK_DGRAM) {
      Sock* named = by_name(m.from(), u.ino());
      if (named && named->created) {
        from = named->fd.get();
        to_name = !(named->rec.unix_sk().peer_ino() == u.ino());
      } else if (peer_fd >= 0 && (m.from().empty() || u.name().empty())) {
        from = peer_fd;
      } else {
        if (!tmp.valid()) tmp.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (!tmp.valid()) throw_errno("unable to create a socket");
        from = tmp.get();
        to_name = true;
      }
      if (to_name && u.name().empty())
        fail(strf("unable to refill %s: a datagram from '%s' cannot reach it (it has no name)", r.who.c_str(), printable(m.from()).c_str()));
    } else {
      from = peer_fd;
      if (from < 0) fail(strf("unable to refill %s: its peer is not restored", r.who.c_str()));
    }
    struct iovec iov = {const_cast<char*>(m.data().data()), m.data().size()};
    struct msghdr mh;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    struct sockaddr_un to;
    if (to_name) {
      mh.msg_name = &to;
      mh.msg_namelen = unix_addr(u.name(), &to);
    }
    std::vector<char> ctl(CMSG_SPACE(sizeof(int) * static_cast<size_t>(m.fds_size())) + CMSG_SPACE(sizeof(struct ucred)));
    size_t clen = 0;
    if (m.fds_size() > 0) {
      if (m.fds_size() > 253) bad_input(r.who + ": more than 253 fds in flight in one message");
      auto* c = reinterpret_cast<struct cmsghdr*>(ctl.data());
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(m.fds_size()));
      for (int i = 0; i < m.fds_size(); ++i) {
        uint32_t id = m.fds(i);
        int f = -1;
        auto ifl = in_flight_.find(id);
        if (ifl != in_flight_.end()) f = ifl->second.get();
        else if (by_desc_.count(id)) f = by_desc_[id]->fd.get();
        if (f < 0) bad_input(strf("%s: file description %u in flight is missing", r.who.c_str(), id));
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &f, sizeof f);
      }
      clen += CMSG_SPACE(sizeof(int) * static_cast<size_t>(m.fds_size()));
    }
    if (m.has_cred()) {
      // The sender's pid as we see it; one that is not there any more
      // (the writer exited) cannot be named: ours is given instead.
      struct ucred uc = {outer(static_cast<pid_t>(m.cred().pid())), m.cred().uid(), m.cred().gid()};
      if (uc.pid <= 0 || ::kill(uc.pid, 0) < 0) uc.pid = ::getpid();
      auto* c = reinterpret_cast<struct cmsghdr*>(ctl.data() + clen);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_CREDENTIALS;
      c->cmsg_len = CMSG_LEN(sizeof uc);
      std::memcpy(CMSG_DATA(c), &uc, sizeof uc);
      clen += CMSG_SPACE(sizeof uc);
    }
    if (clen) {
      mh.msg_control = ctl.data();
      mh.msg_controllen = clen;
    }
    ssize_t n;
    while ((n = ::sendmsg(from, &mh, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (n < 0) throw_errno(strf("unable to refill the queue of %s (%zu bytes)", r.who.c_str(), m.data().size()));
    if (static_cast<size_t>(n) != m.data().size())
      fail(strf("unable to refill the queue of %s: %zd of %zu bytes went in", r.who.c_str(), n, m.data().size()));
  }
  LOG_DEBUG("%s: %d messages queued again", r.who.c_str(), u.queue_size());
}

void SockRestorer::finish() {
  // The locks first, then out of repair mode: the window probe each
  // connection sends then reaches its peer, which answers with where it
  // is (what it did not get is sent again).
  if (!own_lock_.empty()) netlock_remove(-1, own_lock_);
  own_lock_.clear();
  for (const auto& l : locks_) netlock_remove(-1, l.table());
  for (auto& s : socks_)
    if (s->rec.type() == SOCK_STREAM && (s->rec.family() == AF_INET || s->rec.family() == AF_INET6))
      tcp_finish(s->fd.get(), s->rec, s->who);
  socks_.clear();
  by_desc_.clear();
  finished_ = true;
}

}  // namespace ck
