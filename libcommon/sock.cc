// What every socket room shares: the support policy, SOL_SOCKET options,
// the undo log and the undo actions.
#include "sock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <net/if.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <sched.h>
#include <sys/stat.h>

#include <csignal>
#include <exception>
#include <map>
#include <cstdlib>
#include <cstring>

#include "error.h"
#include "log.h"
#include "netlock.h"
#include "tracer.h"

CK_LOG_MODULE("sock");

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef UDP_CORK
#define UDP_CORK 1
#endif
#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef SOCK_SNDBUF_LOCK
#define SOCK_SNDBUF_LOCK 1
#define SOCK_RCVBUF_LOCK 2
#endif

namespace ck {

// ---- policy -------------------------------------------------------------------

namespace {

const char* type_name(int type) {
  switch (type) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    case SOCK_RAW: return "raw";
    case SOCK_RDM: return "rdm";
    case SOCK_PACKET: return "packet";
    default: return "of an unknown type";
  }
}

// The table of what ck dumps and restores.  Everything not listed is
// refused by name, before anything is changed.
struct Supported {
  int family, type, protocol;  // protocol -1: any
};
constexpr Supported kSupported[] = {
    {AF_UNIX, SOCK_STREAM, -1},         {AF_UNIX, SOCK_DGRAM, -1},           {AF_UNIX, SOCK_SEQPACKET, -1},
    {AF_INET, SOCK_STREAM, IPPROTO_TCP}, {AF_INET6, SOCK_STREAM, IPPROTO_TCP},
    {AF_INET, SOCK_DGRAM, IPPROTO_UDP},  {AF_INET6, SOCK_DGRAM, IPPROTO_UDP},
    {AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE}, {AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE},
    {AF_INET, SOCK_DGRAM, IPPROTO_ICMP}, {AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6},
};

const char* tcp_state_names[] = {"?",         "ESTABLISHED", "SYN-SENT",  "SYN-RECV",   "FIN-WAIT-1", "FIN-WAIT-2",
                                 "TIME-WAIT", "CLOSE",       "CLOSE-WAIT", "LAST-ACK", "LISTEN",     "CLOSING"};

}  // namespace

std::string sock_kind_name(int family, int type, int protocol) {
  if (family == AF_UNIX) return std::string("unix ") + type_name(type);
  if (family == AF_INET || family == AF_INET6) {
    const char* v = family == AF_INET ? "IPv4" : "IPv6";
    if (type == SOCK_STREAM && (protocol == IPPROTO_TCP || protocol == 0)) return strf("TCP/%s", v);
    if (type == SOCK_DGRAM && (protocol == IPPROTO_UDP || protocol == 0)) return strf("UDP/%s", v);
    if (type == SOCK_DGRAM && protocol == IPPROTO_UDPLITE) return strf("UDP-Lite/%s", v);
    if (type == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6)) return strf("ICMP/%s ping", v);
    if (type == SOCK_RAW) return strf("raw %s (protocol %d)", v, protocol);
    return strf("%s %s (protocol %d)", v, type_name(type), protocol);
  }
  std::string fam;
  switch (family) {
    case AF_NETLINK: fam = "AF_NETLINK"; break;
    case AF_PACKET: fam = "AF_PACKET"; break;
    case AF_VSOCK: fam = "AF_VSOCK"; break;
    case AF_ALG: fam = "AF_ALG"; break;
    case AF_KEY: fam = "AF_KEY"; break;
    case AF_BLUETOOTH: fam = "AF_BLUETOOTH"; break;
    case AF_XDP: fam = "AF_XDP"; break;
    default: fam = strf("AF_%d", family);
  }
  return fam + " " + type_name(type);
}

std::string sock_refusal(int family, int type, int protocol) {
  for (const auto& s : kSupported)
    if (s.family == family && s.type == type && (s.protocol < 0 || s.protocol == protocol)) return {};
  return "not supported";
}

std::string sock_unrestorable(const pb::Socket& s) {
  std::string why = sock_refusal(s.family(), s.type(), s.protocol());
  if (!why.empty()) return why;
  if (s.family() == AF_UNIX) {
    const pb::UnixSock& u = s.unix_sk();
    if (u.ino() == 0) return "no unix socket state";
    if (u.state() != 1 && u.state() != 7 && u.state() != 10) return strf("unix socket state %u", u.state());
    if (u.name().size() > sizeof(sockaddr_un::sun_path)) return "a unix name longer than sun_path";
    return {};
  }
  // AF_INET / AF_INET6
  const pb::InetSock& in = s.inet();
  auto addr_ok = [&](const pb::InetAddr& a) {
    return (a.family() == AF_INET && a.addr().size() == 4) || (a.family() == AF_INET6 && a.addr().size() == 16);
  };
  if (!addr_ok(in.local()) || in.local().family() != static_cast<uint32_t>(s.family())) return "no local address";
  if (in.connected() && (!addr_ok(in.remote()) || in.remote().family() != in.local().family())) return "no peer address";
  if (s.type() == SOCK_STREAM) {
    const pb::TcpState& t = in.tcp();
    switch (t.state()) {
      case TCP_LISTEN:
        if (t.waiting())
          return strf("listening, with %u connection%s not yet accepted (they cannot be put back into its queue)", t.waiting(),
                      t.waiting() == 1 ? "" : "s");
        return {};
      case TCP_CLOSE:
        if (t.dead()) return "a connection that was closed or reset, and the program has not seen its end yet";
        return {};
      case TCP_ESTABLISHED:
      case TCP_FIN_WAIT1:
      case TCP_FIN_WAIT2:
      case TCP_CLOSE_WAIT:
      case TCP_LAST_ACK:
      case TCP_CLOSING:
        if (!in.connected()) return "a connection without a peer address";
        if (t.unsent() > t.sendq().size()) return "more unsent bytes than the send queue holds";
        if (t.state() == TCP_FIN_WAIT2 && !t.sendq().empty()) return "FIN-WAIT-2 with unacknowledged data";
        return {};
      default:
        if (t.state() == TCP_SYN_SENT) return "TCP state SYN-SENT (a connect() in progress)";
        return strf("TCP state %s", tcp_state_name(t.state()));
    }
  }
  const pb::UdpState& u = in.udp();
  if (u.has_pending() && !in.connected() && !addr_ok(u.pending_to())) return "a corked datagram without a destination";
  if (u.has_pending() && s.protocol() != IPPROTO_UDP && s.protocol() != IPPROTO_UDPLITE) return "pending data on a ping socket";
  return {};
}

const char* tcp_state_name(uint32_t state) {
  return state < sizeof tcp_state_names / sizeof tcp_state_names[0] ? tcp_state_names[state] : "?";
}

void fault_point(const char* name) {
  const char* f = std::getenv("CK_FAULT");
  if (f && std::strcmp(f, name) == 0) {
    LOG_INFO("fault point '%s': killing myself", name);
    log::flush();
    ::kill(::getpid(), SIGKILL);
  }
}

std::string sock_summary(const pb::Socket& s) {
  std::string out = sock_kind_name(s.family(), s.type(), s.protocol());
  auto name = [](const std::string& n) {
    if (n.empty()) return std::string();
    return std::string(" '") + (n[0] == '\0' ? "@" + n.substr(1) : std::string(n.c_str())) + "'";
  };
  if (s.family() == AF_UNIX) {
    const pb::UnixSock& u = s.unix_sk();
    if (u.state() == 10) {
      out = "unix listening" + name(u.name()) + strf(" backlog %u, %d waiting", u.backlog(), u.icons_size());
      return out;
    }
    out += name(u.name());
    if (u.name_deleted()) out += " (deleted)";
    if (u.external()) out += " connected outside the tree to" + name(u.peer_name());
    else if (u.peer_ino()) out += strf(" connected to socket:[%llu]", static_cast<unsigned long long>(u.peer_ino()));
    else if (u.peer_gone()) out += " connected to a closed peer";
    if (u.queue_size()) {
      uint64_t bytes = 0;
      int fds = 0;
      for (const auto& m : u.queue()) bytes += m.data().size(), fds += m.fds_size();
      out += strf(", %d messages queued (%llu bytes", u.queue_size(), static_cast<unsigned long long>(bytes));
      out += fds ? strf(", %d fds in flight)", fds) : ")";
    }
    if (u.shutdown() & 2) out += ", shut down for writing";
    if (u.shutdown() & 1) out += ", shut down for reading";
    return out;
  }
  if (s.family() != AF_INET && s.family() != AF_INET6) return out;
  const pb::InetSock& in = s.inet();
  out += " " + inet_addr_str(in.local());
  if (in.connected()) out += " -> " + inet_addr_str(in.remote());
  if (s.type() == SOCK_STREAM) {
    const pb::TcpState& t = in.tcp();
    out += std::string(" ") + tcp_state_name(t.state());
    if (t.state() == TCP_LISTEN) out += strf(", backlog %u", t.backlog());
    if (!t.recvq().empty()) out += strf(", %zu bytes to read", t.recvq().size());
    if (!t.sendq().empty()) out += strf(", %zu bytes not acknowledged (%u unsent)", t.sendq().size(), t.unsent());
    return out;
  }
  const pb::UdpState& u = in.udp();
  if (u.queue_size()) {
    uint64_t bytes = 0;
    for (const auto& d : u.queue()) bytes += d.data().size();
    out += strf(", %d datagrams queued (%llu bytes)", u.queue_size(), static_cast<unsigned long long>(bytes));
  }
  if (u.cork()) out += ", corked";
  if (u.has_pending())
    out += strf(", %zu bytes pending%s", u.pending().size(), in.connected() ? "" : (" for " + inet_addr_str(u.pending_to())).c_str());
  for (const auto& g : u.groups()) {
    char buf[INET6_ADDRSTRLEN] = "?";
    inet_ntop(g.group().size() == 4 ? AF_INET : AF_INET6, g.group().data(), buf, sizeof buf);
    out += strf(", member of %s on %s", buf, g.ifname().empty() ? "?" : g.ifname().c_str());
  }
  if (in.shutdown() & 2) out += ", shut down for writing";
  if (in.shutdown() & 1) out += ", shut down for reading";
  return out;
}

// ---- helpers --------------------------------------------------------------------

int sockopt_int(int fd, int level, int name, const char* what) {
  int v = 0;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, level, name, &v, &len) < 0) throw_errno(strf("unable to read %s", what));
  return v;
}

void set_sockopt_int(int fd, int level, int name, int v, const std::string& who, const char* what) {
  if (::setsockopt(fd, level, name, &v, sizeof v) < 0) throw_errno(strf("unable to set %s of %s", what, who.c_str()));
}

void to_inet_addr(const struct sockaddr* sa, pb::InetAddr* a) {
  a->set_family(sa->sa_family);
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    a->set_addr(std::string(reinterpret_cast<const char*>(&in->sin_addr), 4));
    a->set_port(ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    a->set_addr(std::string(reinterpret_cast<const char*>(&in6->sin6_addr), 16));
    a->set_port(ntohs(in6->sin6_port));
    a->set_scope_id(in6->sin6_scope_id);
    a->set_flowinfo(in6->sin6_flowinfo);
  }
}

socklen_t from_inet_addr(const pb::InetAddr& a, struct sockaddr_storage* ss) {
  std::memset(ss, 0, sizeof *ss);
  if (a.family() == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(ss);
    in->sin_family = AF_INET;
    if (a.addr().size() != 4) bad_input("an IPv4 address that is not 4 bytes");
    std::memcpy(&in->sin_addr, a.addr().data(), 4);
    in->sin_port = htons(static_cast<uint16_t>(a.port()));
    return sizeof *in;
  }
  if (a.family() == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
    in6->sin6_family = AF_INET6;
    if (a.addr().size() != 16) bad_input("an IPv6 address that is not 16 bytes");
    std::memcpy(&in6->sin6_addr, a.addr().data(), 16);
    in6->sin6_port = htons(static_cast<uint16_t>(a.port()));
    in6->sin6_scope_id = a.scope_id();
    in6->sin6_flowinfo = a.flowinfo();
    return sizeof *in6;
  }
  bad_input(strf("an address of family %u", a.family()));
}

std::string inet_addr_str(const pb::InetAddr& a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (a.family() == AF_INET && a.addr().size() == 4) {
    inet_ntop(AF_INET, a.addr().data(), buf, sizeof buf);
    return strf("%s:%u", buf, a.port());
  }
  if (a.family() == AF_INET6 && a.addr().size() == 16) {
    inet_ntop(AF_INET6, a.addr().data(), buf, sizeof buf);
    return strf("[%s]:%u", buf, a.port());
  }
  return "?";
}

ScopedFd sock_netns(int fd) {
  int ns = ::ioctl(fd, SIOCGSKNS);
  if (ns < 0) throw_errno("unable to get the network namespace of a socket");
  return ScopedFd(ns);
}

uint64_t netns_cookie(int sock_fd) {
  uint64_t c = 0;
  socklen_t len = sizeof c;
  if (::getsockopt(sock_fd, SOL_SOCKET, SO_NETNS_COOKIE, &c, &len) < 0) return 0;
  return c;
}

void in_netns(int sock_fd, const std::function<void()>& f) {
  ScopedFd ns = sock_netns(sock_fd);
  ScopedFd self(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!self.valid()) throw_errno("unable to open our network namespace");
  struct stat a, b;
  if (::fstat(ns.get(), &a) == 0 && ::fstat(self.get(), &b) == 0 && a.st_ino == b.st_ino) {
    f();
    return;
  }
  if (::setns(ns.get(), CLONE_NEWNET) < 0) throw_errno("unable to enter the network namespace of a socket");
  std::exception_ptr err;
  try {
    f();
  } catch (...) {
    err = std::current_exception();
  }
  if (::setns(self.get(), CLONE_NEWNET) < 0) throw_errno("unable to go back to our network namespace");
  if (err) std::rethrow_exception(err);
}

int sock_diag_fd(int sock_fd) {
  static std::map<uint64_t, ScopedFd> by_ns;
  uint64_t cookie = netns_cookie(sock_fd);
  auto it = by_ns.find(cookie);
  if (it != by_ns.end()) return it->second.get();
  int d = -1;
  in_netns(sock_fd, [&] {
    d = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (d < 0) throw_errno("unable to open a sock_diag socket");
  });
  return by_ns.emplace(cookie, ScopedFd(d)).first->second.get();
}

// ---- SOL_SOCKET options -----------------------------------------------------------

// An option a socket of this family does not have (SO_PASSCRED on TCP
// since 6.x) reads as 0 and is not set back.
bool not_here(int err) { return err == EOPNOTSUPP || err == ENOPROTOOPT; }

void dump_sock_opts(int fd, pb::SockOpts* o) {
  auto get = [&](int name, const char* what) {
    int v = 0;
    socklen_t len = sizeof v;
    if (::getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0) return v;
    if (not_here(errno)) return 0;
    throw_errno(strf("unable to read %s", what));
  };
  o->set_sndbuf(static_cast<uint32_t>(get(SO_SNDBUF, "SO_SNDBUF")));
  o->set_rcvbuf(static_cast<uint32_t>(get(SO_RCVBUF, "SO_RCVBUF")));
  int locks = get(SO_BUF_LOCK, "SO_BUF_LOCK");
  o->set_sndbuf_locked(locks & SOCK_SNDBUF_LOCK);
  o->set_rcvbuf_locked(locks & SOCK_RCVBUF_LOCK);
  o->set_reuseaddr(get(SO_REUSEADDR, "SO_REUSEADDR"));
  o->set_reuseport(get(SO_REUSEPORT, "SO_REUSEPORT"));
  o->set_keepalive(get(SO_KEEPALIVE, "SO_KEEPALIVE"));
  o->set_broadcast(get(SO_BROADCAST, "SO_BROADCAST"));
  o->set_passcred(get(SO_PASSCRED, "SO_PASSCRED"));
  o->set_passsec(get(SO_PASSSEC, "SO_PASSSEC"));
  o->set_oobinline(get(SO_OOBINLINE, "SO_OOBINLINE"));
  o->set_dontroute(get(SO_DONTROUTE, "SO_DONTROUTE"));
  o->set_timestamp(get(SO_TIMESTAMP, "SO_TIMESTAMP"));
  o->set_mark(static_cast<uint32_t>(get(SO_MARK, "SO_MARK")));
  o->set_priority(get(SO_PRIORITY, "SO_PRIORITY"));
  o->set_rcvlowat(get(SO_RCVLOWAT, "SO_RCVLOWAT"));
  o->set_peek_off(get(SO_PEEK_OFF, "SO_PEEK_OFF"));
  struct linger l = {};
  socklen_t len = sizeof l;
  if (::getsockopt(fd, SOL_SOCKET, SO_LINGER, &l, &len) < 0) throw_errno("unable to read SO_LINGER");
  o->set_linger_on(l.l_onoff);
  o->set_linger_secs(l.l_linger);
  for (int which : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    struct timeval tv = {};
    len = sizeof tv;
    if (::getsockopt(fd, SOL_SOCKET, which, &tv, &len) < 0) throw_errno("unable to read a socket timeout");
    int64_t us = tv.tv_sec * 1000000ll + tv.tv_usec;
    if (which == SO_RCVTIMEO)
      o->set_rcvtimeo_us(us);
    else
      o->set_sndtimeo_us(us);
  }
  char dev[IFNAMSIZ + 1] = {};
  len = IFNAMSIZ;
  if (::getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, &len) == 0 && len > 0) o->set_bindtodevice(std::string(dev, strnlen(dev, len)));
  // SO_GET_FILTER: with no buffer it tells the number of instructions.
  len = 0;
  if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, nullptr, &len) == 0 && len > 0) {
    std::vector<struct sock_filter> prog(len);
    socklen_t n = len;
    if (::getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, prog.data(), &n) < 0) throw_errno("unable to read the socket filter");
    o->set_filter(std::string(reinterpret_cast<char*>(prog.data()), n * sizeof(struct sock_filter)));
    o->set_filter_locked(get(SO_LOCK_FILTER, "SO_LOCK_FILTER"));
  }
  struct f_owner_ex own = {};
  if (::fcntl(fd, F_GETOWN_EX, &own) == 0 && own.pid > 0) {
    o->set_owner_pid(static_cast<uint32_t>(own.pid));
    o->set_owner_type(own.type);
  }
  int sig = ::fcntl(fd, F_GETSIG);
  if (sig > 0) o->set_sigio(sig);
}

void restore_sock_bufs(int fd, const pb::SockOpts& o, const std::string& who, uint32_t at_least) {
  // The kernel doubles what it is given (SO_*BUFFORCE: not capped by
  // [rw]mem_max), and setting a size locks it; a buffer the kernel sized
  // itself (autotuning) is unlocked again with SO_BUF_LOCK, which keeps
  // the size.  Only a size that differs from the fresh socket's is set.
  auto size = [&](int get, int force, uint32_t want, const char* what) {
    want = std::max(want, at_least);
    if (!want || static_cast<uint32_t>(sockopt_int(fd, SOL_SOCKET, get, what)) == want) return;
    set_sockopt_int(fd, SOL_SOCKET, force, static_cast<int>(want / 2), who, what);
  };
  size(SO_SNDBUF, SO_SNDBUFFORCE, o.sndbuf(), "SO_SNDBUF");
  size(SO_RCVBUF, SO_RCVBUFFORCE, o.rcvbuf(), "SO_RCVBUF");
  int locks = (o.sndbuf_locked() ? SOCK_SNDBUF_LOCK : 0) | (o.rcvbuf_locked() ? SOCK_RCVBUF_LOCK : 0);
  if (sockopt_int(fd, SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK") != locks) set_sockopt_int(fd, SOL_SOCKET, SO_BUF_LOCK, locks, who, "SO_BUF_LOCK");
}

void restore_sock_opts(int fd, const pb::SockOpts& o, const std::string& who, bool bufs) {
  auto set = [&](int name, int v, const char* what) { set_sockopt_int(fd, SOL_SOCKET, name, v, who, what); };
  auto want = [&](int name, int v, const char* what) {
    int now = 0;
    socklen_t len = sizeof now;
    if (::getsockopt(fd, SOL_SOCKET, name, &now, &len) < 0) {
      if (not_here(errno) && !v) return;
      throw_errno(strf("unable to read %s of %s", what, who.c_str()));
    }
    if (now != v) set(name, v, what);
  };
  if (bufs) restore_sock_bufs(fd, o, who);
  want(SO_REUSEADDR, o.reuseaddr(), "SO_REUSEADDR");
  want(SO_REUSEPORT, o.reuseport(), "SO_REUSEPORT");
  want(SO_KEEPALIVE, o.keepalive(), "SO_KEEPALIVE");
  want(SO_BROADCAST, o.broadcast(), "SO_BROADCAST");
  want(SO_PASSCRED, o.passcred(), "SO_PASSCRED");
  want(SO_PASSSEC, o.passsec(), "SO_PASSSEC");
  want(SO_OOBINLINE, o.oobinline(), "SO_OOBINLINE");
  want(SO_DONTROUTE, o.dontroute(), "SO_DONTROUTE");
  want(SO_TIMESTAMP, o.timestamp(), "SO_TIMESTAMP");
  if (o.mark()) set(SO_MARK, static_cast<int>(o.mark()), "SO_MARK");
  want(SO_PRIORITY, o.priority(), "SO_PRIORITY");
  if (o.rcvlowat() > 1) set(SO_RCVLOWAT, o.rcvlowat(), "SO_RCVLOWAT");
  if (o.peek_off() >= 0) set(SO_PEEK_OFF, o.peek_off(), "SO_PEEK_OFF");
  if (o.linger_on()) {
    struct linger l = {1, o.linger_secs()};
    if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) < 0) throw_errno("unable to set SO_LINGER of " + who);
  }
  for (int which : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    int64_t us = which == SO_RCVTIMEO ? o.rcvtimeo_us() : o.sndtimeo_us();
    if (!us) continue;
    struct timeval tv = {static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
    if (::setsockopt(fd, SOL_SOCKET, which, &tv, sizeof tv) < 0) throw_errno("unable to set a timeout of " + who);
  }
  if (!o.bindtodevice().empty() &&
      ::setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o.bindtodevice().data(), static_cast<socklen_t>(o.bindtodevice().size())) < 0)
    throw_errno("unable to bind " + who + " to device '" + o.bindtodevice() + "'");
  if (!o.filter().empty()) {
    if (o.filter().size() % sizeof(struct sock_filter) || o.filter().size() > 4096 * sizeof(struct sock_filter))
      bad_input(who + ": a socket filter of " + std::to_string(o.filter().size()) + " bytes");
    std::vector<struct sock_filter> prog(o.filter().size() / sizeof(struct sock_filter));
    std::memcpy(prog.data(), o.filter().data(), o.filter().size());
    struct sock_fprog fp = {static_cast<unsigned short>(prog.size()), prog.data()};
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) < 0) throw_errno("unable to attach the filter of " + who);
    if (o.filter_locked()) set(SO_LOCK_FILTER, 1, "SO_LOCK_FILTER");
  }
  if (o.sigio() && ::fcntl(fd, F_SETSIG, o.sigio()) < 0) throw_errno("unable to set the signal of " + who);
  // The owner (F_SETOWN) needs its process to exist: set by the caller once
  // the tasks are there (sock_restore.cc).
}

// ---- the undo log -------------------------------------------------------------------

UndoLog::UndoLog(std::unique_ptr<TracerClient> tracer) : tracer_(std::move(tracer)) {}

void UndoLog::check_tracer() const {
  if (tracer_) tracer_->check_alive();
}

UndoLog::~UndoLog() {
  for (size_t i = local_.size(); i-- > 0;) {
    try {
      run_undo(local_[i].rec, local_[i].fd.get(), local_[i].fd2.get());
    } catch (const std::exception& e) {
      LOG_ERROR("unable to undo %s: %s", undo_name(local_[i].rec).c_str(), e.what());
    }
  }
}

std::vector<uint64_t> UndoLog::add(std::vector<pb::Undo> recs, const std::vector<std::pair<int, int>>& fds) {
  std::vector<uint64_t> ids;
  if (!tracer_) {
    for (size_t i = 0; i < recs.size(); ++i) {
      Local l;
      l.rec = std::move(recs[i]);
      l.rec.set_id(next_++);
      auto dup = [](int f) { return f < 0 ? ScopedFd() : ScopedFd(::fcntl(f, F_DUPFD_CLOEXEC, 3)); };
      l.fd = dup(fds[i].first);
      l.fd2 = dup(fds[i].second);
      if ((fds[i].first >= 0 && !l.fd.valid()) || (fds[i].second >= 0 && !l.fd2.valid()))
        throw_errno("unable to keep an fd for undoing");
      ids.push_back(l.rec.id());
      local_.push_back(std::move(l));
    }
    return ids;
  }
  for (size_t at = 0; at < recs.size();) {
    pb::UndoBatch b;
    std::vector<int> pass;
    while (at < recs.size() && pass.size() + 2 <= kMaxUndoFds) {
      pb::Undo* u = b.add_undo();
      *u = std::move(recs[at]);
      u->set_fd(fds[at].first < 0 ? -1 : static_cast<int32_t>(pass.size()));
      if (fds[at].first >= 0) pass.push_back(fds[at].first);
      u->set_fd2(fds[at].second < 0 ? -1 : static_cast<int32_t>(pass.size()));
      if (fds[at].second >= 0) pass.push_back(fds[at].second);
      ++at;
    }
    uint64_t first = tracer_->undo_add(b, pass);
    for (int i = 0; i < b.undo_size(); ++i) ids.push_back(first + static_cast<uint64_t>(i));
  }
  return ids;
}

uint64_t UndoLog::add_one(pb::Undo rec, int fd, int fd2) {
  std::vector<pb::Undo> v;
  v.push_back(std::move(rec));
  return add(std::move(v), {{fd, fd2}}).front();
}

void UndoLog::set(uint64_t id, pb::Undo rec) {
  rec.set_id(id);
  if (tracer_) {
    pb::UndoBatch b;
    *b.add_undo() = std::move(rec);
    tracer_->undo_set(b);
    return;
  }
  for (auto& l : local_)
    if (l.rec.id() == id) {
      int32_t f1 = l.rec.fd(), f2 = l.rec.fd2();
      l.rec = std::move(rec);
      l.rec.set_fd(f1), l.rec.set_fd2(f2);
    }
}

void UndoLog::drop(uint64_t id) {
  if (tracer_) {
    tracer_->undo_drop({id});
    return;
  }
  for (size_t i = 0; i < local_.size(); ++i)
    if (local_[i].rec.id() == id) {
      local_.erase(local_.begin() + static_cast<long>(i));
      return;
    }
}

std::string undo_name(const pb::Undo& u) {
  switch (u.kind()) {
    case pb::Undo::UNDO_SOCKOPT: return strf("socket option %d/%d", u.level(), u.name());
    case pb::Undo::UNDO_TCP_REPAIR: return "TCP repair mode";
    case pb::Undo::UNDO_NETLOCK: return "network lock '" + u.table() + "'";
    case pb::Undo::UNDO_UDP_UNCORK: return "an uncorked UDP datagram";
    default: return strf("undo record of kind %d", static_cast<int>(u.kind()));
  }
}

void run_undo(const pb::Undo& u, int fd, int fd2) {
  switch (u.kind()) {
    case pb::Undo::UNDO_SOCKOPT: {
      int v = u.value();
      if (::setsockopt(fd, u.level(), u.name(), &v, sizeof v) < 0) throw_errno("unable to set the option back");
      break;
    }
    case pb::Undo::UNDO_TCP_REPAIR: {
      // Leaving repair mode also resets sk_reuse (SO_REUSEADDR): put the
      // program's value back.  A socket that never went into repair mode
      // is left alone (leaving it sends a window probe).
      if (sockopt_int(fd, IPPROTO_TCP, TCP_REPAIR, "TCP_REPAIR")) {
        int off = 0;
        if (::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off) < 0) throw_errno("unable to leave TCP repair mode");
      }
      int r = u.reuseaddr();
      if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &r, sizeof r) < 0) throw_errno("unable to set SO_REUSEADDR back");
      break;
    }
    case pb::Undo::UNDO_NETLOCK:
      netlock_remove(fd, u.table());
      break;
    case pb::Undo::UNDO_UDP_UNCORK:
      udp_recork(fd, fd2, u);
      break;
    default:
      fail(strf("unknown undo record kind %d", static_cast<int>(u.kind())));
  }
  LOG_DEBUG("undone: %s", undo_name(u).c_str());
}

}  // namespace ck
