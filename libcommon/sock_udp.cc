// UDP, UDP-Lite and ICMP ping sockets, both sides.
//
// Dump: addresses, options and multicast memberships (no call lists them:
// every group some socket of the namespace joined, from /proc/net/igmp and
// igmp6, is asked of each socket with MCAST_MSFILTER, which answers with
// the socket's source filter or EADDRNOTAVAIL); the receive queue, read
// with MSG_PEEK, one datagram and its source per read (SO_PEEK_OFF set to
// 0 so that each peek moves on, registered with the undo log first); and
// a datagram being built (UDP_CORK, or MSG_MORE), whose bytes no socket
// call gives back: ck-sockdump sends it for real under an nftables rule
// that logs it to an NFLOG group of its own and drops it, reads it there
// and appends it to the socket again, corked as before.  The undo record
// of that is registered before, with the NFLOG socket: if ck-sockdump dies
// anywhere in between, ck-freeze finds the datagram there and corks it
// back (udp_recork).
//
// Restore: the socket bound, connected, joined; its queue sent to it again
// as datagrams from their sources (raw packets, sock_inet.cc inject()),
// the corked datagram appended again, corked.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <map>

#include "error.h"
#include "log.h"
#include "netlock.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

#ifndef UDP_CORK
#define UDP_CORK 1
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDPLITE_SEND_CSCOV
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11
#endif

namespace ck {

namespace {

constexpr IntOpt kUdpOpts[] = {
    {IPPROTO_UDP, UDP_SEGMENT, "segment", 0},
    {IPPROTO_UDP, UDP_GRO, "gro", 0},
};
constexpr IntOpt kUdpLiteOpts[] = {
    {IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, "cscov_send", 0},
    {IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, "cscov_recv", 0},
};
constexpr size_t kMaxDgram = 256 << 10;  // a GRO batch can exceed 64 KiB
constexpr int kMaxQueue = 1 << 20;

bool is_udp(const pb::Socket& s) { return s.protocol() == IPPROTO_UDP || s.protocol() == IPPROTO_UDPLITE; }

// ---- multicast ------------------------------------------------------------------

struct Group {
  int family;
  uint32_t ifindex;
  std::string ifname;
  std::string addr;  // 4 or 16 bytes
};

// Every group joined in the namespace of sock_fd (once per namespace).
const std::vector<Group>& groups_of_ns(int sock_fd) {
  static std::map<uint64_t, std::vector<Group>> cache;
  uint64_t cookie = netns_cookie(sock_fd);
  auto it = cache.find(cookie);
  if (it != cache.end()) return it->second;
  std::vector<Group> out;
  in_netns(sock_fd, [&] {
    std::string v4, v6;
    try_read_file("/proc/thread-self/net/igmp", &v4);
    try_read_file("/proc/thread-self/net/igmp6", &v6);
    // igmp: "IDX DEV : COUNT QUERIER" lines, each followed by its groups
    // ("\t\t\t\tGROUP USERS TIMER REPORTER", GROUP the __be32 as %08X).
    uint32_t idx = 0;
    std::string dev;
    size_t pos = 0;
    while (pos < v4.size()) {
      size_t nl = v4.find('\n', pos);
      std::string line = v4.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? v4.size() : nl + 1;
      if (line.empty() || line.compare(0, 3, "Idx") == 0) continue;
      if (line[0] != '\t') {
        char name[IFNAMSIZ + 1] = {};
        if (std::sscanf(line.c_str(), "%u %16s", &idx, name) == 2) dev = name;
        continue;
      }
      unsigned long g = 0;
      if (std::sscanf(line.c_str(), " %lx", &g) != 1) continue;
      uint32_t be = static_cast<uint32_t>(g);
      out.push_back({AF_INET, idx, dev, std::string(reinterpret_cast<char*>(&be), 4)});
    }
    // igmp6: "IDX DEV GROUP(32 hex digits) USERS FLAGS TIMER".
    pos = 0;
    while (pos < v6.size()) {
      size_t nl = v6.find('\n', pos);
      std::string line = v6.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? v6.size() : nl + 1;
      unsigned ix = 0;
      char name[IFNAMSIZ + 1] = {}, hex[33] = {};
      if (std::sscanf(line.c_str(), "%u %16s %32s", &ix, name, hex) != 3 || std::strlen(hex) != 32) continue;
      std::string a(16, '\0');
      for (int i = 0; i < 16; ++i) a[i] = static_cast<char>(std::stoi(std::string(hex + 2 * i, 2), nullptr, 16));
      out.push_back({AF_INET6, ix, name, a});
    }
  });
  return cache.emplace(cookie, std::move(out)).first->second;
}

struct GroupFilter {  // struct group_filter with room for sources
  uint32_t gf_interface;
  struct sockaddr_storage gf_group;
  uint32_t gf_fmode;
  uint32_t gf_numsrc;
  struct sockaddr_storage gf_slist[64];
};

void dump_groups(SockItem& it) {
  int fd = it.sk.get();
  pb::UdpState* u = it.rec.mutable_inet()->mutable_udp();
  for (const Group& g : groups_of_ns(fd)) {
    if (g.family != it.rec.family()) continue;  // v4 groups of an IPv6 socket: not looked for
    GroupFilter gf;
    std::memset(&gf, 0, sizeof gf);
    gf.gf_interface = g.ifindex;
    pb::InetAddr a;
    a.set_family(static_cast<uint32_t>(g.family));
    a.set_addr(g.addr);
    from_inet_addr(a, &gf.gf_group);
    gf.gf_numsrc = 64;
    socklen_t len = sizeof gf;
    int level = g.family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
    if (::getsockopt(fd, level, MCAST_MSFILTER, &gf, &len) < 0) continue;  // not a member
    pb::McastGroup* m = u->add_groups();
    m->set_group(g.addr);
    m->set_ifindex(g.ifindex);
    m->set_ifname(g.ifname);
    m->set_include(gf.gf_fmode == MCAST_INCLUDE);
    if (gf.gf_numsrc > 64) fail(strf("unable to dump %s: more than 64 multicast sources", it.who.c_str()));
    for (uint32_t i = 0; i < gf.gf_numsrc; ++i) {
      pb::InetAddr src;
      to_inet_addr(reinterpret_cast<sockaddr*>(&gf.gf_slist[i]), &src);
      m->add_sources(src.addr());
    }
  }
}

// ---- NFLOG -----------------------------------------------------------------------

void nl_attr(std::string& m, uint16_t type, const void* data, size_t len) {
  struct nlattr a = {static_cast<uint16_t>(NLA_HDRLEN + len), type};
  m.append(reinterpret_cast<char*>(&a), sizeof a);
  m.append(static_cast<const char*>(data), len);
  m.append(NLA_ALIGN(len) - len, '\0');
}

// Binds the NFLOG socket to group: copy whole packets, flush each at once.
int nflog_bind(int fd, uint16_t group) {
  std::string m(NLMSG_HDRLEN + sizeof(struct nfgenmsg), '\0');
  auto* h = reinterpret_cast<struct nlmsghdr*>(m.data());
  h->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  auto* g = reinterpret_cast<struct nfgenmsg*>(m.data() + NLMSG_HDRLEN);
  g->nfgen_family = AF_UNSPEC;
  g->version = NFNETLINK_V0;
  g->res_id = htons(group);
  struct nfulnl_msg_config_cmd cmd = {NFULNL_CFG_CMD_BIND};
  nl_attr(m, NFULA_CFG_CMD, &cmd, sizeof cmd);
  struct nfulnl_msg_config_mode mode = {htonl(0xffff), NFULNL_COPY_PACKET, 0};
  nl_attr(m, NFULA_CFG_MODE, &mode, sizeof mode);
  // Without a threshold of 1 the kernel batches packets for up to a second.
  uint32_t qthresh = htonl(1);
  nl_attr(m, NFULA_CFG_QTHRESH, &qthresh, sizeof qthresh);
  reinterpret_cast<struct nlmsghdr*>(m.data())->nlmsg_len = static_cast<uint32_t>(m.size());
  if (::send(fd, m.data(), m.size(), 0) != static_cast<ssize_t>(m.size())) return errno;
  char buf[512];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  if (n < static_cast<ssize_t>(NLMSG_HDRLEN + sizeof(struct nlmsgerr))) return EPROTO;
  auto* r = reinterpret_cast<struct nlmsghdr*>(buf);
  if (r->nlmsg_type != NLMSG_ERROR) return EPROTO;
  return -static_cast<struct nlmsgerr*>(NLMSG_DATA(r))->error;
}

// An NFLOG socket bound to a group nobody else uses, in the namespace of
// sock_fd.
ScopedFd nflog_open(int sock_fd, uint16_t* group) {
  ScopedFd fd;
  in_netns(sock_fd, [&] {
    fd.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
    if (!fd.valid()) throw_errno("unable to open an NFLOG socket");
  });
  int big = 4 << 20;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  int err = 0;
  for (int attempt = 0; attempt < 32; ++attempt) {
    uint16_t g = 0;
    while (g == 0)
      if (::getrandom(&g, sizeof g, 0) != sizeof g) g = static_cast<uint16_t>(::getpid() + attempt);
    err = nflog_bind(fd.get(), g);
    if (err == 0) {
      *group = g;
      return fd;
    }
  }
  throw_errno("unable to bind an NFLOG group", err);
}

struct Dgram {
  pb::InetAddr to;
  std::string data;
};

// The datagram an NFLOG message carries (its IP packet: header, UDP
// header, payload).
bool parse_logged(const char* buf, size_t n, Dgram* out) {
  for (auto* h = reinterpret_cast<const struct nlmsghdr*>(buf); NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
    if (h->nlmsg_type != ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) continue;
    const char* p = static_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    size_t len = h->nlmsg_len - NLMSG_HDRLEN - NLMSG_ALIGN(sizeof(struct nfgenmsg));
    for (auto* a = reinterpret_cast<const struct nlattr*>(p); len >= sizeof *a && a->nla_len >= sizeof *a && a->nla_len <= len;) {
      if ((a->nla_type & NLA_TYPE_MASK) == NFULA_PAYLOAD) {
        const uint8_t* ip = reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN;
        size_t iplen = a->nla_len - NLA_HDRLEN;
        size_t hl;
        pb::InetAddr to;
        if (iplen >= 20 && (ip[0] >> 4) == 4) {
          hl = static_cast<size_t>(ip[0] & 15) * 4;
          size_t tot = static_cast<size_t>(ip[2] << 8 | ip[3]);
          if (tot < iplen) iplen = tot;
          to.set_family(AF_INET);
          to.set_addr(std::string(reinterpret_cast<const char*>(ip + 16), 4));
        } else if (iplen >= 40 && (ip[0] >> 4) == 6) {
          hl = 40;  // a datagram of ours has no extension headers
          size_t tot = 40 + static_cast<size_t>(ip[4] << 8 | ip[5]);
          if (tot < iplen) iplen = tot;
          to.set_family(AF_INET6);
          to.set_addr(std::string(reinterpret_cast<const char*>(ip + 24), 16));
        } else {
          return false;
        }
        if (iplen < hl + 8) return false;
        to.set_port(static_cast<uint32_t>(ip[hl + 2] << 8 | ip[hl + 3]));
        out->to = to;
        out->data.assign(reinterpret_cast<const char*>(ip + hl + 8), iplen - hl - 8);
        return true;
      }
      size_t step = NLA_ALIGN(a->nla_len);
      if (step >= len) break;
      len -= step;
      a = reinterpret_cast<const struct nlattr*>(reinterpret_cast<const char*>(a) + step);
    }
  }
  return false;
}

// Waits up to ms for the logged datagram (peeked: it stays queued until
// the caller has registered it).
bool nflog_peek(int fd, int ms, Dgram* out, std::vector<char>& buf) {
  struct pollfd p = {fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) throw_errno("unable to read the NFLOG socket");
    if (parse_logged(buf.data(), static_cast<size_t>(n), out)) return true;
    ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);  // not ours (an ack): drop it
  }
}

int outq_of(int fd) {
  int v = 0;
  if (::ioctl(fd, SIOCOUTQ, &v) < 0) return -1;
  return v;
}

bool connected(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  return ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0;
}

// Appends data to fd's datagram in the making: corked again (UDP_CORK) or
// with MSG_MORE, as it was.
void append_pending(int fd, bool cork, const std::string& data, const pb::InetAddr& to, const std::string& who) {
  if (cork) set_sockopt_int(fd, IPPROTO_UDP, UDP_CORK, 1, who, "UDP_CORK");
  struct sockaddr_storage ss;
  socklen_t len = 0;
  if (!connected(fd)) len = from_inet_addr(to, &ss);
  ssize_t n = ::sendto(fd, data.data(), data.size(), (cork ? 0 : MSG_MORE) | MSG_DONTWAIT | MSG_NOSIGNAL,
                       len ? reinterpret_cast<sockaddr*>(&ss) : nullptr, len);
  if (n != static_cast<ssize_t>(data.size()))
    throw_errno(strf("unable to cork %zu bytes for %s into %s again", data.size(), inet_addr_str(to).c_str(), who.c_str()));
}

// Reads the corked datagram of it back (see the top of this file).
void dump_pending(SockItem& it, SockDumpCtx& ctx) {
  int fd = it.sk.get();
  pb::UdpState* u = it.rec.mutable_inet()->mutable_udp();
  const bool cork = u->cork();
  uint16_t group = 0;
  ScopedFd nflog = nflog_open(fd, &group);
  ScopedFd ns = sock_netns(fd);
  pb::Undo rec;
  rec.set_kind(pb::Undo::UNDO_UDP_UNCORK);
  rec.set_cork(cork);
  rec.set_more(!cork);
  uint64_t id = ctx.undo.add_one(rec, fd, nflog.get());
  std::string table = strf("ck_cork_%d_%u_%u", ctx.root, group, it.rec.inet().local().port());
  pb::Undo lock;
  lock.set_kind(pb::Undo::UNDO_NETLOCK);
  lock.set_table(table);
  uint64_t lock_id = ctx.undo.add_one(lock, ns.get());
  // Everything from the socket's port goes to the group (the tree is
  // frozen: nothing else of it sends from there).
  const char* l4 = it.rec.protocol() == IPPROTO_UDPLITE ? "udplite" : "udp";
  run_nft(ns.get(), strf("table inet %s {\n  chain out { type filter hook output priority -300; policy accept;\n"
                         "    meta l4proto %s th sport %u log group %u drop\n  }\n}\n",
                         table.c_str(), l4, it.rec.inet().local().port(), group));
  fault_point("sockdump-uncorking");
  // Setting UDP_CORK to 0 sends what is pending (also a MSG_MORE datagram).
  set_sockopt_int(fd, IPPROTO_UDP, UDP_CORK, 0, it.who, "UDP_CORK");
  std::vector<char> buf(kMaxDgram + 4096);
  Dgram d;
  if (!nflog_peek(nflog.get(), 1000, &d, buf)) {
    // What SIOCOUTQ counted was a datagram already on its way, not one
    // in the making.
    if (outq_of(fd) != 0) fail(strf("unable to dump %s: its corked datagram did not come back through NFLOG", it.who.c_str()));
    if (cork) set_sockopt_int(fd, IPPROTO_UDP, UDP_CORK, 1, it.who, "UDP_CORK");
    ctx.undo.drop(id);
  } else {
    rec.set_data(d.data);
    rec.set_has_data(true);
    *rec.mutable_to() = d.to;
    ctx.undo.set(id, rec);
    ::recv(nflog.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    fault_point("sockdump-uncorked");
    append_pending(fd, cork, d.data, d.to, it.who);
    ctx.undo.drop(id);
    u->set_has_pending(true);
    u->set_pending(d.data);
    *u->mutable_pending_to() = d.to;
    LOG_DEBUG("%s: %zu bytes corked for %s", it.who.c_str(), d.data.size(), inet_addr_str(d.to).c_str());
  }
  netlock_remove(ns.get(), table);
  ctx.undo.drop(lock_id);
}

// Reads the receive queue of it without consuming it (SO_PEEK_OFF at 0,
// registered by the caller).
void read_queue(SockItem& it, std::vector<char>& buf) {
  int fd = it.sk.get();
  pb::UdpState* u = it.rec.mutable_inet()->mutable_udp();
  for (int n = 0;; ++n) {
    if (n == kMaxQueue) fail(strf("unable to dump %s: more than %d datagrams queued", it.who.c_str(), kMaxQueue));
    struct sockaddr_storage from;
    struct iovec iov = {buf.data(), buf.size()};
    struct msghdr mh;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    ssize_t r = ::recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    if (r < 0) throw_errno(strf("unable to dump %s: unable to read its queue", it.who.c_str()));
    if (mh.msg_flags & MSG_TRUNC) fail(strf("unable to dump %s: a queued datagram is larger than %zu bytes", it.who.c_str(), buf.size()));
    pb::UdpDgram* d = u->add_queue();
    d->set_data(buf.data(), static_cast<size_t>(r));
    if (mh.msg_namelen) to_inet_addr(reinterpret_cast<sockaddr*>(&from), d->mutable_from());
  }
}

// Counts what fd has queued (SO_PEEK_OFF peeks: a socket of ours, whose
// program does not run yet) until there are n datagrams.
void wait_queued(int fd, int n, int peek_off, const std::string& who) {
  std::vector<char> buf(kMaxDgram);
  for (int tries = 0; tries < 2000; ++tries) {
    set_sockopt_int(fd, SOL_SOCKET, SO_PEEK_OFF, 0, who, "SO_PEEK_OFF");
    int got = 0;
    while (got <= n && ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT) >= 0) ++got;
    set_sockopt_int(fd, SOL_SOCKET, SO_PEEK_OFF, peek_off, who, "SO_PEEK_OFF");
    if (got == n) return;
    if (got > n) fail(strf("unable to refill %s: %d datagrams queued, %d sent", who.c_str(), got, n));
    ::usleep(500);
  }
  fail(strf("unable to refill %s: the datagrams sent to it did not all arrive", who.c_str()));
}

}  // namespace

void check_udp(SockItem& it, SockDumpCtx& ctx) {
  int fd = it.sk.get();
  pb::InetSock* in = it.rec.mutable_inet();
  pb::UdpState* u = in->mutable_udp();
  if (is_udp(it.rec)) {
    u->set_cork(sockopt_int(fd, IPPROTO_UDP, UDP_CORK, "UDP_CORK"));
    dump_int_opts(fd, it.rec.family(), it.rec.type(), kUdpOpts, 2, u);
    if (it.rec.protocol() == IPPROTO_UDPLITE) dump_int_opts(fd, it.rec.family(), it.rec.type(), kUdpLiteOpts, 2, u);
    if (const InetDiag* d = inet_diag(fd, it.rec.family(), it.rec.protocol(), it.ino)) in->set_shutdown(d->shutdown);
  }
  dump_groups(it);
}

void dump_udp(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  // Which sockets have a queue: a peek of nothing says so without moving
  // anything.
  std::vector<SockItem*> queued;
  for (SockItem* it : items) {
    char c;
    if (::recv(it->sk.get(), &c, 0, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC) >= 0) queued.push_back(it);
  }
  if (!queued.empty()) {
    std::vector<pb::Undo> recs(queued.size());
    std::vector<std::pair<int, int>> fds;
    for (size_t i = 0; i < queued.size(); ++i) {
      recs[i].set_kind(pb::Undo::UNDO_SOCKOPT), recs[i].set_level(SOL_SOCKET), recs[i].set_name(SO_PEEK_OFF);
      recs[i].set_value(queued[i]->rec.opts().peek_off());
      fds.emplace_back(queued[i]->sk.get(), -1);
    }
    std::vector<uint64_t> ids = ctx.undo.add(std::move(recs), fds);
    std::vector<char> buf(kMaxDgram);
    for (size_t i = 0; i < queued.size(); ++i) {
      SockItem& it = *queued[i];
      set_sockopt_int(it.sk.get(), SOL_SOCKET, SO_PEEK_OFF, 0, it.who, "SO_PEEK_OFF");
      fault_point("sockdump-peeking");
      read_queue(it, buf);
      set_sockopt_int(it.sk.get(), SOL_SOCKET, SO_PEEK_OFF, it.rec.opts().peek_off(), it.who, "SO_PEEK_OFF");
      ctx.undo.drop(ids[i]);
      LOG_DEBUG("%s: %d datagrams queued", it.who.c_str(), it.rec.inet().udp().queue_size());
    }
  }
  for (SockItem* it : items) {
    if (is_udp(it->rec) && outq_of(it->sk.get()) > 0) dump_pending(*it, ctx);
    ctx.emit(*it);
  }
}

void udp_recork(int fd, int nflog_fd, const pb::Undo& u) {
  // Idempotent: a socket with something pending was corked again already.
  if (outq_of(fd) > 0) return;
  Dgram d;
  if (u.has_data()) {
    d.data = u.data();
    d.to = u.to();
  } else {
    std::vector<char> buf(kMaxDgram + 4096);
    if (nflog_fd < 0 || !nflog_peek(nflog_fd, 100, &d, buf)) {
      // Never uncorked (the stage died before): only the flag to put back.
      if (u.cork()) set_sockopt_int(fd, IPPROTO_UDP, UDP_CORK, 1, "a UDP socket", "UDP_CORK");
      return;
    }
  }
  append_pending(fd, u.cork(), d.data, d.to, "a UDP socket");
}

// ---- restore ------------------------------------------------------------------------

ScopedFd udp_open(const pb::Socket& s, const std::string& who) {
  const pb::InetSock& in = s.inet();
  ScopedFd fd(::socket(s.family(), SOCK_DGRAM | SOCK_CLOEXEC, s.protocol()));
  if (!fd.valid()) throw_errno("unable to create " + who);
  int f = fd.get();
  restore_ip_opts(f, s, who);
  restore_sock_opts(f, s.opts(), who, false);
  size_t q = 0;
  for (const auto& d : in.udp().queue()) q += d.data().size() + 1024;  // and the skb's overhead
  restore_sock_bufs(f, s.opts(), who, static_cast<uint32_t>(std::min<size_t>(2 * q, 1u << 30)));
  if (is_udp(s)) {
    restore_int_opts(f, s.family(), s.type(), kUdpOpts, 2, in.udp(), who);
    if (s.protocol() == IPPROTO_UDPLITE) restore_int_opts(f, s.family(), s.type(), kUdpLiteOpts, 2, in.udp(), who);
  }
  if (in.bound()) inet_bind(f, s, who);
  if (in.connected()) {
    struct sockaddr_storage ss;
    socklen_t len = from_inet_addr(in.remote(), &ss);
    if (::connect(f, reinterpret_cast<sockaddr*>(&ss), len) < 0)
      throw_errno(strf("unable to connect %s to %s", who.c_str(), inet_addr_str(in.remote()).c_str()));
  }
  for (const auto& g : in.udp().groups()) {
    struct group_req gr;
    std::memset(&gr, 0, sizeof gr);
    gr.gr_interface = g.ifindex();
    pb::InetAddr a;
    a.set_family(g.group().size() == 4 ? AF_INET : AF_INET6);
    a.set_addr(g.group());
    from_inet_addr(a, &gr.gr_group);
    int level = a.family() == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
    if (::setsockopt(f, level, MCAST_JOIN_GROUP, &gr, sizeof gr) < 0)
      throw_errno(strf("unable to join %s to group %s on interface %u ('%s')", who.c_str(), inet_addr_str(a).c_str(), g.ifindex(),
                       g.ifname().c_str()));
    if (g.include() || g.sources_size()) {
      if (g.sources_size() > 64) bad_input(who + ": more than 64 multicast sources");
      GroupFilter gf;
      std::memset(&gf, 0, sizeof gf);
      gf.gf_interface = g.ifindex();
      gf.gf_group = gr.gr_group;
      gf.gf_fmode = g.include() ? MCAST_INCLUDE : MCAST_EXCLUDE;
      gf.gf_numsrc = static_cast<uint32_t>(g.sources_size());
      for (int i = 0; i < g.sources_size(); ++i) {
        pb::InetAddr sa;
        sa.set_family(a.family());
        sa.set_addr(g.sources(i));
        from_inet_addr(sa, &gf.gf_slist[i]);
      }
      socklen_t len = static_cast<socklen_t>(offsetof(GroupFilter, gf_slist) + gf.gf_numsrc * sizeof(struct sockaddr_storage));
      if (::setsockopt(f, level, MCAST_MSFILTER, &gf, len) < 0) throw_errno("unable to set the multicast sources of " + who);
    }
  }
  return fd;
}

void udp_fill(int fd, const pb::Socket& s, const std::string& who) {
  const pb::InetSock& in = s.inet();
  const pb::UdpState& u = in.udp();
  // Each datagram comes again from its source, to the socket's address
  // (a socket bound to every address takes it on loopback).
  pb::InetAddr to = in.local();
  if (to.addr().find_first_not_of('\0') == std::string::npos) {
    to.set_addr(s.family() == AF_INET ? std::string("\x7f\0\0\x01", 4) : std::string(15, '\0') + '\x01');
  }
  for (const auto& d : u.queue()) {
    pb::InetAddr dst = to;
    if (s.family() == AF_INET6 && v4_mapped(d.from()) && dst.addr() == std::string(15, '\0') + '\x01')
      dst.set_addr(std::string(10, '\0') + "\xff\xff\x7f\0\0\x01");  // an IPv4 sender of a dual-stack socket
    if (is_udp(s)) {
      std::string l4(8, '\0');
      uint16_t sp = htons(static_cast<uint16_t>(d.from().port())), dp = htons(static_cast<uint16_t>(in.local().port()));
      // UDP-Lite: the length field is the checksum coverage (0: all).
      uint16_t len = s.protocol() == IPPROTO_UDPLITE ? 0 : htons(static_cast<uint16_t>(8 + d.data().size()));
      std::memcpy(&l4[0], &sp, 2);
      std::memcpy(&l4[2], &dp, 2);
      std::memcpy(&l4[4], &len, 2);
      inject(d.from(), dst, s.protocol(), l4 + d.data(), who);
    } else {
      // A ping socket reads ICMP messages whole: an echo reply as it came.
      inject(d.from(), dst, s.family() == AF_INET ? static_cast<int>(IPPROTO_ICMP) : static_cast<int>(IPPROTO_ICMPV6), d.data(), who);
    }
  }
  // The packets are delivered on their way out of sendto() or a little
  // later (softirq): wait until all are queued before anything else comes.
  if (u.queue_size()) wait_queued(fd, u.queue_size(), s.opts().peek_off(), who);
  if (u.has_pending()) append_pending(fd, u.cork(), u.pending(), u.pending_to(), who);
  else if (u.cork()) set_sockopt_int(fd, IPPROTO_UDP, UDP_CORK, 1, who, "UDP_CORK");
  uint32_t sh = in.shutdown();
  int how = (sh & 1) && (sh & 2) ? SHUT_RDWR : (sh & 2) ? SHUT_WR : (sh & 1) ? SHUT_RD : -1;
  // An unconnected socket says ENOTCONN, and is shut down all the same.
  if (how >= 0 && ::shutdown(fd, how) < 0 && errno != ENOTCONN) throw_errno("unable to shut down " + who);
  restore_sock_bufs(fd, s.opts(), who);
}

}  // namespace ck
