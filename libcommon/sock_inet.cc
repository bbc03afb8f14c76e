// What TCP, UDP, UDP-Lite and ping sockets share (IPv4 and IPv6): their
// addresses and IP-level options, sock_diag's view of them, and the
// packets ck-restore makes by hand.  The protocols themselves are in
// sock_tcp.cc and sock_udp.cc.
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cstring>
#include <map>

#include "error.h"
#include "log.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace ck {

namespace gp = google::protobuf;

// ---- option tables ------------------------------------------------------------------

void dump_int_opts(int fd, int family, int type, const IntOpt* table, size_t n, gp::Message* m) {
  const gp::Reflection* r = m->GetReflection();
  const gp::Descriptor* d = m->GetDescriptor();
  for (size_t i = 0; i < n; ++i) {
    const IntOpt& o = table[i];
    if ((o.family && o.family != family) || (o.dgram && type != SOCK_DGRAM)) continue;
    int v = 0;
    socklen_t len = sizeof v;
    // An option this socket (or this kernel) does not have stays absent.
    if (::getsockopt(fd, o.level, o.name, &v, &len) < 0) continue;
    const gp::FieldDescriptor* f = d->FindFieldByName(o.field);
    if (!f) fail(strf("internal: no field %s in %s", o.field, d->name().c_str()));
    if (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_BOOL)
      r->SetBool(m, f, v != 0);
    else
      r->SetInt32(m, f, v);
  }
}

void restore_int_opts(int fd, int family, int type, const IntOpt* table, size_t n, const gp::Message& m, const std::string& who) {
  const gp::Reflection* r = m.GetReflection();
  const gp::Descriptor* d = m.GetDescriptor();
  for (size_t i = 0; i < n; ++i) {
    const IntOpt& o = table[i];
    if ((o.family && o.family != family) || (o.dgram && type != SOCK_DGRAM)) continue;
    const gp::FieldDescriptor* f = d->FindFieldByName(o.field);
    if (!f || !r->HasField(m, f)) continue;
    int want = f->cpp_type() == gp::FieldDescriptor::CPPTYPE_BOOL ? r->GetBool(m, f) : r->GetInt32(m, f);
    int now = 0;
    socklen_t len = sizeof now;
    if (::getsockopt(fd, o.level, o.name, &now, &len) == 0 && (f->cpp_type() == gp::FieldDescriptor::CPPTYPE_BOOL ? (now != 0) == (want != 0) : now == want))
      continue;
    if (::setsockopt(fd, o.level, o.name, &want, sizeof want) < 0)
      throw_errno(strf("unable to set option %s (%d) of %s to %d", o.field, o.name, who.c_str(), want));
  }
}

namespace {

constexpr IntOpt kIpOpts[] = {
    {IPPROTO_IP, IP_TOS, "tos", AF_INET},
    {IPPROTO_IP, IP_TTL, "ttl", AF_INET},
    {IPPROTO_IP, IP_FREEBIND, "freebind", 0},
    {IPPROTO_IP, IP_TRANSPARENT, "transparent", 0},
    {IPPROTO_IP, IP_MTU_DISCOVER, "mtu_discover", AF_INET},
    {IPPROTO_IP, IP_RECVERR, "recverr", AF_INET},
    {IPPROTO_IP, IP_PKTINFO, "pktinfo", AF_INET},
    {IPPROTO_IP, IP_RECVTOS, "recvtos", AF_INET},
    {IPPROTO_IP, IP_RECVTTL, "recvttl", AF_INET},
    {IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, "bind_address_no_port", 0},
    {IPPROTO_IP, IP_RECVORIGDSTADDR, "recvorigdstaddr", AF_INET},
    {IPPROTO_IP, IP_MULTICAST_TTL, "mc_ttl", AF_INET, true},
    {IPPROTO_IP, IP_MULTICAST_LOOP, "mc_loop", AF_INET, true},
    {IPPROTO_IP, IP_MULTICAST_ALL, "mc_all", AF_INET, true},
    {IPPROTO_IPV6, IPV6_V6ONLY, "v6only", AF_INET6},
    {IPPROTO_IPV6, IPV6_TCLASS, "tclass", AF_INET6},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, "unicast_hops", AF_INET6},
    {IPPROTO_IPV6, IPV6_MULTICAST_HOPS, "mc_hops", AF_INET6, true},
    {IPPROTO_IPV6, IPV6_MULTICAST_LOOP, "mc6_loop", AF_INET6, true},
    {IPPROTO_IPV6, IPV6_RECVPKTINFO, "recvpktinfo6", AF_INET6},
    {IPPROTO_IPV6, IPV6_RECVERR, "recverr6", AF_INET6},
    {IPPROTO_IPV6, IPV6_MTU_DISCOVER, "mtu_discover6", AF_INET6},
    {IPPROTO_IPV6, IPV6_RECVTCLASS, "recvtclass", AF_INET6},
    {IPPROTO_IPV6, IPV6_RECVHOPLIMIT, "recvhoplimit", AF_INET6},
    {IPPROTO_IPV6, IPV6_MULTICAST_IF, "mc_if6", AF_INET6, true},
};

bool any_addr(const pb::InetAddr& a) { return a.addr().find_first_not_of('\0') == std::string::npos; }

// One sock_diag dump per (namespace, family, protocol): every socket of
// that table with its state and shutdown bits, by inode.
std::map<std::tuple<uint64_t, int, int>, std::map<uint64_t, InetDiag>>& diag_cache() {
  static std::map<std::tuple<uint64_t, int, int>, std::map<uint64_t, InetDiag>> m;
  return m;
}

std::map<uint64_t, InetDiag> diag_dump(int diag, int family, int protocol) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  std::memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = static_cast<uint8_t>(family);
  req.r.sdiag_protocol = static_cast<uint8_t>(protocol);
  req.r.idiag_states = ~0u;
  if (::send(diag, &req, sizeof req, 0) != sizeof req) throw_errno("unable to ask sock_diag");
  std::map<uint64_t, InetDiag> out;
  std::vector<char> buf(64 << 10);
  for (;;) {
    ssize_t n = ::recv(diag, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("unable to read sock_diag's answer");
    for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE) return out;
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(h));
        // A protocol sock_diag has no module for here: nothing known.
        if (e->error == -ENOENT || e->error == -EINVAL || e->error == -EOPNOTSUPP) return out;
        throw_errno("sock_diag refused", -e->error);
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      auto* m = static_cast<struct inet_diag_msg*>(NLMSG_DATA(h));
      InetDiag d;
      d.state = m->idiag_state;
      d.rqueue = m->idiag_rqueue;
      d.wqueue = m->idiag_wqueue;
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
      for (auto* a = reinterpret_cast<struct rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len))
        if (a->rta_type == INET_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1) d.shutdown = *static_cast<uint8_t*>(RTA_DATA(a));
      if (m->idiag_inode) out[m->idiag_inode] = d;
    }
  }
}

}  // namespace

const InetDiag* inet_diag(int sock_fd, int family, int protocol, uint64_t ino) {
  auto key = std::make_tuple(netns_cookie(sock_fd), family, protocol);
  auto& cache = diag_cache();
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, diag_dump(sock_diag_fd(sock_fd), family, protocol)).first;
  auto d = it->second.find(ino);
  return d == it->second.end() ? nullptr : &d->second;
}

bool v4_mapped(const pb::InetAddr& a) {
  static const char prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\xff', '\xff'};
  return a.family() == AF_INET6 && a.addr().size() == 16 && std::memcmp(a.addr().data(), prefix, 12) == 0;
}

pb::InetAddr unmapped(const pb::InetAddr& a) {
  if (!v4_mapped(a)) return a;
  pb::InetAddr v;
  v.set_family(AF_INET);
  v.set_addr(a.addr().substr(12));
  v.set_port(a.port());
  return v;
}

// ---- dump ------------------------------------------------------------------------

void check_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  for (SockItem* it : items) {
    int fd = it->sk.get();
    pb::InetSock* in = it->rec.mutable_inet();
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) throw_errno("unable to dump " + it->who + ": getsockname");
    to_inet_addr(reinterpret_cast<sockaddr*>(&ss), in->mutable_local());
    in->set_bound(in->local().port() != 0 || !any_addr(in->local()));
    len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      to_inet_addr(reinterpret_cast<sockaddr*>(&ss), in->mutable_remote());
      in->set_connected(true);
    } else if (errno != ENOTCONN) {
      throw_errno("unable to dump " + it->who + ": getpeername");
    }
    dump_int_opts(fd, it->rec.family(), it->rec.type(), kIpOpts, sizeof kIpOpts / sizeof kIpOpts[0], in->mutable_ip());
    if (it->rec.type() == SOCK_STREAM)
      check_tcp(*it, ctx);
    else
      check_udp(*it, ctx);
    std::string why = sock_unrestorable(it->rec);
    if (!why.empty()) fail(strf("unable to dump %s: %s", it->who.c_str(), why.c_str()));
  }
}

void dump_inet(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  std::vector<SockItem*> tcp, udp;
  for (SockItem* it : items) (it->rec.type() == SOCK_STREAM ? tcp : udp).push_back(it);
  if (!tcp.empty()) dump_tcp(tcp, ctx);
  if (!udp.empty()) dump_udp(udp, ctx);
}

// ---- restore -----------------------------------------------------------------------

void inet_bind(int fd, const pb::Socket& s, const std::string& who) {
  struct sockaddr_storage ss;
  socklen_t len = from_inet_addr(s.inet().local(), &ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0)
    throw_errno(strf("unable to bind %s to %s", who.c_str(), inet_addr_str(s.inet().local()).c_str()));
}

void restore_ip_opts(int fd, const pb::Socket& s, const std::string& who) {
  restore_int_opts(fd, s.family(), s.type(), kIpOpts, sizeof kIpOpts / sizeof kIpOpts[0], s.inet().ip(), who);
}

namespace {

uint32_t sum16(const void* p, size_t n, uint32_t s = 0) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(b[i] << 8 | b[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(b[n - 1] << 8);
  return s;
}

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

// The raw sockets the packets go out of, one per family (in the network
// namespace ck-restore works in).
int raw_socket(int family) {
  static ScopedFd v4, v6;
  ScopedFd& s = family == AF_INET ? v4 : v6;
  if (s.valid()) return s.get();
  // IPPROTO_RAW: the packet carries its own IP header (IP_HDRINCL; for
  // IPv6, IPV6_HDRINCL), the source address included: the peer's.
  s.reset(::socket(family, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
  if (!s.valid()) throw_errno("unable to create a raw socket");
  int one = 1;
  if (family == AF_INET6 && ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof one) < 0)
    throw_errno("unable to set IPV6_HDRINCL");
  uint32_t mark = kInjectMark;
  if (::setsockopt(s.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) throw_errno("unable to mark a raw socket");
  return s.get();
}

}  // namespace

void inject(const pb::InetAddr& from_, const pb::InetAddr& to_, int protocol, std::string l4, const std::string& who) {
  pb::InetAddr from = from_, to = to_;
  if (v4_mapped(from) && v4_mapped(to)) from = unmapped(from), to = unmapped(to);
  if (from.family() != to.family() || from.addr().size() != (from.family() == AF_INET ? 4u : 16u) || to.addr().size() != from.addr().size())
    bad_input(who + ": a packet between addresses of different families");
  const bool v4 = from.family() == AF_INET;
  if (l4.size() > 65000) bad_input(who + ": a packet of " + std::to_string(l4.size()) + " bytes");
  // The transport checksum: over a pseudo header (addresses, protocol,
  // length) for all but ICMPv4.  Its place in the header by protocol.
  size_t csum_at = protocol == IPPROTO_TCP ? 16 : protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE ? 6 : 2;
  if (l4.size() < csum_at + 2) bad_input(who + ": a packet too short for its header");
  l4[csum_at] = l4[csum_at + 1] = 0;
  uint32_t s = 0;
  if (protocol != IPPROTO_ICMP) {
    s = sum16(from.addr().data(), from.addr().size(), s);
    s = sum16(to.addr().data(), to.addr().size(), s);
    s += static_cast<uint32_t>(protocol) + static_cast<uint32_t>(l4.size() >> 16) + static_cast<uint32_t>(l4.size() & 0xffff);
  }
  uint16_t c = fold(sum16(l4.data(), l4.size(), s));
  if (c == 0 && protocol == IPPROTO_UDP) c = 0xffff;  // 0 means "no checksum" for UDP
  l4[csum_at] = static_cast<char>(c >> 8);
  l4[csum_at + 1] = static_cast<char>(c & 0xff);
  std::string pkt;
  if (v4) {
    struct iphdr ip;
    std::memset(&ip, 0, sizeof ip);
    ip.version = 4, ip.ihl = 5, ip.ttl = 64;
    ip.tot_len = htons(static_cast<uint16_t>(sizeof ip + l4.size()));
    ip.frag_off = htons(IP_DF);
    ip.protocol = static_cast<uint8_t>(protocol);
    std::memcpy(&ip.saddr, from.addr().data(), 4);
    std::memcpy(&ip.daddr, to.addr().data(), 4);  // the kernel fills in the header checksum
    pkt.assign(reinterpret_cast<char*>(&ip), sizeof ip);
  } else {
    uint8_t h[40] = {0x60};
    h[4] = static_cast<uint8_t>(l4.size() >> 8), h[5] = static_cast<uint8_t>(l4.size());
    h[6] = static_cast<uint8_t>(protocol), h[7] = 64;
    std::memcpy(h + 8, from.addr().data(), 16);
    std::memcpy(h + 24, to.addr().data(), 16);
    pkt.assign(reinterpret_cast<char*>(h), sizeof h);
  }
  pkt += l4;
  struct sockaddr_storage ss;
  pb::InetAddr dst = to;
  dst.set_port(0);
  socklen_t len = from_inet_addr(dst, &ss);
  if (::sendto(raw_socket(from.family()), pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) != static_cast<ssize_t>(pkt.size()))
    throw_errno(strf("unable to send a packet from %s to %s for %s", inet_addr_str(from).c_str(), inet_addr_str(to).c_str(), who.c_str()));
}

}  // namespace ck
