// TCP, both sides.  Listening and unconnected sockets are an address and
// options.  A connection is read and rebuilt through TCP_REPAIR:
//
// Dump (the tree frozen): the network lock goes up first (netlock.h), so
// that nothing the peer sends moves a queue or a sequence number while it
// is read; then every connection goes into repair mode (registered with
// ck-freeze first: a failed dump takes it out again), and with it the
// kernel lets its queues be read with MSG_PEEK (the send queue too: what
// was sent and not acknowledged, and what was never sent) and its
// sequence numbers, window and negotiated options be read.  A socket
// closed in repair mode goes without a FIN or a reset: after a committed
// dump the tree dies and its peers see nothing, the lock dropping what
// they send until the restore.
//
// Restore: a new socket in repair mode takes the recorded sequence numbers
// before connect(), which then makes it ESTABLISHED without a packet; its
// queues are refilled (the receive queue through TCP_REPAIR_QUEUE, the
// send queue counted as sent: its unsent tail is sent for real once
// repair mode is off), then the options and the window (TCP_REPAIR_WINDOW
// only works once the receive queue is back).  The closing states have no
// setter: shutdown() in repair mode queues our FIN without sending it
// (FIN-WAIT-1, LAST-ACK, CLOSING), and what the peer did is replayed to the
// socket as packets ck-restore makes itself (sock_inet.cc inject()): the
// peer's FIN (CLOSE-WAIT, LAST-ACK, CLOSING) and the ACK of our FIN
// (FIN-WAIT-2).  Sequence numbers count a FIN, so the recorded ones are
// taken back by one where the FIN is replayed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "error.h"
#include "log.h"
#include "netlock.h"
#include "sock_impl.h"

CK_LOG_MODULE("sock");

#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif
#ifndef TCP_INQ
#define TCP_INQ 36
#endif

namespace ck {

namespace {

constexpr int kTcpRecvQueue = 1, kTcpSendQueue = 2;  // TCP_REPAIR_QUEUE values
constexpr int kOptMss = 2, kOptWindow = 3, kOptSackPerm = 4, kOptTimestamp = 8;

// TCP options other than the state; maxseg only for sockets that are not
// connections (on a connection TCP_MAXSEG reads the current MSS, which is
// not what a program sets).
constexpr IntOpt kTcpOpts[] = {
    {IPPROTO_TCP, TCP_NODELAY, "nodelay", 0},
    {IPPROTO_TCP, TCP_CORK, "cork", 0},
    {IPPROTO_TCP, TCP_KEEPIDLE, "keepidle", 0},
    {IPPROTO_TCP, TCP_KEEPINTVL, "keepintvl", 0},
    {IPPROTO_TCP, TCP_KEEPCNT, "keepcnt", 0},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, "user_timeout", 0},
    {IPPROTO_TCP, TCP_LINGER2, "linger2", 0},
    {IPPROTO_TCP, TCP_WINDOW_CLAMP, "window_clamp", 0},
    {IPPROTO_TCP, TCP_SYNCNT, "syncnt", 0},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, "defer_accept", 0},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, "notsent_lowat", 0},
    {IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, "thin_linear_timeouts", 0},
    {IPPROTO_TCP, TCP_FASTOPEN_CONNECT, "fastopen_connect", 0},
    {IPPROTO_TCP, TCP_INQ, "inq", 0},
};
constexpr IntOpt kTcpOptsUnconnected[] = {
    {IPPROTO_TCP, TCP_MAXSEG, "maxseg", 0},
    {IPPROTO_TCP, TCP_FASTOPEN, "fastopen", 0},
};

bool is_conn(uint32_t st) { return st != TCP_LISTEN && st != TCP_CLOSE; }
// Our FIN is queued (sent or not, acknowledged or not).
bool our_fin(uint32_t st) { return st == TCP_FIN_WAIT1 || st == TCP_FIN_WAIT2 || st == TCP_LAST_ACK || st == TCP_CLOSING; }
bool our_fin_unacked(uint32_t st) { return st == TCP_FIN_WAIT1 || st == TCP_LAST_ACK || st == TCP_CLOSING; }
// The peer's FIN arrived (and counts in rcv_nxt).
bool peer_fin(uint32_t st) { return st == TCP_CLOSE_WAIT || st == TCP_LAST_ACK || st == TCP_CLOSING; }

// glibc's struct tcp_info stops at tcpi_total_retrans; the kernel's goes
// on (tcpi_segs_in is at byte 140 of its uapi layout).
constexpr size_t kSegsInAt = 140;
struct tcp_info tcp_info_of(int fd, const std::string& who, uint32_t* segs_in = nullptr) {
  alignas(8) char buf[256] = {};
  socklen_t len = sizeof buf;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &len) < 0) throw_errno("unable to read TCP_INFO of " + who);
  struct tcp_info ti;
  std::memcpy(&ti, buf, sizeof ti);
  if (segs_in) std::memcpy(segs_in, buf + kSegsInAt, sizeof *segs_in);
  return ti;
}

int ioctl_int(int fd, unsigned long req, const std::string& who, const char* what) {
  int v = 0;
  if (::ioctl(fd, req, &v) < 0) throw_errno(strf("unable to read %s of %s", what, who.c_str()));
  return v;
}

void set_int(int fd, int level, int name, int v, const std::string& who, const char* what) { set_sockopt_int(fd, level, name, v, who, what); }

void take_info(const struct tcp_info& ti, pb::TcpState* t) {
  t->set_state(ti.tcpi_state);
  if (ti.tcpi_state == TCP_LISTEN) {
    // For a listener TCP_INFO reports the accept queue and its limit here.
    t->set_waiting(ti.tcpi_unacked);
    t->set_backlog(ti.tcpi_sacked);
    return;
  }
  t->set_snd_mss(ti.tcpi_snd_mss);
  t->set_wscale_ok(ti.tcpi_options & TCPI_OPT_WSCALE);
  t->set_snd_wscale(ti.tcpi_options & TCPI_OPT_WSCALE ? ti.tcpi_snd_wscale : 0);
  t->set_rcv_wscale(ti.tcpi_options & TCPI_OPT_WSCALE ? ti.tcpi_rcv_wscale : 0);
  t->set_sack_ok(ti.tcpi_options & TCPI_OPT_SACK);
  t->set_tstamp_ok(ti.tcpi_options & TCPI_OPT_TIMESTAMPS);
}

// Reads a queue selected with TCP_REPAIR_QUEUE: MSG_PEEK in repair mode
// gives all of it from its head (the send queue even ignores the length:
// the buffer must hold all of it).
std::string peek_queue(int fd, size_t len, const std::string& who, const char* which) {
  if (!len) return {};
  std::string buf(len + 1, '\0');
  ssize_t n;
  while ((n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT)) < 0 && errno == EINTR) {
  }
  if (n < 0) throw_errno(strf("unable to dump %s: unable to read its %s queue", who.c_str(), which));
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// The connection, in repair mode (the lock up).
void read_conn(SockItem& it, SockDumpCtx& ctx) {
  int fd = it.sk.get();
  pb::TcpState* t = it.rec.mutable_inet()->mutable_tcp();
  // What TCP_INFO said before the lock may have moved on (a FIN that came
  // in meanwhile): read again, and check again.
  take_info(tcp_info_of(fd, it.who), t);
  std::string why = sock_unrestorable(it.rec);
  if (!why.empty()) fail(strf("unable to dump %s: %s", it.who.c_str(), why.c_str()));
  const uint32_t st = t->state();

  set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpSendQueue, it.who, "TCP_REPAIR_QUEUE");
  t->set_snd_seq(static_cast<uint32_t>(sockopt_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ")));
  // SIOCOUTQ is write_seq - snd_una and SIOCOUTQNSD write_seq - snd_nxt:
  // both count a FIN that is not acknowledged (resp. not sent).
  int outq = ioctl_int(fd, SIOCOUTQ, it.who, "SIOCOUTQ");
  int nsd = ioctl_int(fd, SIOCOUTQNSD, it.who, "SIOCOUTQNSD");
  size_t data = static_cast<size_t>(outq) - (our_fin_unacked(st) && outq > 0 ? 1 : 0);
  std::string q = peek_queue(fd, static_cast<size_t>(outq), it.who, "send");
  if (q.size() != data)
    fail(strf("unable to dump %s: its send queue holds %zu bytes, %zu expected", it.who.c_str(), q.size(), data));
  t->set_sendq(std::move(q));
  // Our FIN is last in the queue: unsent if anything is.
  t->set_fin_unsent(our_fin(st) && nsd > 0);
  t->set_unsent(static_cast<uint32_t>(t->fin_unsent() ? nsd - 1 : nsd));

  set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpRecvQueue, it.who, "TCP_REPAIR_QUEUE");
  t->set_rcv_seq(static_cast<uint32_t>(sockopt_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ")));
  int inq = ioctl_int(fd, SIOCINQ, it.who, "SIOCINQ");
  if (inq > 0) {
    // A program's SO_PEEK_OFF moves with every peek (TCP has it since
    // 6.10): read from 0, then put it back.
    int peek0 = it.rec.opts().peek_off();
    uint64_t id = 0;
    if (peek0 >= 0) {
      pb::Undo u;
      u.set_kind(pb::Undo::UNDO_SOCKOPT), u.set_level(SOL_SOCKET), u.set_name(SO_PEEK_OFF), u.set_value(peek0);
      id = ctx.undo.add_one(u, fd);
      set_int(fd, SOL_SOCKET, SO_PEEK_OFF, 0, it.who, "SO_PEEK_OFF");
    }
    q = peek_queue(fd, static_cast<size_t>(inq), it.who, "receive");
    if (peek0 >= 0) {
      set_int(fd, SOL_SOCKET, SO_PEEK_OFF, peek0, it.who, "SO_PEEK_OFF");
      ctx.undo.drop(id);
    }
    if (q.size() != static_cast<size_t>(inq))
      fail(strf("unable to dump %s: its receive queue holds %zu bytes, %d expected (urgent data?)", it.who.c_str(), q.size(), inq));
    t->set_recvq(std::move(q));
  }
  struct tcp_repair_window w;
  socklen_t len = sizeof w;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &len) < 0) throw_errno("unable to read the window of " + it.who);
  t->set_snd_wl1(w.snd_wl1), t->set_snd_wnd(w.snd_wnd), t->set_max_window(w.max_window);
  t->set_rcv_wnd(w.rcv_wnd), t->set_rcv_wup(w.rcv_wup);
  t->set_timestamp(static_cast<uint32_t>(sockopt_int(fd, IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP")));
  t->set_mss_clamp(static_cast<uint32_t>(sockopt_int(fd, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG")));  // in repair mode: mss_clamp
  LOG_DEBUG("%s: %s, snd %u rcv %u, %zu bytes to send (%u unsent), %zu to read", it.who.c_str(), tcp_state_name(st), t->snd_seq(),
            t->rcv_seq(), t->sendq().size(), t->unsent(), t->recvq().size());
}

}  // namespace

void check_tcp(SockItem& it, SockDumpCtx& ctx) {
  int fd = it.sk.get();
  pb::InetSock* in = it.rec.mutable_inet();
  pb::TcpState* t = in->mutable_tcp();
  uint32_t segs_in = 0;
  struct tcp_info ti = tcp_info_of(fd, it.who, &segs_in);
  take_info(ti, t);
  if (ti.tcpi_state == TCP_CLOSE) {
    // A socket whose connection ended (a FIN both ways, or a reset) is
    // closed too, with what it received and its end still to be read, and
    // maybe an error: tell it from a fresh one by what went through it.
    int inq = 0;
    ::ioctl(fd, SIOCINQ, &inq);
    t->set_dead(segs_in > 0 || inq > 0);
  }
  if (const InetDiag* d = inet_diag(fd, it.rec.family(), IPPROTO_TCP, it.ino)) in->set_shutdown(d->shutdown);
  dump_int_opts(fd, it.rec.family(), it.rec.type(), kTcpOpts, sizeof kTcpOpts / sizeof kTcpOpts[0], t);
  if (!is_conn(ti.tcpi_state)) dump_int_opts(fd, it.rec.family(), it.rec.type(), kTcpOptsUnconnected, 2, t);
  char cc[32] = {};
  socklen_t len = sizeof cc - 1;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &len) == 0) t->set_congestion(std::string(cc, strnlen(cc, len)));
}

void dump_tcp(std::vector<SockItem*>& items, SockDumpCtx& ctx) {
  std::vector<SockItem*> conns, listeners;
  for (SockItem* it : items) {
    uint32_t st = it->rec.inet().tcp().state();
    if (is_conn(st)) conns.push_back(it);
    if (st == TCP_LISTEN) listeners.push_back(it);
  }
  // 1. The lock, one per network namespace, registered before it is made.
  if (!conns.empty() || !listeners.empty()) {
    std::map<uint64_t, std::vector<const pb::Socket*>> by_ns;
    std::map<uint64_t, int> ns_sock;
    for (auto* v : {&conns, &listeners})
      for (SockItem* it : *v) {
        by_ns[it->rec.netns()].push_back(&it->rec);
        ns_sock.emplace(it->rec.netns(), it->sk.get());
      }
    for (auto& [cookie, socks] : by_ns) {
      ScopedFd ns = sock_netns(ns_sock[cookie]);
      NetLock lock(ns.get(), NetLock::new_name(ctx.root));
      for (const pb::Socket* s : socks) lock.add(*s);
      pb::Undo u;
      u.set_kind(pb::Undo::UNDO_NETLOCK);
      u.set_table(lock.table());
      ctx.undo.add_one(u, ns.get());
      lock.lock();
      pb::NetLock l;
      l.set_table(lock.table());
      l.set_netns(cookie);
      ctx.locks.push_back(l);
    }
  }
  fault_point("sockdump-locked");
  // 2. Repair mode, registered first (leaving it also resets SO_REUSEADDR:
  // the record keeps the program's value).
  if (!conns.empty()) {
    std::vector<pb::Undo> recs(conns.size());
    std::vector<std::pair<int, int>> fds;
    for (size_t i = 0; i < conns.size(); ++i) {
      recs[i].set_kind(pb::Undo::UNDO_TCP_REPAIR);
      recs[i].set_reuseaddr(conns[i]->rec.opts().reuseaddr());
      fds.emplace_back(conns[i]->sk.get(), -1);
    }
    ctx.undo.add(std::move(recs), fds);
    for (SockItem* it : conns) set_int(it->sk.get(), IPPROTO_TCP, TCP_REPAIR, 1, it->who, "TCP_REPAIR");
  }
  fault_point("sockdump-repair");
  // 3. A listener that took a connection meanwhile cannot be dumped (the
  // lock stops new ones now).
  for (SockItem* it : listeners) {
    take_info(tcp_info_of(it->sk.get(), it->who), it->rec.mutable_inet()->mutable_tcp());
    std::string why = sock_unrestorable(it->rec);
    if (!why.empty()) fail(strf("unable to dump %s: %s", it->who.c_str(), why.c_str()));
  }
  for (SockItem* it : conns) {
    read_conn(*it, ctx);
    ctx.emit(*it);
  }
}

// ---- restore ------------------------------------------------------------------------

namespace {

// A TCP header without options.
std::string tcp_segment(const pb::InetAddr& from, const pb::InetAddr& to, uint32_t seq, uint32_t ack, uint8_t flags) {
  struct tcphdr h;
  std::memset(&h, 0, sizeof h);
  h.source = htons(static_cast<uint16_t>(from.port()));
  h.dest = htons(static_cast<uint16_t>(to.port()));
  h.seq = htonl(seq);
  h.ack_seq = htonl(ack);
  h.doff = sizeof h / 4;
  reinterpret_cast<uint8_t*>(&h)[13] = flags;
  h.window = htons(0xffff);
  return std::string(reinterpret_cast<char*>(&h), sizeof h);
}

constexpr uint8_t kFin = 0x01, kAck = 0x10;

// A packet sent to the socket is taken on the way out of sendto() or a
// little later (softirq): wait for its effect.
void expect_state(int fd, uint32_t want, const std::string& who, const char* after) {
  uint32_t st = 0;
  for (int tries = 0; tries < 4000 && (st = tcp_info_of(fd, who).tcpi_state) != want; ++tries) ::usleep(250);
  if (st != want)
    fail(strf("unable to restore %s: %s left it %s, not %s", who.c_str(), after, tcp_state_name(st), tcp_state_name(want)));
}

// Writes all of data with send(), in repair mode into the queue selected
// (the kernel takes a receive queue a few pages at a time).
void fill(int fd, const char* data, size_t len, const std::string& who, const char* which) {
  for (size_t off = 0; off < len;) {
    ssize_t n = ::send(fd, data + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_errno(strf("unable to refill the %s queue of %s (%zu of %zu bytes in)", which, who.c_str(), off, len));
    off += static_cast<size_t>(n);
  }
}

}  // namespace

ScopedFd tcp_open(const pb::Socket& s, const std::string& who) {
  const pb::InetSock& in = s.inet();
  const pb::TcpState& t = in.tcp();
  ScopedFd fd(::socket(s.family(), SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  if (!fd.valid()) throw_errno("unable to create " + who);
  int f = fd.get();
  restore_ip_opts(f, s, who);  // IPV6_V6ONLY, IP_FREEBIND ... before bind()
  if (!is_conn(t.state())) {
    restore_sock_opts(f, s.opts(), who);  // SO_REUSEADDR, SO_REUSEPORT before bind()
    if (in.bound()) inet_bind(f, s, who);
    restore_int_opts(f, s.family(), s.type(), kTcpOpts, sizeof kTcpOpts / sizeof kTcpOpts[0], t, who);
    restore_int_opts(f, s.family(), s.type(), kTcpOptsUnconnected, 2, t, who);
    if (t.has_congestion() && ::setsockopt(f, IPPROTO_TCP, TCP_CONGESTION, t.congestion().data(), static_cast<socklen_t>(t.congestion().size())) < 0)
      throw_errno("unable to set the congestion control of " + who + " to '" + t.congestion() + "'");
    if (t.state() == TCP_LISTEN && ::listen(f, static_cast<int>(t.backlog())) < 0) throw_errno("unable to listen on " + who);
    return fd;
  }
  const uint32_t st = t.state();
  // Where the rebuilt send queue starts: everything in it is sent and not
  // acknowledged, until the peer says otherwise.
  const uint32_t snd_una = t.snd_seq() - (our_fin(st) ? 1 : 0) - static_cast<uint32_t>(t.sendq().size());
  set_int(f, IPPROTO_TCP, TCP_REPAIR, 1, who, "TCP_REPAIR");
  // Routing goes by these: before connect().
  const pb::SockOpts& o = s.opts();
  if (!o.bindtodevice().empty() &&
      ::setsockopt(f, SOL_SOCKET, SO_BINDTODEVICE, o.bindtodevice().data(), static_cast<socklen_t>(o.bindtodevice().size())) < 0)
    throw_errno("unable to bind " + who + " to device '" + o.bindtodevice() + "'");
  if (o.mark()) set_int(f, SOL_SOCKET, SO_MARK, static_cast<int>(o.mark()), who, "SO_MARK");
  // Room for the queues while they are refilled; the sizes as recorded at
  // the end (tcp_finish).
  restore_sock_bufs(f, o, who, static_cast<uint32_t>(2 * std::max(t.sendq().size(), t.recvq().size()) + (256 << 10)));
  set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpSendQueue, who, "TCP_REPAIR_QUEUE");
  set_int(f, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(snd_una), who, "TCP_QUEUE_SEQ");
  set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpRecvQueue, who, "TCP_REPAIR_QUEUE");
  set_int(f, IPPROTO_TCP, TCP_QUEUE_SEQ,
          static_cast<int>(t.rcv_seq() - (peer_fin(st) ? 1 : 0) - static_cast<uint32_t>(t.recvq().size())), who, "TCP_QUEUE_SEQ");
  // connect() sizes the segments (mss_cache) from the MSS it knows then,
  // given as the user's MSS (which tops out at 32767: loopback's 65483
  // gets segments of 32 KiB), and cleared again after.  It is the size the
  // connection had, not the peer's MSS: the kernel also bounds it by half
  // the largest window the peer offered, and does not size it again when
  // TCP_REPAIR_WINDOW sets that window.  A sender whose segments are
  // larger than the peer's window waits for a window that never comes
  // (the zero-window probes only trickle).
  uint32_t mss = t.mss_clamp();
  if (t.snd_mss()) mss = std::min(mss, t.snd_mss() + (t.tstamp_ok() ? 12u : 0u));
  if (mss) set_int(f, IPPROTO_TCP, TCP_MAXSEG, static_cast<int>(std::min<uint32_t>(mss, 32767)), who, "TCP_MAXSEG");
  inet_bind(f, s, who);
  struct sockaddr_storage ss;
  socklen_t len = from_inet_addr(in.remote(), &ss);
  if (::connect(f, reinterpret_cast<sockaddr*>(&ss), len) < 0)
    throw_errno(strf("unable to connect %s to %s (in repair mode)", who.c_str(), inet_addr_str(in.remote()).c_str()));
  set_int(f, IPPROTO_TCP, TCP_MAXSEG, 0, who, "TCP_MAXSEG");
  struct tcp_repair_opt opts[4];
  int n = 0;
  opts[n++] = {kOptMss, t.mss_clamp()};
  if (t.wscale_ok()) opts[n++] = {kOptWindow, t.snd_wscale() | (t.rcv_wscale() << 16)};
  if (t.sack_ok()) opts[n++] = {kOptSackPerm, 0};
  if (t.tstamp_ok()) opts[n++] = {kOptTimestamp, 0};
  if (::setsockopt(f, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, static_cast<socklen_t>(n * sizeof opts[0])) < 0)
    throw_errno("unable to set the TCP options of " + who);
  if (t.tstamp_ok()) set_int(f, IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>(t.timestamp()), who, "TCP_TIMESTAMP");
  // Still selected: the receive queue.
  fill(f, t.recvq().data(), t.recvq().size(), who, "receive");
  set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpSendQueue, who, "TCP_REPAIR_QUEUE");
  // What was sent goes in as sent (what the peer did not get, the
  // retransmission timer sends again); what was not is written for real
  // once repair mode is off (tcp_finish), so that it goes as the window
  // allows, and our FIN behind it if it was not sent either.
  fill(f, t.sendq().data(), t.sendq().size() - t.unsent(), who, "send");
  const pb::InetAddr& local = in.local();
  const pb::InetAddr& remote = in.remote();
  auto shut = [&](uint32_t want) {
    if (::shutdown(f, SHUT_WR) < 0) throw_errno("unable to shut down " + who + " (in repair mode)");
    expect_state(f, want, who, "our FIN");
  };
  auto peer_fin_in = [&](uint32_t want) {
    inject(remote, local, IPPROTO_TCP, tcp_segment(remote, local, t.rcv_seq() - 1, snd_una, kFin | kAck), who);
    expect_state(f, want, who, "the peer's FIN");
  };
  switch (st) {
    case TCP_FIN_WAIT1:
      if (!t.fin_unsent()) shut(TCP_FIN_WAIT1);
      break;
    case TCP_FIN_WAIT2:
      shut(TCP_FIN_WAIT1);
      inject(remote, local, IPPROTO_TCP, tcp_segment(remote, local, t.rcv_seq(), t.snd_seq(), kAck), who);
      expect_state(f, TCP_FIN_WAIT2, who, "the ACK of our FIN");
      break;
    case TCP_CLOSE_WAIT: peer_fin_in(TCP_CLOSE_WAIT); break;
    case TCP_LAST_ACK:
      peer_fin_in(TCP_CLOSE_WAIT);
      if (!t.fin_unsent()) shut(TCP_LAST_ACK);
      break;
    case TCP_CLOSING:
      if (!t.fin_unsent()) {
        shut(TCP_FIN_WAIT1);
        peer_fin_in(TCP_CLOSING);
      }
      break;
    default: break;
  }
  // The window last: the kernel checks it against the receive queue
  // (rcv_wup must not be after rcv_nxt).  A peer's FIN that is replayed
  // only in tcp_finish (CLOSING with our FIN unsent) is not counted in
  // rcv_nxt yet, but is in the recorded rcv_wup.
  struct tcp_repair_window w = {t.snd_wl1(), t.snd_wnd(), t.max_window(), t.rcv_wnd(), t.rcv_wup()};
  set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, kTcpRecvQueue, who, "TCP_REPAIR_QUEUE");
  const uint32_t rcv_nxt = static_cast<uint32_t>(sockopt_int(f, IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ"));
  if (static_cast<int32_t>(w.rcv_wup - rcv_nxt) > 0) w.rcv_wup = rcv_nxt;
  if (::setsockopt(f, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) < 0) {
    int err = errno;
    struct tcp_repair_window now = {};
    socklen_t wl = sizeof now;
    ::getsockopt(f, IPPROTO_TCP, TCP_REPAIR_WINDOW, &now, &wl);
    LOG_ERROR("%s: %s window wl1 %u wnd %u max %u rcv_wnd %u rcv_wup %u; now wl1 %u wnd %u max %u rcv_wnd %u rcv_wup %u, rcv_seq %u",
              who.c_str(), tcp_state_name(st), w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup, now.snd_wl1, now.snd_wnd,
              now.max_window, now.rcv_wnd, now.rcv_wup, t.rcv_seq());
    throw_errno("unable to set the window of " + who, err);
  }
  restore_int_opts(f, s.family(), s.type(), kTcpOpts, sizeof kTcpOpts / sizeof kTcpOpts[0], t, who);
  if (t.has_congestion() && ::setsockopt(f, IPPROTO_TCP, TCP_CONGESTION, t.congestion().data(), static_cast<socklen_t>(t.congestion().size())) < 0)
    throw_errno("unable to set the congestion control of " + who + " to '" + t.congestion() + "'");
  restore_sock_opts(f, o, who, false);
  if ((in.shutdown() & 1) && !peer_fin(st) && ::shutdown(f, SHUT_RD) < 0) throw_errno("unable to shut down " + who + " for reading");
  return fd;
}

void tcp_finish(int fd, const pb::Socket& s, const std::string& who) {
  const pb::InetSock& in = s.inet();
  const pb::TcpState& t = in.tcp();
  if (!is_conn(t.state())) return;
  // Leaving repair mode sends a window probe (in ESTABLISHED): the peer
  // answers with where it is, and what it did not get is sent again.
  set_int(fd, IPPROTO_TCP, TCP_REPAIR, 0, who, "TCP_REPAIR");
  set_int(fd, SOL_SOCKET, SO_REUSEADDR, s.opts().reuseaddr(), who, "SO_REUSEADDR");
  const std::string& q = t.sendq();
  fill(fd, q.data() + q.size() - t.unsent(), t.unsent(), who, "send");
  if (t.fin_unsent()) {
    // Our FIN, queued behind what was just written, as it was.
    if (::shutdown(fd, SHUT_WR) < 0) throw_errno("unable to shut down " + who);
    if (t.state() == TCP_CLOSING) {
      // The peer's FIN came while ours waited: it arrives now.
      uint32_t snd_una = t.snd_seq() - 1 - static_cast<uint32_t>(q.size());
      inject(in.remote(), in.local(), IPPROTO_TCP, tcp_segment(in.remote(), in.local(), t.rcv_seq() - 1, snd_una, kFin | kAck), who);
    }
    expect_state(fd, t.state(), who, "our FIN");
  }
  restore_sock_bufs(fd, s.opts(), who);
}

}  // namespace ck
